"""Real annotation: the active-learning loop on a lab's own images, one round per run.

``python annotate.py dataset.root=<folder>`` reads a folder (AxonDeepSeg's legacy layout or
BIDS) in which some images have masks, trains on them (round 0 from scratch for
``trainer.steps``; later rounds fine-tune the previous model for ``trainer.finetune_steps``, or
retrain with ``al.reinit=true``), scores every image without a mask (or every unlabelled tile)
with the strategy, and suggests ``k`` to annotate next, with a predicted mask for every image
not yet labelled. The round is the simulation's own (:func:`axal.rounds.active_round`): only
where labels come from (mask files, not hidden ground truth) and what comes out differ.

The work folder (``annotate.out``, default ``<root>/axal``) keeps the state between runs::

    rounds.json          every round: labelled units, mask digests, checkpoint, seed, the
                         scores of every pool unit, the suggestions they chose, and the
                         machine and libraries that trained it
    checkpoints/round-<k>.ckpt
    suggestions.csv      the latest suggestions: rank, image, x, y, width, height, score, strategy
    overlays/            one PNG per suggestion: the image, its uncertainty, the box
    maps/                image | prediction | uncertainty of each suggested image
    uncertainty/         the uncertainty map of each suggested image (.npy, model pixels)
    predictions/         AxonDeepSeg masks of every image not wholly labelled (input's folders)
    annotate.html        the page that shows all of it

Rerunning continues: masks that are new or changed since the last round (by content) start a
new round; without any, the last suggestions stand (``annotate.force=true`` trains anyway). A
suggestion left unlabelled stays in the pool, and a mask that disappeared returns its image to
the pool.

Tiles (``al.unit=tile``): a suggestion is a box. The annotator saves a mask of the whole image
(corrected at least inside the box), but only the boxes suggested for that image count as
labelled; the rest of the image stays in the pool and out of the loss. A mask added for an
image that was never suggested counts whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from axal.adsfiles import (
    MaskWriter,
    file_hash,
    image_stem,
    kept_paths,
    ledger_key,
    manual_masks,
    mask_target,
)
from axal.atomic import atomic_write, atomic_write_json
from axal.checkpoint import CheckpointError
from axal.data import DataError, Sample, load_dataset, resample
from axal.domain import unit_image
from axal.environment import environment
from axal.errors import override
from axal.midround import partial_path
from axal.overlays import save_overlay_png
from axal.pools import ActiveDataModule, Unit, image_units
from axal.predict import segment_bands, write_bands
from axal.round_acquisition import shrink_map
from axal.rounds import active_round, round_steps
from axal.rundir import RunLock
from axal.settings import check_config, make_strategy, strategy_label, typical_first_units
from axal.suggestions import write_page, write_suggestions_csv

log = logging.getLogger("axal")
RECORD = "rounds.json"
Progress = Callable[[str, int, int], None]  # (stage: train | score | predict, done, total)
CONTRACT = ("task", "unit", "tile_size", "pixel_size")  # what a work folder cannot change


def work_dir(cfg: DictConfig) -> Path:
    """``annotate.out`` (``<dataset.root>/axal`` in conf/annotate.yaml)."""
    out = cfg.get("annotate", {}).get("out")
    return Path(out).expanduser() if out else Path(cfg.dataset.root).expanduser() / "axal"


@dataclass
class Folder:
    """A lab's images at the model's pixel size, their own sizes, and their masks' digests."""

    root: Path
    samples: list[Sample]
    sizes: dict[str, tuple[int, int]]  # image id -> (H, W) of the image file
    paths: dict[str, Path]
    masks: dict[str, str]  # labelled image id -> digest of its mask files

    def rel(self, image_id: str) -> Path:
        """The image's folder relative to the root (outputs mirror the input's layout)."""
        return self.paths[image_id].parent.relative_to(self.root)


