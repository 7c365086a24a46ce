"""axal: deep active learning for axon-myelin segmentation of electron-microscopy images."""

import os as _os

# albumentations 2.x asks PyPI for a newer version when it is imported ("Error fetching version
# info" offline). A run must not touch the network unless it downloads data or logs to W&B
# online, so opt out before any axal module imports it (a user's own setting wins).
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# OpenMP threads must sleep, not spin, when they wait: spinning collapses a run on a busy machine.
# OpenMP reads this once, when torch loads, so it is set here, before any axal module imports it.
from axal.threads import quiet_openmp as _quiet_openmp  # noqa: E402

_quiet_openmp()
