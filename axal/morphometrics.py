"""Fibers and AxonDeepSeg's morphometrics from a 0/127/255 mask, and the effort of correcting one.

A lab reports g-ratio, axon diameter, myelin thickness, axon density and myelin volume fraction,
not Dice. This module follows AxonDeepSeg's definitions (``AxonDeepSeg/morphometrics/
compute_morphometrics.py``: ``get_axon_morphometrics`` and ``get_aggregate_morphometrics``, with
``axon_shape="circle"``) so that a lab gets the same numbers from axal as from AxonDeepSeg:

- a fiber is one connected axon object plus the myelin assigned to it (AxonDeepSeg floods the
  axon+myelin mask from the axon centroids by watershed; here each myelin pixel goes to the
  nearest axon of its connected axon+myelin component, which is what that flood converges to);
- ``axon_diam`` and the fiber's diameter are equivalent diameters ``sqrt(4 area / pi)``;
  ``myelin_thickness = (fiber_diam - axon_diam) / 2``;
  ``gratio = (axon_diam / 2) / (axon_diam / 2 + myelin_thickness)``;
- ``image_border_touching``: the fiber's bounding box touches the image border;
- per image: ``avf``/``mvf`` (axon/myelin pixel fractions), aggregate g-ratio
  ``sqrt(1 / (1 + mvf / avf))``, ``axon_density_mm2`` (axons per mm² of image).

Only numpy and scipy.ndimage are used. Run ``python -m axal.morphometrics MASK --pixel-size P
--out CSV`` on any existing mask.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

MYELIN, AXON = 127, 255
IOU_MATCH = 0.5  # a predicted fiber is the same fiber as a true one from this IoU on
IOU_GOOD = 0.8  # a matched fiber from this IoU on needs only a check, below it a fix

# AxonDeepSeg's per-fiber column names (its ``params.column_names_ordered``, with units)
FIBER_COLUMNS = (
    "x0 (px)",
    "y0 (px)",
    "gratio",
    "axon_area (um^2)",
    "myelin_area (um^2)",
    "axon_diam (um)",
    "myelin_thickness (um)",
    "axonmyelin_area (um^2)",
    "fiber_diam (um)",
    "image_border_touching",
)
AGGREGATE_COLUMNS = (
    "avf",
    "mvf",
    "gratio_aggr",
    "mean_axon_diam",
    "mean_myelin_diam",
    "mean_myelin_thickness",
    "axon_density_mm2",
    "fiber_count",
    "mean_gratio",
)


def classes_of(mask: np.ndarray) -> np.ndarray:
    """Class indices (0 background, 1 myelin, 2 axon) of a 0/127/255 or 0/1/2 mask."""
    mask = np.asarray(mask)
    if mask.max(initial=0) > 2:
        return np.select([mask >= 191, mask >= 64], [2, 1], 0).astype(np.uint8)
    return mask.astype(np.uint8)


def fibers(mask: np.ndarray) -> np.ndarray:
    """Instance labels (H, W): 0 background, k > 0 the k-th fiber (axon plus its myelin).

    Myelin that no axon of its connected component claims stays 0: it is no myelinated fiber.
    """
    cls = classes_of(mask)
    axons, n = ndi.label(cls == 2)
    if n == 0:
        return axons
    tissue, _ = ndi.label(cls > 0)
    # nearest axon pixel of every pixel; kept only where it lies in the same tissue component
    _, (iy, ix) = ndi.distance_transform_edt(axons == 0, return_indices=True)
    nearest = axons[iy, ix]
    same = tissue[iy, ix] == tissue
    return np.where((cls > 0) & same, nearest, 0).astype(np.int32)


def fiber_table(mask: np.ndarray, pixel_size: float) -> list[dict[str, Any]]:
    """One row per fiber with AxonDeepSeg's columns (µm, µm²), in label order."""
    cls = classes_of(mask)
    labels = fibers(cls)
    n = int(labels.max(initial=0))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    axon_px = ndi.sum(cls == 2, labels, index)
    fiber_px = ndi.sum(labels > 0, labels, index)
    centres = ndi.center_of_mass(cls == 2, labels, index)
    boxes = ndi.find_objects(labels)
    h, w = cls.shape
    rows = []
    for k in range(n):
        a_d = math.sqrt(4 * axon_px[k] / math.pi) * pixel_size
        f_d = math.sqrt(4 * fiber_px[k] / math.pi) * pixel_size
        thick = (f_d - a_d) / 2
        box = boxes[k]
        border = box[0].start == 0 or box[1].start == 0 or box[0].stop == h or box[1].stop == w
        rows.append(
            {
                "x0 (px)": float(centres[k][1]),
                "y0 (px)": float(centres[k][0]),
                "gratio": (a_d / 2) / (a_d / 2 + thick) if f_d > 0 else math.nan,
                "axon_area (um^2)": float(axon_px[k]) * pixel_size**2,
                "myelin_area (um^2)": float(fiber_px[k] - axon_px[k]) * pixel_size**2,
                "axon_diam (um)": a_d,
                "myelin_thickness (um)": thick,
                "axonmyelin_area (um^2)": float(fiber_px[k]) * pixel_size**2,
                "fiber_diam (um)": f_d,
                "image_border_touching": bool(border),
            }
        )
    return rows


