"""One copy of every console line, and none that advertises or warns about others' internals.

Lightning adds its own stream handler to ``lightning.pytorch`` and also propagates to the root
logger that Hydra configures, so each INFO line printed twice; its "Tip" lines advertise other
products; and a few deprecation warnings come from inside the libraries, not from axal.
"""

from __future__ import annotations

import logging
import warnings

QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*The anonymous setting has no effect.*",
)


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg) and "litlogger" not in str(record.msg)


def quiet_console() -> None:
    """Drop Lightning's second handler, its tips, and known third-party deprecation warnings."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                logger.removeHandler(handler)
        logger.propagate = True
        logger.addFilter(_NoAdverts())
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NoAdverts())
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
