"""Annotate your own images: ``python annotate.py dataset.root=<folder> k=4``.

Each run is one round of active learning on the folder: it trains on the images that have
masks (or fine-tunes the last round's model), suggests the ``k`` images or regions to
annotate next, and writes predicted masks (AxonDeepSeg's names and values) to start from.
Add masks for the suggestions and run the same command again. See axal/annotate.py.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("axal")


@hydra.main(version_base="1.3", config_path="conf", config_name="annotate")
def main(cfg: DictConfig) -> None:
    from axal import errors
    from axal.annotate import annotate
    from axal.checkpoint import CheckpointError
    from axal.console import quiet_console
    from axal.interrupt import Interrupted, stop_on_signals

    stop_on_signals()  # SIGTERM (SLURM, timeout) stops a round as Ctrl-C does
    quiet_console()  # one copy of each line, no advertisements (as run.py)
    try:
        annotate(cfg)
    except (errors.AxalError, CheckpointError, OSError) as err:  # one paragraph, as run.py
        if errors.full_error():
            raise
        errors.report(err, log)
        sys.exit(1)
    except Interrupted as err:
        log.error(
            "stopped by %s; run the same command again: the round continues from its last "
            "checkpoint (trainer.checkpoint_every steps)",
            err,
        )
        sys.exit(err.code)


if __name__ == "__main__":
    from axal.errors import quote_spaces

    sys.argv[1:] = quote_spaces(sys.argv[1:])
    main()