def read_folder(
    root: Path, pixel_size: float | None, task: str = "axonmyelin", mask_encoding: str = "auto"
) -> Folder:
    """Every image of ``root``, labelled or not; masks are decoded and checked as the
    simulation's loaders do (:mod:`axal.data.masks`: wrong values are refused, naming them)."""
    samples = load_dataset(
        "folder",
        root=str(root),
        pixel_size=None,
        unlabelled=True,
        task=task,
        mask_encoding=mask_encoding,
    )
    masks = {}
    for s in samples:
        if s.mask is None:
            continue
        masks[s.id] = file_hash(list(manual_masks(root, s.path).values()))
    sizes = {s.id: (int(s.image.shape[0]), int(s.image.shape[1])) for s in samples}
    paths = {s.id: Path(s.path) for s in samples}
    if pixel_size is not None:
        unknown = [s.id for s in samples if s.pixel_size is None]
        if unknown:  # the wrong scale gives wrong masks and suggestions, silently
            raise DataError(
                f"no pixel size for {len(unknown)} image(s) of {root} (e.g. {paths[unknown[0]]}): "
                "add pixel_size_in_micrometer.txt (or the BIDS sidecar JSON) beside each, or "
                "set dataset.pixel_size=null to use every image at its own scale"
            )
        samples = [resample(s, pixel_size) for s in samples]
    return Folder(root, samples, sizes, paths, masks)


def labelled_units(
    units: dict[str, list[str]],
    masked: set[str],
    previous: list[str],
    suggested: set[str],
) -> list[str]:
    """The units that count as labelled, given which images have masks now.

    Units labelled before stay labelled while their image keeps its mask. An image with a new
    mask adds the units suggested for it, or all of its units when none ever was (a whole
    image annotated on the lab's own initiative). Order: the previous ones, then by image.
    """
    owner = {u: i for i, us in units.items() for u in us}
    out = [u for u in previous if owner.get(u) in masked]
    seen = set(out)
    for image in sorted(masked):
        own = [u for u in units[image] if u in seen]
        chosen = [u for u in units[image] if u in suggested]
        for u in chosen if own or chosen else units[image]:
            if u not in seen:
                out.append(u)
                seen.add(u)
    return out


def _new_state(cfg: DictConfig, root: Path) -> dict[str, Any]:
    unit = str(cfg.al.get("unit", "image"))
    return {
        "kind": "axal annotate",
        "root": str(root),
        "task": str(cfg.task),
        "unit": unit,
        "tile_size": int(cfg.al.tile_size) if unit == "tile" else None,
        "pixel_size": cfg.dataset.get("pixel_size"),
        "rounds": [],
    }


def load_state(out: Path, cfg: DictConfig, root: Path) -> dict[str, Any]:
    """rounds.json of the work folder, or a new state; refuses a change of task or unit."""
    fresh = _new_state(cfg, root)
    path = out / RECORD
    if not path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not readable ({err}): move it aside to start over") from err
    for key in CONTRACT:
        if state.get(key) != fresh[key]:
            error = CheckpointError if key == "task" else DataError
            setting = {"unit": "al.unit", "tile_size": "al.tile_size"}.get(key, key)
            setting = "dataset.pixel_size" if key == "pixel_size" else setting
            old, new = override(state.get(key)), override(fresh[key])
            raise error(
                f"the work folder {out} holds rounds with {setting}={old} (its "
                f"models were trained for that), but this command asks for "
                f"{setting}={new}: use {setting}={old}, or another "
                "annotate.out to start over"
            )
    return state


def tile_digests(folder: Folder, unit_ids: list[str]) -> dict[str, str]:
    """A digest of the mask inside each labelled tile (model scale), by unit id."""
    masks = {s.id: s.mask for s in folder.samples if s.mask is not None}
    shapes = {s.id: s.image.shape for s in folder.samples}
    out = {}
    for unit_id in unit_ids:
        unit = Unit.parse(unit_id, shapes)
        if unit.whole or unit.image not in masks:
            continue
        box = np.ascontiguousarray(masks[unit.image][unit.slices])
        out[unit_id] = hashlib.sha256(box.tobytes()).hexdigest()[:16]
    return out


def check_labelled_tiles(last: dict[str, Any] | None, folder: Folder) -> list[str]:
    """Tiles labelled in an earlier round whose mask changed since (e.g. saved over with model
    output); warned about, naming them, and returned."""
    before = (last or {}).get("tile_masks") or {}
    now = tile_digests(folder, list(before))
    changed = sorted(u for u, d in before.items() if u in now and now[u] != d)
    if changed:
        log.warning(
            "labelled tiles changed since round %d: %s. If their masks were saved over with a "
            "prediction, restore your labels there: they still count as labels",
            last["round"],
            ", ".join(changed),
        )
    return changed