def aggregate(mask: np.ndarray, pixel_size: float, rows: list[dict] | None = None) -> dict:
    """AxonDeepSeg's aggregate morphometrics of one image (``get_aggregate_morphometrics``)."""
    cls = classes_of(mask)
    rows = fiber_table(cls, pixel_size) if rows is None else rows
    avf = float(np.count_nonzero(cls == 2)) / cls.size
    mvf = float(np.count_nonzero(cls == 1)) / cls.size
    g = math.sqrt(1 / (1 + mvf / avf)) if avf > 0 else math.nan
    diam = float(np.mean([r["axon_diam (um)"] for r in rows])) if rows else math.nan
    gratios = [r["gratio"] for r in rows if not math.isnan(r["gratio"])]
    area_mm2 = cls.size * pixel_size**2 / 1e6
    return {
        "avf": avf,
        "mvf": mvf,
        "gratio_aggr": g,
        "mean_axon_diam": diam,
        "mean_myelin_diam": diam / g if rows and g > 0 else math.nan,
        "mean_myelin_thickness": (diam / g - diam) / 2 if rows and g > 0 else math.nan,
        "axon_density_mm2": len(rows) / area_mm2,
        "fiber_count": len(rows),
        "mean_gratio": float(np.mean(gratios)) if gratios else math.nan,
    }


@dataclass
class Match:
    """Predicted ↔ true fibers paired one to one by IoU >= ``IOU_MATCH`` (greedy, best first)."""

    pairs: list[tuple[int, int, float]]  # (true label, predicted label, IoU)
    n_true: int
    n_pred: int

    @property
    def missed(self) -> int:
        return self.n_true - len(self.pairs)

    @property
    def spurious(self) -> int:
        return self.n_pred - len(self.pairs)

    @property
    def f1(self) -> float:
        tot = self.n_true + self.n_pred
        return 2 * len(self.pairs) / tot if tot else 1.0


def match(true_labels: np.ndarray, pred_labels: np.ndarray, threshold: float = IOU_MATCH) -> Match:
    """Pair fibers of two instance label maps by IoU (>= 0.5 makes a pairing unique)."""
    nt, npd = int(true_labels.max(initial=0)), int(pred_labels.max(initial=0))
    if nt == 0 or npd == 0:
        return Match([], nt, npd)
    both = (true_labels > 0) & (pred_labels > 0)
    inter = np.zeros((nt + 1, npd + 1), np.int64)
    np.add.at(inter, (true_labels[both], pred_labels[both]), 1)
    at = np.bincount(true_labels.ravel(), minlength=nt + 1)
    ap = np.bincount(pred_labels.ravel(), minlength=npd + 1)
    iou = inter / np.maximum(at[:, None] + ap[None, :] - inter, 1)
    iou[0, :] = iou[:, 0] = 0
    pairs, used_t, used_p = [], set(), set()
    for t, p in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
        if iou[t, p] < threshold:
            break
        if t in used_t or p in used_p:
            continue
        used_t.add(t), used_p.add(p)
        pairs.append((int(t), int(p), float(iou[t, p])))
    return Match(pairs, nt, npd)


