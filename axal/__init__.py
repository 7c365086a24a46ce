"""axal: deep active learning for axon-myelin segmentation of electron-microscopy images."""

import os as _os

# albumentations 2.x asks PyPI for a newer version when it is imported ("Error fetching version
# info" offline). A run must not touch the network unless it downloads data or logs to W&B
# online, so opt out before any axal module imports it (a user's own setting wins).
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