def _check_enough(folder: Folder, needed: int) -> None:
    """A clear message when too few images are labelled to train a first model."""
    have = len(folder.masks)
    if have >= needed:
        return
    example = next((p for i, p in sorted(folder.paths.items()) if i not in folder.masks), None)
    where = f" e.g. {mask_target(folder.root, example)}" if example is not None else ""
    lower = f", or set al.initial={have} to start with fewer" if have else ""
    raise DataError(
        f"{folder.root}: {have} of {len(folder.paths)} images have a mask, but annotate needs at "
        f"least {needed} (al.initial={needed}) to train a first model. Annotate "
        f"{needed - have} more:{where} (0 background, 127 myelin, 255 axon){lower}; "
        "al.initial_pick=typical suggests which"
    )


def _box(unit: Unit, model_shape: tuple[int, int], size: tuple[int, int]) -> list[int]:
    """A unit's box (x, y, width, height) in the pixels of the image file."""
    if unit.whole:
        return [0, 0, size[1], size[0]]
    sy, sx = size[0] / model_shape[0], size[1] / model_shape[1]
    x0, y0 = round(unit.x * sx), round(unit.y * sy)
    x1, y1 = round((unit.x + unit.w) * sx), round((unit.y + unit.h) * sy)
    return [x0, y0, x1 - x0, y1 - y0]


def _rows(
    selected: list[str],
    scores: dict[str, float],
    units: dict[str, Unit],
    shapes: dict[str, tuple[int, int]],
    folder: Folder,
    label: str,
) -> list[dict[str, Any]]:
    """One row per picked unit: its box in the file's pixels and the mask file to save."""
    rows = []
    for rank, unit_id in enumerate(selected, 1):
        unit = units[unit_id]
        x, y, w, h = _box(unit, shapes[unit.image], folder.sizes[unit.image])
        rows.append(
            {
                "rank": rank,
                "unit": unit_id,
                "image": unit.image,
                "x": x,
                "y": y,
                "width": w,
                "height": h,
                "score": scores.get(unit_id),
                "strategy": label,
                "path": str(folder.paths[unit.image]),
                "mask": str(mask_target(folder.root, folder.paths[unit.image])),
                "has_mask": unit.image in folder.masks,
            }
        )
    return rows


def first_picks(
    cfg: DictConfig, folder: Folder, units: dict[str, list[str]], needed: int
) -> list[str]:
    """The units to annotate before any model exists (``al.initial_pick=typical``): TypiClust
    on the features of round 0's network at its initial weights, as the simulation's
    label-free initial set, among the images without a mask. With ``al.unit=tile`` the picks
    lie on ``needed`` different images, since round 0 counts images with a mask."""
    images = {s.id: s.image for s in folder.samples}
    left = [i for i in sorted(units) if i not in folder.masks]
    picks: list[str] = []
    while len(picks) < needed and left:
        candidates = [u for i in left for u in units[i]]
        for unit_id in typical_first_units(cfg, images, candidates, needed - len(picks)):
            image = unit_image(unit_id)
            if image in left:  # a second pick on one image does not bring round 0 closer
                picks.append(unit_id)
                left.remove(image)
    return picks