def compare(pred: np.ndarray, truth: np.ndarray, pixel_size: float) -> dict[str, float]:
    """Fiber precision/recall/F1 and the errors of matched fibers and of the image's means."""
    pl, tl = fibers(pred), fibers(truth)
    m = match(tl, pl)
    pt, tt = fiber_table(pred, pixel_size), fiber_table(truth, pixel_size)
    pa, ta = aggregate(pred, pixel_size, pt), aggregate(truth, pixel_size, tt)
    g_err = [abs(pt[p - 1]["gratio"] - tt[t - 1]["gratio"]) for t, p, _ in m.pairs]
    d_err = [abs(pt[p - 1]["axon_diam (um)"] - tt[t - 1]["axon_diam (um)"]) for t, p, _ in m.pairs]
    return {
        "fiber_precision": len(m.pairs) / m.n_pred if m.n_pred else 1.0,
        "fiber_recall": len(m.pairs) / m.n_true if m.n_true else 1.0,
        "fiber_f1": m.f1,
        "matched_gratio_error": float(np.nanmean(g_err)) if g_err else math.nan,
        "matched_axon_diam_error": float(np.mean(d_err)) if d_err else math.nan,
        "gratio_pred": pa["mean_gratio"],
        "gratio_true": ta["mean_gratio"],
        "gratio_error": abs(pa["mean_gratio"] - ta["mean_gratio"]),
        "axon_diam_pred": pa["mean_axon_diam"],
        "axon_diam_true": ta["mean_axon_diam"],
        "axon_diam_error": abs(pa["mean_axon_diam"] - ta["mean_axon_diam"]),
        "density_pred": pa["axon_density_mm2"],
        "density_true": ta["axon_density_mm2"],
        "density_error": abs(pa["axon_density_mm2"] - ta["axon_density_mm2"]),
        "n_matched": len(m.pairs),
        "n_pred": m.n_pred,
        "n_true": m.n_true,
    }


def fiber_summary(per_image: list[dict[str, float]]) -> dict[str, float | None]:
    """Test-set figures from per-image ``compare`` results: fiber precision/recall/F1 from
    counts summed over images (micro, as Dice), the other figures as means over images and the
    errors as absolute differences of those means (what a lab's reported mean would be off by)."""

    def mean(key: str) -> float | None:
        vals = [f[key] for f in per_image if f[key] == f[key]]
        return float(np.mean(vals)) if vals else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else abs(a - b)

    matched = sum(f["n_matched"] for f in per_image)
    n_pred = sum(f["n_pred"] for f in per_image)
    n_true = sum(f["n_true"] for f in per_image)
    out = {
        "fiber_precision": matched / n_pred if n_pred else None,
        "fiber_recall": matched / n_true if n_true else None,
        "fiber_f1": 2 * matched / (n_pred + n_true) if n_pred + n_true else None,
        "matched_gratio_error": mean("matched_gratio_error"),
    }
    for name in ("gratio", "axon_diam", "density"):
        out[f"{name}_pred"], out[f"{name}_true"] = mean(f"{name}_pred"), mean(f"{name}_true")
        out[f"{name}_error"] = diff(out[f"{name}_pred"], out[f"{name}_true"])
    return out


@dataclass(frozen=True)
class CostModel:
    """Annotator seconds to correct a predicted mask (``al.cost.*``).

    Defaults: CEREALS (Mackowiak et al., BMVC 2018, arXiv 1810.09726) measured that clicking a
    polygon around one object takes about 1 s per vertex and a person needs ~3 s to inspect a
    region before acting; the COCO/PASCAL studies it builds on (Papadopoulos et al. ICCV 2017;
    Bearman et al. ECCV 2016) give ~1-3 s to verify an object and tens of seconds to draw one.
    Cellpose 2.0 (Pachitariu & Stringer, Nat. Methods 2022) reports ~1-2 h for ~100-600 ROI
    corrections, i.e. ~10-40 s per corrected ROI. A fiber is two contours (axon and myelin), so:
    overhead 3 s per unit, check 1.5 s, fix 15 s, draw 30 s (two ~15-vertex polygons), delete 2 s.
    """

    overhead: float = 3.0
    check: float = 1.5
    fix: float = 15.0
    draw: float = 30.0
    delete: float = 2.0


