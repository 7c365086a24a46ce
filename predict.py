"""Segment images with a trained model: ``python predict.py ckpt=<file> input=<image or folder>``.

Writes AxonDeepSeg's ``<stem>_seg-axonmyelin.png`` (0 / 127 / 255), ``<stem>_seg-axon.png`` and
``<stem>_seg-myelin.png`` (0 / 255) at each image's own size, and with ``mc_samples=T`` an
uncertainty map. An image that cannot be read is named and skipped; the exit status is then 1.
See axal/predict.py.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("axal")


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from axal.checkpoint import CheckpointError
    from axal.console import quiet_console
    from axal.data import DataError
    from axal.predict import predict

    quiet_console()  # one copy of each line, no third-party deprecation warnings (as run.py)

    if cfg.trainer.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda")
    try:
        done = predict(
            cfg.ckpt,
            cfg.input,
            out=cfg.out,
            mc_samples=int(cfg.mc_samples),
            task=cfg.task,
            pixel_size=cfg.pixel_size,
            seed=int(cfg.seed),
            morphometrics=bool(cfg.get("morphometrics", False)),
            device="cuda" if gpu else "cpu",
        )
    except (DataError, CheckpointError, ValueError, OSError) as err:  # one paragraph
        from axal import errors

        if errors.full_error():
            raise
        errors.report(err, log)
        sys.exit(1)
    log.info("predicted %d images", len(done.written))
    if done.failed:
        log.error("%d images failed: %s", len(done.failed), ", ".join(done.failed))
        sys.exit(1)


if __name__ == "__main__":
    from axal.errors import quote_spaces

    sys.argv[1:] = quote_spaces(sys.argv[1:])
    main()
