"""Peak memory and time of predict and annotate on large grey images (2k, 8k, 20k px side).

Each case runs in its own child process (``nice -n 10``, one thread); its peak RSS is the
child's own ``ru_maxrss`` (``os.wait4``), so nothing of the parent or of other cases counts.
One JSON line per case::

  {"what": "predict" | "annotate", "side": 8000, "peak_rss_mb": ..., "seconds": ..., "rc": 0}

``predict``: ``python predict.py ckpt=<tiny model> input=<one side x side grey PNG>``. The
images are at 0.0125 um/px and the model at 0.1 (``--pixel-size``): both resample them to an
eighth of their side, so the network (the slow part on a busy CPU) sees 1/64 of the pixels
while decoding, resampling and the masks at the image's own size stay full size;
``--pixel-size 0.1`` runs every pixel through the network.
``annotate``: one round of ``python annotate.py`` on a folder with two small labelled cases and
the large image unlabelled in the pool (tiny model, 2 training steps, al.mc_samples=2, the
default hybrid strategy): pool scoring, overlays and predictions of the large image.

``--repo`` runs another checkout's entry points (e.g. a worktree of the code before), with the
same images and checkpoint. Usage::

  python benchmarks/large_image.py --sizes 2000 8000 20000 --what predict annotate
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HYDRA_FULL_ERROR": "1",
}
TINY = [
    "model=tiny",
    "logger=none",
    "trainer.steps=2",
    "trainer.finetune_steps=null",
    "trainer.max_restarts=0",
    "trainer.progress=false",
    "trainer.num_threads=1",
    "dataset.batch_size=4",
]

MAKE_IMAGE = r"""
import sys, numpy as np
from PIL import Image
side, path = int(sys.argv[1]), sys.argv[2]
y = np.arange(side, dtype=np.float32)[:, None]
out = np.empty((side, side), np.uint8)
for y0 in range(0, side, 1024):  # rings of "axons" with noise, made in bands
    yy = y[y0:y0 + 1024]
    x = np.arange(side, dtype=np.float32)[None, :]
    v = 0.5 + 0.3 * np.sin(yy / 9.0) * np.sin(x / 11.0) + 0.1 * np.sin((x + yy) / 37.0)
    noise = np.random.default_rng(y0).normal(0, 0.05, v.shape)
    out[y0:y0 + 1024] = np.clip((v + noise) * 255, 0, 255).astype(np.uint8)
Image.fromarray(out).save(path)
"""

MAKE_CKPT = r"""
import sys
from hydra import compose, initialize_config_dir
from axal.simulation import run
over = sys.argv[2:]
with initialize_config_dir(config_dir=sys.argv[1] + "/conf", version_base="1.3"):
    cfg = compose(config_name="config", overrides=over)
run(cfg, "ckpt-run")
"""


MODEL_PIXEL_SIZE = 0.1  # um/px the checkpoint was trained at


def child(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` niced with one thread; its own peak RSS (MB), seconds and exit status."""
    env = {**os.environ, **ENV}
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["nice", "-n", "10", *cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stderr = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "seconds": round(time.perf_counter() - start, 1),
        "rc": proc.returncode,
    }
    if proc.returncode:
        out["stderr_tail"] = stderr[-600:]
    return out


def image(work: Path, side: int, pixel_size: float) -> Path:
    """The side x side grey PNG, alone in its folder with its pixel size beside it."""
    path = work / "images" / f"{side}" / "image.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", MAKE_IMAGE, str(side), str(path)], check=True)
    (path.parent / "pixel_size_in_micrometer.txt").write_text(f"{pixel_size}\n")
    return path


def checkpoint(work: Path) -> Path:
    """A tiny axon+myelin model, trained for a few steps on synthetic images."""
    path = work / "ckpt-run" / "checkpoints" / "round-0.ckpt"
    if not path.is_file():
        over = ["dataset=synthetic", "task=axonmyelin", "strategy=random", "al.rounds=1"]
        over += [f"dataset.pixel_size={MODEL_PIXEL_SIZE}"]
        over += ["al.initial=2", "trainer.steps=5"]
        over += [o for o in TINY if not o.startswith("trainer.steps")]
        subprocess.run(
            [sys.executable, "-c", MAKE_CKPT, str(ROOT), *over],
            cwd=work,
            env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def annotate_folder(work: Path, side: int, pixel_size: float) -> Path:
    """Two small labelled cases and the large image unlabelled (legacy layout)."""
    import numpy as np
    from PIL import Image

    root = work / f"annotate-{side}"
    if root.exists():
        import shutil

        shutil.rmtree(root)
    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        (root / case).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(
            root / case / "image.png"
        )
        mask = np.zeros((256, 256), np.uint8)
        mask[64:192, 64:192] = 127
        mask[96:160, 96:160] = 255
        Image.fromarray(mask).save(root / case / "mask.png")
        (root / case / "pixel_size_in_micrometer.txt").write_text(f"{MODEL_PIXEL_SIZE}\n")
    (root / "big").mkdir()
    os.link(image(work, side, pixel_size), root / "big" / "image.png")
    (root / "big" / "pixel_size_in_micrometer.txt").write_text(f"{pixel_size}\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000])
    parser.add_argument("--what", nargs="+", default=["predict", "annotate"])
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose code runs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/axal-large-image"))
    parser.add_argument("--label", default=None, help="tag of the JSON lines (e.g. before)")
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=0.0125,
        help="um/px of the large images (the model's is 0.1: 0.0125 shrinks them 8x to model "
        "scale, 1/64 of the network's work, while reading, resampling and writing stay full "
        "size)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(args.work)
    label = args.label or ("after" if args.repo.resolve() == ROOT else str(args.repo))
    for side in args.sizes:
        for what in args.what:
            if what == "predict":
                out = args.work / f"predict-{side}"
                source = image(args.work, side, args.pixel_size)
                cmd = [sys.executable, "predict.py", f"ckpt={ckpt}", f"input={source}"]
                cmd += [f"out={out}", "trainer.num_threads=1"]
            else:
                root = annotate_folder(args.work, side, args.pixel_size)
                cmd = [sys.executable, "annotate.py", f"dataset.root={root}", "k=1"]
                cmd += ["al.initial=2", "al.mc_samples=2", f"dataset.pixel_size={MODEL_PIXEL_SIZE}"]
                cmd += TINY
            result = child(cmd, args.repo)
            line = {"what": what, "side": side, "pixel_size": args.pixel_size, "code": label}
            line.update(result)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
