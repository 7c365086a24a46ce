"""The results contract: what a simulation run writes to ``results.json``, and who reads it.

The simulation (:mod:`axal.simulation`) writes the document after every round; a resume, the
sweep and the report (:mod:`axal.report`) read it back. Its one file name lives here, with the
shapes of the document and of its round records. The records are plain JSON dicts
(``TypedDict``): they are written with ``json.dumps`` as they are, in the order the keys are
set, so old files and new ones read the same.

This module imports nothing heavy: the report reads results without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

RESULTS = "results.json"
# what a resume must keep: the run it continues answers the same question
CONTRACT_KEYS = ("dataset", "task", "strategy", "seed")
FULL = "full"  # the recorded strategy of a full-data reference run (``strategy=full``)


class RoundRecord(TypedDict, total=False):
    """One finished round, in the order its keys are written.

    ``steps`` .. ``semi`` are :func:`axal.training.fit_record`'s fields; ``semi`` only with
    ``trainer.semi``; ``checkpoint`` and ``fine_tuned_from`` are dropped by the simulation
    (only the last checkpoint is kept); ``shared_first_round`` only when round 0 came from or
    went to ``al.first_round_cache``; ``correction_total`` only once a round had a correction.
    """

    round: int
    seed: int
    n_labelled: int
    labelled_pixels: int
    labelled_fraction: float
    labelled: list[str]
    selected: list[str]
    scores: dict[str, float]
    test: dict[str, Any] | None
    train_loss: float | None
    steps: int
    restarts: int
    collapses: int
    collapsed: bool
    semi: dict[str, Any]
    fine_tuned_from: str | None
    checkpoint: str
    train_seconds: float
    acquire_seconds: float
    correction: dict[str, Any] | None
    uncertainty_maps: list[str]
    shared_first_round: dict[str, Any]
    correction_total: dict[str, float]


class Resume(TypedDict):
    """One ``resume=`` of the run: when, from which round, its config file, what it changed,
    and the machine that resumed it (``environment``; absent in runs recorded before it)."""

    at: str
    from_round: int
    config: str
    changed: dict[str, list]
    environment: dict[str, Any]


class Results(TypedDict, total=False):
    """The whole ``results.json`` of one run (``pool_pixels``, ``environment`` and ``resumes``
    come later)."""

    dataset: str
    task: str
    strategy: str
    seed: int
    label: str
    unit: str
    tile_size: int | None
    fold: int | None
    replicate: int
    splits: dict[str, list[str]]
    rounds: list[RoundRecord]
    finished: bool
    config: dict[str, Any]
    pool_pixels: int
    environment: dict[str, Any]  # axal.environment.environment() when the run started
    resumes: list[Resume]


def is_full_run(run: Mapping) -> bool:
    """A recorded full-data reference run (trained once on every training unit).

    Decided from the recorded strategy, so results written before strategies carried
    :attr:`axal.acquisition.Strategy.full_data` read the same."""
    return run.get("strategy") == FULL