def _first_round_picks(
    cfg: DictConfig, state: dict[str, Any], folder: Folder, units: dict[str, list[str]], out: Path
) -> dict[str, Any]:
    """Too few masks for round 0 and ``al.initial_pick=typical``: suggest what to annotate
    first (once; the picks stand until enough masks exist), instead of refusing."""
    needed = int(cfg.al.initial) - len(folder.masks)
    if len(folder.paths) < int(cfg.al.initial):  # no pick can make round 0 possible
        raise DataError(
            f"{folder.root}: {len(folder.masks)} of {len(folder.paths)} images have a mask, but "
            f"round 0 needs {cfg.al.initial} with a mask (al.initial={cfg.al.initial}) and the "
            f"folder holds only {len(folder.paths)} images: add images, or set "
            f"al.initial={len(folder.paths)}"
        )
    record = state.get("first_picks")
    if record is None or any(r["image"] not in folder.paths for r in record["suggestions"]):
        chosen = first_picks(cfg, folder, units, needed)
        shapes = {s.id: tuple(s.image.shape[:2]) for s in folder.samples}
        by_id = {u: Unit.parse(u, shapes) for u in chosen}
        rows = _rows(chosen, {}, by_id, shapes, folder, "typical (label-free)")
        record = {
            "time": dt.datetime.now().isoformat(timespec="seconds"),
            "strategy": "typical (label-free)",
            "seed": int(cfg.seed),
            "needed": int(cfg.al.initial),
            "suggestions": rows,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        state["first_picks"] = record
        atomic_write_json(out / RECORD, state)
        write_suggestions_csv(out / "suggestions.csv", rows)
    write_page(out / "annotate.html", state)
    missing = [r for r in record["suggestions"] if r["image"] not in folder.masks]
    log.info(
        "%d of %d images have a mask; round 0 needs %d (al.initial). First picks, label-free "
        "(the most typical of their clusters by the untrained network's features): %s. Save "
        "their masks (0 background, 127 myelin, 255 axon) and run again; open %s",
        len(folder.masks),
        len(folder.paths),
        int(cfg.al.initial),
        "; ".join(f"{r['unit']} -> {r['mask']}" for r in missing) or "all have masks",
        out / "annotate.html",
    )
    return state


def _overlays(
    out: Path,
    round_index: int,
    suggestions: list[dict[str, Any]],
    dm: ActiveDataModule,
    picked_maps: dict[str, tuple[np.ndarray, np.ndarray]],
    measure: str,
) -> None:
    """One PNG per suggestion: its image, the uncertainty and the box (path in the row).

    Every overlay of the round shares one colour scale, 0 to the largest value of the round's
    maps (on each colour bar, and ``overlay_scale`` in each row), so that a colour means the
    same uncertainty on every suggestion.
    """
    tops = [
        float(np.nanmax(m[1]))
        for m in (picked_maps.get(row["image"]) for row in suggestions)
        if m is not None and np.size(m[1]) and np.isfinite(np.nanmax(m[1]))
    ]
    vmax = max(tops) if tops and max(tops) > 0 else None
    for row in suggestions:
        image_id = row["image"]
        small = shrink_map(torch.from_numpy(dm.images[image_id]))
        scale = small.shape[0] / dm.shapes[image_id][0]
        units = [row["unit"]] + [
            s["unit"] for s in suggestions if s["image"] == image_id and s is not row
        ]
        boxes = [
            (u.x * scale, u.y * scale, u.w * scale, u.h * scale)
            for u in (dm.units[i] for i in units)
        ]
        maps = picked_maps.get(image_id)
        score = "" if row["score"] is None else f" | score {row['score']:.4g}"
        path = out / "overlays" / f"round-{round_index:02d}_rank-{row['rank']:02d}_{image_id}.png"
        save_overlay_png(
            path,
            small,
            boxes,
            None if maps is None else maps[1],
            title=f"#{row['rank']} {image_id}{score}",
            measure=measure,
            vmax=vmax,
        )
        row["overlay"] = str(path.relative_to(out))
        if vmax is not None and maps is not None:
            row["overlay_scale"] = [0.0, vmax]
        if maps is not None:  # the raw map, for the napari widget's uncertainty layer
            target = out / "uncertainty" / f"round-{round_index:02d}_{image_id}.npy"
            target.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, np.asarray(maps[1], dtype=np.float32))
            atomic_write(target, buf.getvalue())
            row["uncertainty"] = str(target.relative_to(out))


