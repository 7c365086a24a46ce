"""Every config under conf/ composes and passes the run's checks, so none rots unseen."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from axal.settings import build_strategy, check_config, full_data
from tests.conftest import CONF

GROUPS = ["dataset", "model", "strategy", "trainer", "logger"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = _compose("config", [f"experiment={experiment}"])
    check_config(cfg)
    build_strategy(cfg)


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(group, option):
    cfg = _compose("config", [f"{group}={option}"])
    assert cfg[group] is not None
    check_config(cfg)


@pytest.mark.parametrize("name", ["annotate", "predict"])
def test_entry_point_configs_compose(name):
    cfg = _compose(name, [])
    assert OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("option", _options("strategy"))
def test_only_the_full_strategy_labels_every_unit_first(option):
    """``full_data`` is the strategy's own flag, read from its class before it is built."""
    cfg = _compose("config", [f"strategy={option}"])
    assert full_data(cfg) is build_strategy(cfg).full_data is (option == "full")