def correction_effort(
    pred: np.ndarray, truth: np.ndarray, cost: CostModel | None = None, good_iou: float = IOU_GOOD
) -> dict[str, float]:
    """What correcting ``pred`` into ``truth`` (both of one unit) takes, and drawing from scratch.

    True fibers matched with IoU >= ``good_iou`` need a check, matched below it a fix; unmatched
    true fibers are drawn, unmatched predicted ones deleted. A merged pair counts the
    dominant true fiber as fixed (checked at IoU >= ``good_iou``) and the other as drawn; when
    the merge overlaps neither by IoU 0.5 it is deleted and both are drawn.
    """
    cost = cost or CostModel()
    pred_c, true_c = classes_of(pred), classes_of(truth)
    m = match(fibers(true_c), fibers(pred_c))
    checked = sum(1 for _, _, iou in m.pairs if iou >= good_iou)
    fixed = len(m.pairs) - checked
    drawn, deleted = m.missed, m.spurious
    return {
        "changed_pixels": int(np.count_nonzero(pred_c != true_c)),
        "fibers_checked": checked,
        "fibers_fixed": fixed,
        "fibers_drawn": drawn,
        "fibers_deleted": deleted,
        "correction_seconds": cost.overhead
        + cost.check * checked
        + cost.fix * fixed
        + cost.draw * drawn
        + cost.delete * deleted,
        "scratch_seconds": cost.overhead + cost.draw * m.n_true,
    }


def write_csv(path: Path, rows: list[dict], agg: dict, image: str = "") -> None:
    """Per-fiber CSV (AxonDeepSeg's columns) and ``<stem>_aggregate.csv`` with one row."""
    from axal.atomic import atomic_write

    def render(fields, items) -> str:
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        return buf.getvalue()

    path = Path(path)
    atomic_write(path, render(FIBER_COLUMNS, rows))
    agg_path = path.with_name(path.stem + "_aggregate.csv")
    atomic_write(agg_path, render(("image",) + AGGREGATE_COLUMNS, [{"image": image, **agg}]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m axal.morphometrics",
        description="AxonDeepSeg morphometrics of a 0/127/255 axon+myelin mask.",
    )
    parser.add_argument("mask", type=Path)
    parser.add_argument("--pixel-size", type=float, required=True, help="micrometres per pixel")
    parser.add_argument("--out", type=Path, required=True, help="per-fiber CSV to write")
    args = parser.parse_args(argv)
    from PIL import Image

    if not args.mask.is_file():
        print(f"error: no mask file {args.mask}", file=sys.stderr)
        return 2
    if not args.pixel_size > 0:
        print(
            f"error: --pixel-size must be > 0 micrometres, got {args.pixel_size}", file=sys.stderr
        )
        return 2
    mask = np.asarray(Image.open(args.mask).convert("L"))
    if not np.any(mask >= 191):
        print(
            f"error: {args.mask} has no axon pixels (255): morphometrics need an axon+myelin "
            "mask, not a myelin-only one",
            file=sys.stderr,
        )
        return 2
    rows = fiber_table(mask, args.pixel_size)
    agg = aggregate(mask, args.pixel_size, rows)
    write_csv(args.out, rows, agg, image=args.mask.name)
    print(
        f"{args.mask.name}: {agg['fiber_count']} fibers, mean axon diameter "
        f"{agg['mean_axon_diam']:.3f} um, mean g-ratio {agg['mean_gratio']:.3f}, aggregate g-ratio "
        f"{agg['gratio_aggr']:.3f}, {agg['axon_density_mm2']:.0f} axons/mm2 -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