class _TrainProgress(L.Callback):
    """Reports training steps to a :data:`Progress` hook."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.total = progress, total

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.progress("train", min(int(trainer.global_step), self.total), self.total)

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.progress("score", 0, 0)  # scoring the pool follows training; its length unknown


WRITTEN = "predictions/written.json"  # digest of every prediction file axal wrote
FIBER_COUNT_PIXELS = 4096 * 4096  # larger images get no predicted-fiber count on the page


def _predictions(
    model: Any,
    dm: ActiveDataModule,
    folder: Folder,
    out: Path,
    round_index: int,
    suggestions: list[dict[str, Any]] = (),
    progress: Progress | None = None,
    beside_images: bool = False,
) -> dict[str, list[str]]:
    """AxonDeepSeg masks, at each file's own size, of every image with a unit in the pool;
    for axon+myelin, each suggestion gets ``predicted_fibers``: the fibers its box holds.

    The masks go to ``predictions/``, or with ``beside_images`` next to each image as
    AxonDeepSeg writes them (``<stem>_seg-axonmyelin.png`` beside ``<stem>.png``; no reader
    takes them for images). A prediction file that a person edited since axal wrote it, or
    that axal did not write, is kept; the new one goes beside it, named after the round
    (see :func:`write_prediction_kept`). Paths are relative to ``out``.
    """
    ledger_path = out / WRITTEN
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    written = {}
    images = sorted(dm.pool_units())
    for n, image_id in enumerate(images):
        if progress:
            progress("predict", n, len(images))
        size = folder.sizes[image_id]
        rows = [row for row in suggestions if row["image"] == image_id]
        # fibers only where a suggestion needs their count, and where the whole class map
        # (and the fiber labels' distance transform) fit: masks themselves are streamed
        count = dm.n_classes == 3 and bool(rows) and size[0] * size[1] <= FIBER_COUNT_PIXELS
        if dm.n_classes == 3 and rows and not count:
            log.info("%s: too large to count its predicted fibers here", image_id)
        beside = folder.paths[image_id].parent
        target = beside if beside_images else out / "predictions" / folder.rel(image_id)
        stem = image_stem(folder.paths[image_id])
        paths = kept_paths(target, stem, ledger, out, f"round-{round_index}")
        writer = MaskWriter(paths, size)
        classes = write_bands(segment_bands(model, dm.images[image_id], size), writer, count)
        for kind, path in paths.items():
            ledger[ledger_key(path, out)] = writer.digests[kind]
        if count:
            from axal.morphometrics import fibers

            labels = fibers(classes)
            for row in rows:
                box = labels[
                    row["y"] : row["y"] + row["height"], row["x"] : row["x"] + row["width"]
                ]
                row["predicted_fibers"] = int(np.count_nonzero(np.unique(box)))
        kept = [p for p in paths.values() if ".round-" in p.name]
        if kept:
            log.warning("%s: edited predictions kept; the new ones are %s", image_id, kept[0].name)
        written[image_id] = [os.path.relpath(p, out) for p in paths.values()]
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ledger_path, ledger)
    return written


def annotate(cfg: DictConfig, progress: Progress | None = None) -> dict[str, Any]:
    """One round on the folder ``dataset.root``; returns the state saved in rounds.json.

    ``progress(stage, done, total)`` hears of training steps, scoring and predicting (the
    napari widget's progress bar)."""
    check_config(cfg)
    if str(cfg.dataset.name) != "folder":
        raise DataError(f"annotate reads your own folder: dataset=folder, not {cfg.dataset.name}")
    k = cfg.get("k")
    if not isinstance(k, int) or k < 1:
        raise DataError(f"k={k!r} must be a positive number of suggestions")
    strategy = make_strategy(cfg)
    if cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    root = Path(cfg.dataset.root).expanduser().resolve()
    out = work_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):  # a second annotate on this folder stops, naming the holder
        return _annotate_locked(cfg, strategy, k, root, out, progress)


