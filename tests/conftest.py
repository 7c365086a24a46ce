"""Shared fixtures: Hydra config composition and tiny, fast settings for end-to-end runs."""

from __future__ import annotations

import os
from pathlib import Path

# One thread: the models here are tiny, and OpenMP threads that spin-wait slow down many times
# over when other processes share the cores (a noisy CI machine, parallel sessions).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
from hydra import compose, initialize_config_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FAST = [
    "dataset=synthetic",
    "model=tiny",
    "logger=none",
    "trainer.steps=2",
    "trainer.finetune_steps=2",
    "trainer.max_restarts=0",
    "trainer.progress=false",
    "dataset.batch_size=4",
    "al.mc_samples=3",
    "al.rounds=2",
    "al.initial=2",
]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def cfg_factory():
    return lambda *overrides: compose_cfg(FAST + list(overrides))


def real_data_root() -> Path | None:
    """The folder holding both public datasets: $AXAL_DATA, else ../shared/data."""
    env = os.environ.get("AXAL_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if all(
            (candidate / d).is_dir() for d in ("tem_mouse_corpuscallosum", "sem_rat_spinalcord")
        ):
            return candidate
    return None


REAL_DATA = real_data_root()
needs_data = pytest.mark.skipif(
    REAL_DATA is None,
    reason="real data not found: set AXAL_DATA to the folder holding tem_mouse_corpuscallosum/",
)


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    """No test may reach the network: W&B offline, no API key."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
