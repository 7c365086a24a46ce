"""predict: a checkpoint -> AxonDeepSeg masks for any images, with clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from axal.checkpoint import CheckpointError, load_model
from axal.predict import find_images, predict
from axal.simulation import run
from tests.conftest import FAST, ROOT, compose_cfg

ADS_VALUES = {"axonmyelin": {0, 127, 255}, "axon": {0, 255}, "myelin": {0, 255}}


@pytest.fixture(scope="module")
def sim_ckpt(tmp_path_factory):
    """A checkpoint written by a simulation (synthetic images at 0.1 um/px, task=myelin)."""
    folder = tmp_path_factory.mktemp("sim")
    cfg = compose_cfg(FAST + ["strategy=random", "al.rounds=1", "dataset.pixel_size=0.1"])
    run(cfg, folder)
    return folder / "checkpoints" / "round-0.ckpt"


def _image(path, shape, pixel_size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    if pixel_size is not None:
        (path.parent / "pixel_size_in_micrometer.txt").write_text(f"{pixel_size}\n")


def test_checkpoints_carry_what_predictions_need(sim_ckpt):
    model, meta = load_model(sim_ckpt)
    assert meta["task"] == "myelin" and meta["classes"] == ["background", "myelin"]
    assert meta["pixel_size"] == 0.1 and meta["patch_size"] == 64 and meta["infer_size"] == 128
    assert meta["net"]["_target_"] == "axal.networks.SmpUNet" and not model.training


def test_predict_writes_masks_at_each_images_own_size(sim_ckpt, tmp_path):
    _image(tmp_path / "fine" / "image.png", (96, 96), pixel_size=0.05)  # the model sees 48 px
    _image(tmp_path / "plain" / "image.png", (70, 90))  # pixel size unknown: an error
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "image.png").write_bytes(b"not a png")
    done = predict(sim_ckpt, tmp_path, mc_samples=2)
    plain = str(tmp_path / "plain" / "image.png")
    assert set(done.failed) == {str(tmp_path / "broken" / "image.png"), plain}
    assert (
        "pixel_size=" in done.failed[plain]
        and not (tmp_path / "plain" / "image_seg-axon.png").exists()
    )
    assert (
        str(tmp_path / "broken" / "image.png")
        in done.failed[str(tmp_path / "broken" / "image.png")]
    )
    (tmp_path / "broken" / "image.png").unlink()
    done = predict(sim_ckpt, tmp_path / "plain", mc_samples=2, pixel_size=0.1)  # given: used
    assert not done.failed
    for case, size in (("fine", (96, 96)), ("plain", (90, 70))):
        # a task=myelin model writes only its myelin mask, never an all-zero _seg-axon.png
        assert not (tmp_path / case / "image_seg-axon.png").exists()
        assert not (tmp_path / case / "image_seg-axonmyelin.png").exists()
        for kind, allowed in (("myelin", ADS_VALUES["myelin"]),):
            with Image.open(tmp_path / case / f"image_seg-{kind}.png") as im:
                assert im.mode == "L" and im.size == size
                assert set(np.unique(np.asarray(im)).tolist()) <= allowed
        with Image.open(tmp_path / case / "image_uncertainty.png") as im:
            assert im.size == size
    # out=<dir> mirrors the input's folders; a single file works too
    out = predict(sim_ckpt, tmp_path / "plain" / "image.png", out=tmp_path / "out", pixel_size=0.1)
    assert [p.split("/")[-1] for p in out.written[str(tmp_path / "plain" / "image.png")]] == [
        "image_seg-myelin.png",
    ]


def test_find_images_never_takes_masks_or_predictions(tmp_path):
    for name in ("a.png", "a_seg-axonmyelin.png", "a_uncertainty.png", "mask.png", "b.tif"):
        _image(tmp_path / "flat" / name, (8, 8))
    images, base = find_images(tmp_path / "flat")
    assert [p.name for p in images] == ["a.png", "b.tif"] and base == tmp_path / "flat"
    _image(tmp_path / "bids" / "sub-01" / "micr" / "sub-01_sample-1_TEM.png", (8, 8))
    _image(tmp_path / "bids" / "sub-01" / "micr" / "sub-01_sample-1_TEM_seg-axon.png", (8, 8))
    images, _ = find_images(tmp_path / "bids")
    assert [p.name for p in images] == ["sub-01_sample-1_TEM.png"]


def test_predict_refuses_another_task_and_foreign_files(sim_ckpt, tmp_path):
    _image(tmp_path / "x.png", (32, 32))
    with pytest.raises(
        CheckpointError, match=r"trained for task=myelin .*asks for task=axonmyelin"
    ):
        predict(sim_ckpt, tmp_path / "x.png", task="axonmyelin")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not an axal model checkpoint"):
        predict(tmp_path / "other.ckpt", tmp_path / "x.png")
    ckpt = torch.load(sim_ckpt, map_location="cpu")
    ckpt["axal"] = {**ckpt["axal"], "net": {"_target_": "os.system", "command": "true"}}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="'os.system', not an axal class"):
        predict(tmp_path / "evil.ckpt", tmp_path / "x.png")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*text.ckpt"):
        predict(tmp_path / "text.ckpt", tmp_path / "x.png")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        predict(tmp_path / "none.ckpt", tmp_path / "x.png")


def test_the_cli_predicts_the_readable_images_and_names_the_other(sim_ckpt, tmp_path):
    _image(tmp_path / "good.png", (40, 50))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "predict.py"),
            f"ckpt={sim_ckpt}",
            f"input={tmp_path}",
            "pixel_size=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1 and str(tmp_path / "bad.png") in output
    with Image.open(tmp_path / "good_seg-myelin.png") as im:
        assert im.size == (50, 40)


def test_uncertainty_maps_in_a_bids_folder_are_never_inputs(sim_ckpt, tmp_path):
    """predict mc_samples=2 writes *_uncertainty.png beside BIDS images; the next annotate's
    pool holds only the images, and a second predict writes no _uncertainty_uncertainty."""
    from tests.test_annotate import annotate, annotate_cfg

    root = tmp_path / "bids"
    stems = [f"sub-{j:02d}_sample-1_TEM" for j in range(3)]
    for stem in stems:
        micr = root / stem.split("_")[0] / "micr"
        _image(micr / f"{stem}.png", (48, 48))
        (micr / f"{stem}.json").write_text('{"PixelSize": [0.1, 0.1], "PixelSizeUnits": "um"}')
    labels = root / "derivatives" / "labels" / "sub-00" / "micr"
    labels.mkdir(parents=True)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 10:20], mask[12:18, 12:18] = 127, 255
    Image.fromarray(mask).save(labels / f"{stems[0]}_seg-axonmyelin-manual.png")
    predict(sim_ckpt, root, mc_samples=2)
    maps = sorted(p.name for p in root.rglob("*_uncertainty.png"))
    assert maps == [f"{s}_uncertainty.png" for s in stems]
    overrides = ("al.initial=1", "trainer.steps=2", "dataset.patch_size=32", "k=1")
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert set(r0["scores"]) == set(stems[1:])
    written = predict(sim_ckpt, root, mc_samples=2).written
    assert sorted(written) == sorted(
        str(root / s.split("_")[0] / "micr" / f"{s}.png") for s in stems
    )
    assert not list(root.rglob("*_uncertainty_uncertainty.png"))


def test_predict_shows_progress_per_image_and_per_sample(sim_ckpt, tmp_path):
    _image(tmp_path / "a.png", (64, 64))
    _image(tmp_path / "b.png", (64, 64))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "predict.py"),
            f"ckpt={sim_ckpt}",
            f"input={tmp_path}",
            "mc_samples=3",
            "pixel_size=0.1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "predict: 100%" in done.stderr and "2/2" in done.stderr
    assert "MC samples x tiles" in done.stderr