def _annotate_locked(
    cfg: DictConfig,
    strategy: Any,
    k: int,
    root: Path,
    out: Path,
    progress: Progress | None = None,
) -> dict:
    state = load_state(out, cfg, root)
    folder = read_folder(
        root,
        cfg.dataset.get("pixel_size"),
        task=str(cfg.task),
        mask_encoding=cfg.dataset.get("mask_encoding", "auto"),
    )
    unit_kind, tile = str(cfg.al.get("unit", "image")), cfg.al.get("tile_size")
    units = {
        s.id: [u.id for u in image_units(s.id, s.image.shape, unit_kind, tile)]
        for s in folder.samples
    }
    typical = cfg.al.get("initial_pick", "random") == "typical"
    if not state["rounds"] and len(folder.masks) < int(cfg.al.initial) and typical:
        return _first_round_picks(cfg, state, folder, units, out)
    _check_enough(folder, int(cfg.al.initial))

    last = state["rounds"][-1] if state["rounds"] else None
    suggested = {s["unit"] for r in state["rounds"] for s in r["suggestions"]}
    suggested |= {s["unit"] for s in state.get("first_picks", {}).get("suggestions", [])}
    previous = last["labelled"] if last else []
    labelled = labelled_units(units, set(folder.masks), previous, suggested)
    edited_tiles = check_labelled_tiles(last, folder)
    gone = sorted({unit_image(u) for u in previous} - set(folder.masks))
    if gone:
        log.warning("masks gone since the last round, back to the pool: %s", ", ".join(gone))
    changed = sorted(i for i, d in folder.masks.items() if not last or last["masks"].get(i) != d)
    if last and not changed and not gone and not cfg.annotate.get("force", False):
        log.info(
            "no new or changed mask since round %d: its %d suggestions stand (%s). Add their "
            "masks and run again, or set annotate.force=true to train anyway",
            last["round"],
            len(last["suggestions"]),
            out / "annotate.html",
        )
        write_page(out / "annotate.html", state)
        return state

    r = len(state["rounds"])
    ckpts = out / "checkpoints"
    previous_ckpt = None
    if last and not cfg.al.reinit:
        previous_ckpt = out / last["checkpoint"]
        if not previous_ckpt.is_file():
            raise CheckpointError(
                f"the last round's model {previous_ckpt} is missing: set al.reinit=true to "
                "train a new one"
            )
    chosen = set(labelled)
    pool = [u for i in sorted(units) for u in units[i] if u not in chosen]
    d = cfg.dataset
    dm = ActiveDataModule(
        folder.samples,
        {"initial": labelled, "pool": pool, "test": [], "val": []},
        task=cfg.task,
        patch_size=d.patch_size,
        steps=cfg.trainer.steps,
        batch_size=d.batch_size,
        num_workers=d.get("num_workers", 0),
        augment=d.get("augment", True),
    )
    log.info(
        "round %d: %d labelled images (%d new or changed), %d units in the pool; %s",
        r,
        len(folder.masks),
        len(changed),
        len(pool),
        f"fine-tuning {previous_ckpt}" if previous_ckpt else "training a new model",
    )
    done = active_round(
        cfg,
        dm,
        strategy,
        r,
        k=k,
        run_dir=out,
        checkpoint=ckpts / f"round-{r}.ckpt",
        previous=previous_ckpt,
        reveal=False,
        extra_callbacks=(
            [_TrainProgress(progress, round_steps(cfg, previous_ckpt is not None))]
            if progress
            else None
        ),
    )
    label = strategy_label(cfg)
    callback = done.acquisition
    suggestions = _rows(callback.selected, callback.scores, dm.units, dm.shapes, folder, label)
    measure = getattr(strategy.for_round(r), "measure", label)
    _overlays(out, r, suggestions, dm, callback.picked_maps, measure)
    beside = bool(cfg.get("annotate", {}).get("predictions_beside_images", False))
    predictions = _predictions(
        done.fit.model, dm, folder, out, r, suggestions, progress, beside_images=beside
    )
    record = {
        **done.record,
        "time": dt.datetime.now().isoformat(timespec="seconds"),
        "strategy": label,
        "k": k,
        "labelled_images": sorted(folder.masks),
        "new_masks": changed,
        "masks": folder.masks,
        "tile_masks": tile_digests(folder, labelled),
        "changed_tiles": edited_tiles,
        "suggestions": suggestions,
        "predictions": predictions,
        "predictions_beside_images": beside,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "environment": environment(),  # a lab's rounds may run on different machines
    }
    state["rounds"].append(record)
    atomic_write_json(out / RECORD, state)  # after the checkpoint it names (active_round)
    partial_path(ckpts / f"round-{r}.ckpt").unlink(missing_ok=True)  # the round is recorded
    write_suggestions_csv(out / "suggestions.csv", suggestions)
    write_page(out / "annotate.html", state)
    log.info(
        "round %d done in %.0fs: suggestions %s; predictions of %d images in %s; open %s",
        r,
        done.fit.seconds + callback.seconds,
        ", ".join(s["unit"] for s in suggestions) or "none (every image is labelled)",
        len(predictions),
        out / "predictions",
        out / "annotate.html",
    )
    return state


def record_effort(out: Path, effort: dict[str, Any]) -> dict[str, Any]:
    """Add one annotator's correction (``unit``, ``seconds`` from opening to saving,
    ``pixels_changed`` against the prediction, ...) to the last round of rounds.json (before
    any round, to the first picks).

    The measured effort sits beside the suggestions it answers; the file is re-read and
    written atomically, so no round or earlier correction is lost.
    """
    path = out / RECORD
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not readable ({err}): cannot record the correction") from err
    if state.get("rounds"):
        answered = state["rounds"][-1]
    elif state.get("first_picks"):  # a first pick drawn from scratch: the effort a model saves
        answered = state["first_picks"]
    else:
        raise DataError(f"{path} holds no round: run a round before recording corrections")
    entry = {"time": dt.datetime.now().isoformat(timespec="seconds"), **effort}
    answered.setdefault("efforts", []).append(entry)
    atomic_write_json(path, state)
    return entry
