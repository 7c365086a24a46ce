"""The domain's words, in one place: the classes of a mask, the tasks, and annotation units.

A class mask holds 0 (background), 1 (myelin) and 2 (axon); AxonDeepSeg's files hold the same
classes as 0 / 127 / 255 (:mod:`axal.adsfiles`). A task says which classes a model learns. A
unit is what an annotator labels in one go: a whole image (its id is the image id) or a tile of
one, whose id is ``"<image id>@x,y,w,h"`` (:func:`format_unit_id`, :func:`parse_unit_id`).

The name of a semi-supervised arm is here too (:func:`semi_suffix`): runs label themselves with
it, and the report tells the arms of older runs apart by it.

This module imports nothing: data readers, pools and the report all use it.
"""

from __future__ import annotations

BACKGROUND, MYELIN, AXON = 0, 1, 2  # class indices of a class mask
CLASS_NAMES = ("background", "myelin", "axon")  # by class index
TASKS = {"myelin": 2, "axonmyelin": 3}  # task -> number of classes the model predicts
UNIT_KINDS = ("image", "tile")  # what al.unit may be
# the kinds of an AxonDeepSeg mask file, <stem>_seg-<kind>.png (axal.adsfiles)
SEG_KINDS = ("axonmyelin", "axon", "myelin")


def format_unit_id(image: str, box: tuple[int, int, int, int] | None = None) -> str:
    """The id of a unit: the image id for a whole image, ``image@x,y,w,h`` for a tile."""
    if box is None:
        return image
    x, y, w, h = box
    return f"{image}@{x},{y},{w},{h}"


def parse_unit_id(unit: str) -> tuple[str, tuple[int, int, int, int] | None]:
    """(image id, box) of a unit id; the box is None when the id names a whole image."""
    image, sep, box = unit.rpartition("@")
    if sep:
        try:
            x, y, w, h = (int(v) for v in box.split(","))
        except ValueError:
            return unit, None
        return image, (x, y, w, h)
    return unit, None


def unit_image(unit: str) -> str:
    """The image id of a unit id (a tile's image, or the image itself)."""
    return parse_unit_id(unit)[0]


def semi_suffix(semi: object) -> str:
    """What ``trainer.semi`` (its resolved mapping, or a method name) adds to an arm's name:
    ``""`` for supervised training, ``"+mean_teacher"``, or ``"+mean_teacher_from_round2"``
    for a mean teacher that joins at round 2 (``trainer.semi.from_round``)."""
    if isinstance(semi, dict):
        name, start = semi.get("name") or "none", semi.get("from_round") or 0
    else:
        name, start = semi or "none", 0
    if str(name) == "none":
        return ""
    return f"+{name}" + (f"_from_round{start}" if start else "")
