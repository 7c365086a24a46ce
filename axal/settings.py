"""The settings of a run: config checks that fail early, and the factories built from them.

Everything the simulation (:mod:`axal.simulation`) and real annotation (:mod:`axal.annotate`)
make from a config lives here: the data and its splits, the model, the strategy, the labels a
run is shown under, and the seeds. Every random choice of round r is seeded from ``(seed, r)``
alone: a resumed run makes the same choices as an uninterrupted one, and every strategy starts
from the same split, initial set and initial weights for a given seed (comparisons are paired
by seed).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from axal.acquisition import Strategy, typical_units
from axal.checkpoint import describe_model
from axal.data import load_dataset, split_by_subject
from axal.domain import TASKS, UNIT_KINDS, semi_suffix
from axal.errors import ConfigError
from axal.mean_teacher import make_semi
from axal.morphometrics import CostModel
from axal.networks import PLACEMENTS
from axal.pools import unit_splits


def check_config(cfg: DictConfig) -> None:
    """Fail early, naming the setting, before anything is computed."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    for key in ("initial", "per_round", "rounds", "mc_samples"):
        value = cfg.al[key]
        values = list(value) if key == "per_round" and OmegaConf.is_list(value) else [value]
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f"al.{key}={value!r} must be a positive integer")
    for key in ("steps", "finetune_steps", "max_restarts", "checkpoint_every"):
        value = cfg.trainer.get(key)
        minimum = 0 if key in ("max_restarts", "checkpoint_every") else 1
        if value is None and key in ("finetune_steps", "checkpoint_every"):
            continue
        if not isinstance(value, int) or value < minimum:
            raise ConfigError(f"trainer.{key}={value!r} must be an integer >= {minimum}")
    pick = cfg.al.get("initial_pick", "random")
    if pick not in ("random", "typical"):
        raise ConfigError(f"al.initial_pick={pick!r} is not one of random, typical")
    replicate(cfg)
    unit = cfg.al.get("unit", "image")
    if unit not in UNIT_KINDS:
        raise ConfigError(f"al.unit={unit!r} is not one of {', '.join(UNIT_KINDS)}")
    if unit == "tile":
        size = cfg.al.get("tile_size")
        if not isinstance(size, int) or size < 8:
            raise ConfigError(f"al.tile_size={size!r} must be an integer >= 8 (pixels)")
    placement = cfg.model.get("dropout_placement", "paper")
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"model.dropout_placement={placement!r} is not one of {', '.join(PLACEMENTS)}"
        )
    try:
        make_semi(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.dataset.patch_size % 32 or cfg.dataset.patch_size < 32:
        raise ConfigError(
            f"dataset.patch_size={cfg.dataset.patch_size} must be a positive multiple of 32"
        )


def load_samples(cfg: DictConfig) -> list:
    d = cfg.dataset
    return load_dataset(
        d.name,
        root=d.get("root"),
        pixel_size=d.get("pixel_size"),
        n_images=d.get("n_images", 12),
        size=d.get("size", 128),
        n_subjects=d.get("n_subjects", 6),
        seed=d.get("synthetic_seed", 0),
        task=cfg.task,
        mask_encoding=d.get("mask_encoding", "auto"),
        bit_depth=d.get("bit_depth"),
    )


def make_splits(cfg: DictConfig, samples: list) -> dict[str, list[str]]:
    """Test/val subjects (seeded K-fold by default), then the initial units and the pool."""
    unit = cfg.al.get("unit", "image")
    images = split_by_subject(
        samples,
        n_test=cfg.dataset.test_subjects,
        n_val=cfg.dataset.val_subjects,
        n_initial=cfg.al.initial if unit == "image" else 1,
        seed=cfg.seed,
        folds=bool(cfg.dataset.get("folds", True)),
        fold_seed=int(cfg.dataset.get("fold_seed", 0)),
    )
    shapes = {s.id: s.image.shape for s in samples}
    splits = unit_splits(
        images, shapes, unit, cfg.al.get("tile_size"), int(cfg.al.initial), int(cfg.seed)
    )
    if full_data(cfg):  # the full-data reference: every training unit labelled from the start
        splits["initial"], splits["pool"] = splits["initial"] + splits["pool"], []
    elif cfg.al.get("initial_pick", "random") == "typical":
        splits = _typical_initial(cfg, samples, splits)
    return splits


def _typical_initial(cfg: DictConfig, samples: list, splits: dict) -> dict[str, list[str]]:
    """The initial units picked label-free by TypiClust instead of at random; test/val are
    unchanged."""
    train = splits["initial"] + splits["pool"]
    images = {s.id: s.image for s in samples}
    chosen = typical_first_units(cfg, images, train, len(splits["initial"]))
    taken = set(chosen)
    return {**splits, "initial": chosen, "pool": [u for u in train if u not in taken]}


def typical_first_units(
    cfg: DictConfig, images: dict[str, Any], unit_ids: list[str], k: int
) -> list[str]:
    """``k`` of ``unit_ids`` by TypiClust on the features of round 0's network at its initial
    weights (seeded like round 0): ``al.initial_pick=typical``, the same picks in the
    simulation and in annotate's first picks, since no model exists yet to be uncertain."""
    with torch.random.fork_rng():
        torch.manual_seed(round_seed(cfg.seed, 0))
        net = build_model(cfg, TASKS[cfg.task]).net
    module = cfg.model.module
    return typical_units(
        net,
        images,
        unit_ids,
        k,
        int(cfg.seed),
        patch=int(module.patch_size),
        overlap=int(module.overlap),
    )


def full_data(cfg: DictConfig) -> bool:
    """``strategy=full`` (:attr:`Strategy.full_data`): one model per seed on every training
    unit, the same recipe."""
    target = cfg.strategy.get("_target_")
    return bool(target) and bool(getattr(get_class(str(target)), "full_data", False))


def build_model(cfg: DictConfig, n_classes: int) -> L.LightningModule:
    """A fresh model that will save what predictions need into its checkpoints."""
    net = instantiate(cfg.model.net, classes=n_classes)
    model = instantiate(cfg.model.module, net=net, n_classes=n_classes)
    model.meta = describe_model(cfg)
    return model


def build_strategy(cfg: DictConfig) -> Strategy:
    params = OmegaConf.to_container(cfg.strategy, resolve=True)
    params.pop("name", None)
    return instantiate(params)


def make_strategy(cfg: DictConfig) -> Strategy:
    """The configured strategy; refused when it needs MC dropout and the network has none."""
    try:
        strategy = build_strategy(cfg)
    except InstantiationException as err:
        raise ConfigError(f"strategy={strategy_label(cfg)}: {err.__cause__ or err}") from err
    if strategy.needs_mc and (
        cfg.model.get("dropout_placement") == "none" or not cfg.model.get("dropout_rate")
    ):
        raise ConfigError(
            f"strategy={strategy_label(cfg)} needs MC dropout, but model.dropout_placement="
            f"{cfg.model.get('dropout_placement')} and model.dropout_rate="
            f"{cfg.model.get('dropout_rate')} leave the network without dropout"
        )
    return strategy


def strategy_label(cfg: DictConfig) -> str:
    return str(cfg.strategy.get("name") or cfg.strategy._target_.rsplit(".", 1)[-1].lower())


def run_label(cfg: DictConfig) -> str:
    """The default display label: the strategy's name, ``+mean_teacher`` with trainer.semi
    (:func:`axal.domain.semi_suffix`)."""
    semi = cfg.trainer.get("semi")
    return strategy_label(cfg) + semi_suffix(
        OmegaConf.to_container(semi, resolve=True) if OmegaConf.is_dict(semi) else None
    )


def replicate(cfg: DictConfig) -> int:
    """``al.replicate``: another draw of a seed. Same split, same round 0 (shared through
    al.first_round_cache), other picks; for strategy=full (one round, no picks) another
    training seed."""
    value = cfg.al.get("replicate") or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"al.replicate={value!r} must be an integer >= 0")
    return value


def round_seed(seed: int, round_index: int) -> int:
    return seed * 1000 + round_index


def train_seed(cfg: DictConfig, round_index: int) -> int:
    """Round ``round_index``'s training seed; a full-data replicate trains from another."""
    seed = round_seed(cfg.seed, round_index)
    return seed + 10**7 * replicate(cfg) if full_data(cfg) else seed


def cost_model(cfg: DictConfig) -> CostModel:
    """The annotator-time model of ``al.cost`` (defaults and their source: axal.morphometrics)."""
    return CostModel(**dict(cfg.al.get("cost") or {}))
