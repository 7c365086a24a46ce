"""Round 0, trained once and shared by the runs that differ only in their strategy.

Round 0 trains from scratch on the initial units, before any strategy has picked anything, so
for a given seed every strategy trains the same model (bit for bit on a CPU). A sweep over S
strategies need not train it S times: on SEM tiles round 0 is 15 of a run's 20 minutes. With
``al.first_round_cache=<dir>`` (a sweep sets it to ``<sweep.dir>/first_rounds``) the first run
to reach round 0 trains it and stores the model and its training record in an entry of that
folder; the others load it, then test and acquire as usual, so their records are unchanged but
for ``shared_first_round`` and the seconds spent.

An entry's key hashes the run's splits, the pixels of the images and masks it trains on, and
every setting except the strategy, the display
label, the replicate (``al.replicate``: the same seed's round 0, other picks) and the speed
settings a resume may change: runs that would train differently never share
an entry. An entry is written under its folder's lock, the model before the record that makes
it valid; a run that finds the entry locked waits for it rather than training it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from axal.atomic import atomic_write_json
from axal.checkpoint import load_weights, save_checkpoint
from axal.rundir import MAY_CHANGE, MAY_GROW, RunFolderInUse, RunLock, flatten, matches_any
from axal.training import RoundFit

log = logging.getLogger("axal")
MODEL, RECORD = "model.ckpt", "fit.json"
# settings that leave round 0's training unchanged
# (al.replicate: another draw of the picks after round 0, never of round 0 itself)
NOT_IN_KEY = (
    *MAY_CHANGE,
    *MAY_GROW,
    "strategy",
    "label",
    "al.first_round_cache",
    "al.replicate",
)


def data_digest(dm: Any) -> str:
    """A digest of the pixels round 0 trains and validates on: the images and masks of the
    labelled units and of the validation images, so an edited mask or image is a new entry."""
    digest = hashlib.sha256()
    for image_id in sorted({*dm.labelled_images(), *dm.val}):
        digest.update(image_id.encode())
        for array in (dm.images.get(image_id), dm.masks.get(image_id)):
            if array is not None:
                digest.update(str((array.shape, array.dtype)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def round_0_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings as round 0 trains with them. A mean teacher joining at a later round
    (``trainer.semi.from_round`` > 0) trains round 0 as the supervised arm does, so the two
    share an entry; ``from_round: 0`` is the mean teacher of before the setting existed, whose
    entries keep their keys."""
    trainer = config.get("trainer")
    semi = trainer.get("semi") if isinstance(trainer, dict) else None
    if not isinstance(semi, dict) or "from_round" not in semi:
        return config
    start = semi["from_round"]
    semi = {"name": "none"} if start else {k: v for k, v in semi.items() if k != "from_round"}
    return {**config, "trainer": {**trainer, "semi": semi}}


def entry_dir(
    cache: str | Path,
    config: dict[str, Any],
    splits: dict[str, list[str]],
    data: str | None = None,
) -> Path:
    """The cache entry of a run with this resolved ``config``, these ``splits`` and the
    :func:`data_digest` ``data`` of what it trains on."""
    flat = flatten(json.loads(json.dumps(round_0_settings(config), default=str)))
    kept = {k: v for k, v in flat.items() if not matches_any(k, NOT_IN_KEY)}
    blob = json.dumps({"config": kept, "splits": splits, "data": data}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return Path(cache) / f"seed{config.get('seed')}-{key}"


def shared_fit(
    entry: Path,
    train: Callable[[], RoundFit],
    restore: Callable[[Path], L.LightningModule],
    trainer: Callable[[int], L.Trainer],
    run_dir: Path,
    poll: float = 10.0,
) -> tuple[RoundFit, dict[str, Any]]:
    """Round 0's fit: loaded from ``entry`` when stored, else ``train()``-ed here and stored.

    ``restore(path)`` builds the model with the stored weights and ``trainer(steps)`` a fresh
    trainer for it. Returns the fit and the record's ``shared_first_round`` entry.
    """
    entry.mkdir(parents=True, exist_ok=True)
    lock = RunLock(entry)
    waited = False
    while not (entry / RECORD).is_file():
        try:
            lock.acquire()
        except RunFolderInUse:
            if not waited:
                log.info("waiting for round 0 in %s, which another run is training", entry)
                waited = True
            time.sleep(poll)
            continue
        try:
            if (entry / RECORD).is_file():  # stored between our check and our lock
                break
            fit = train()
            _store(entry, fit, run_dir)
            return fit, {"entry": str(entry), "trained_here": True}
        finally:
            lock.release()
    loaded = _load(entry, restore, trainer)
    if loaded is None:  # a damaged entry costs this run its time, never its results
        return train(), {"entry": str(entry), "trained_here": True, "entry_unreadable": True}
    return loaded


def _store(entry: Path, fit: RoundFit, run_dir: Path) -> None:
    save_checkpoint(fit.trainer, entry / MODEL)  # only the record, written last, makes it valid
    atomic_write_json(
        entry / RECORD,
        {
            "steps": fit.steps,
            "restarts": fit.restarts,
            "collapses": fit.collapses,
            "collapsed": fit.collapsed,
            "train_loss": fit.train_loss,
            "semi": fit.semi,  # a loading run's round record says what the mean teacher did
            "train_seconds": round(fit.seconds, 3),
            "trained_by": str(run_dir),
            "at": dt.datetime.now().isoformat(timespec="seconds"),
        },
    )


def _load(
    entry: Path,
    restore: Callable[[Path], L.LightningModule],
    trainer: Callable[[int], L.Trainer],
) -> tuple[RoundFit, dict[str, Any]] | None:
    start = time.perf_counter()
    try:
        stored = json.loads((entry / RECORD).read_text())
        steps = int(stored["steps"])
        model = restore(entry / MODEL)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning(
            "the shared round 0 in %s is unreadable (%s): training round 0 here; delete that "
            "folder so that later runs store a new one",
            entry,
            err,
        )
        return None
    log.info("round 0 loaded from %s (trained by %s)", entry, stored.get("trained_by"))
    fit = RoundFit(
        model=model,
        trainer=trainer(steps),
        steps=steps,
        restarts=int(stored.get("restarts", 0)),
        collapses=list(stored.get("collapses", [])),
        collapsed=bool(stored.get("collapsed", False)),
        seconds=time.perf_counter() - start,
        train_loss=stored.get("train_loss"),
        semi=stored.get("semi"),
    )
    info = {
        "entry": str(entry),
        "trained_here": False,
        "trained_by": stored.get("trained_by"),
        "train_seconds": stored.get("train_seconds"),
    }
    return fit, info


def restore_with(
    make_model: Callable[[], L.LightningModule], task: str
) -> Callable[[Path], L.LightningModule]:
    """``restore`` for :func:`shared_fit`: a fresh model with the stored weights."""

    def restore(path: Path) -> L.LightningModule:
        model = make_model()
        load_weights(model, path, task)
        return model

    return restore
