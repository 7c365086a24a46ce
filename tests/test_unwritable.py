"""Unwritable folders and full disks: one paragraph naming the folder or file, nothing lost."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import lightning as L
import pytest
import torch

from axal import errors
from axal.atomic import atomic_write_json
from axal.checkpoint import save_checkpoint
from axal.pngstream import GreyPngWriter
from tests.conftest import ROOT
from tests.test_annotate import synthetic_folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_an_unwritable_work_folder_is_one_paragraph_naming_it(tmp_path):
    """Hydra creates the run folder before axal's code runs: its callback checks it first."""
    synthetic_folder(tmp_path / "lab", n=2, labelled=2)
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "axal"
    done = _cli("annotate.py", f"dataset.root={tmp_path / 'lab'}", f"annotate.out={out}")
    text = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in text, text[-2000:]
    assert f"{out}" in text and "annotate.out=" in text
    run_dir = tmp_path / "file" / "run"
    done = _cli("run.py", "experiment=smoke", f"hydra.run.dir={run_dir}")
    text = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in text, text[-2000:]
    assert f"{run_dir}" in text and "hydra.run.dir=" in text


class _DiskFills:
    """A file object whose disk fills halfway through a write (errno ENOSPC)."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_full_disk_keeps_the_previous_results_json(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"rounds": [1, 2], "finished": True})
    real = __import__("os").fdopen
    monkeypatch.setattr("axal.atomic.os.fdopen", lambda *a, **k: _DiskFills(real(*a, **k)))
    with pytest.raises(OSError) as caught:
        atomic_write_json(path, {"rounds": [1, 2, 3], "finished": False})
    assert json.loads(path.read_text()) == {"rounds": [1, 2], "finished": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no half temp file left
    text = errors.paragraph(caught.value)
    assert any(str(path) in word for word in text.split())  # whole, on one line
    flat = " ".join(text.split())
    assert "No space left" in flat and "previous file is kept" in flat


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_full_disk_never_leaves_a_truncated_checkpoint(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 2)))
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(_Tiny(), data)
    path = tmp_path / "round-0.ckpt"
    save_checkpoint(trainer, path)
    good = path.read_bytes()
    real = trainer.save_checkpoint

    def fills_midway(target, *args, **kwargs):  # the real write, then the disk is full
        real(target, *args, **kwargs)
        data = open(target, "rb").read()
        open(target, "wb").write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer.save_checkpoint = fills_midway
    with pytest.raises(OSError) as caught:
        save_checkpoint(trainer, path)
    assert path.read_bytes() == good  # the previous checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["round-0.ckpt"]
    text = " ".join(errors.paragraph(caught.value).split())
    assert str(path) in text and "No space left" in text and "previous file is kept" in text


def test_a_full_disk_while_streaming_a_mask_keeps_the_old_mask(tmp_path):
    path = tmp_path / "image_seg-axonmyelin.png"
    path.write_bytes(b"old mask")
    writer = GreyPngWriter(path, 4, 3)
    writer.file = _DiskFills(writer.file)
    with pytest.raises(OSError, match="No space left") as caught:
        with writer:
            writer.write(torch.zeros(4, 3, dtype=torch.uint8).numpy())
    assert path.read_bytes() == b"old mask"
    assert str(path) in str(caught.value) and "previous file is kept" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
