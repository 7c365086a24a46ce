"""Training precision and memory format: experiment settings that resume and round 0 compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from axal.checkpoint import load_model
from axal.errors import ConfigError
from axal.first_round import entry_dir
from axal.mc_dropout import mc_dropout_stats
from axal.settings import build_model
from axal.simulation import run
from tests.conftest import compose_cfg

SPLITS = {"test": ["a"], "val": ["b"], "initial": ["c"], "pool": ["d", "e"]}
FAST_BF16 = ["trainer.precision=bf16-mixed", "model.module.channels_last=true"]


def _entry(tmp_path: Path, *overrides: str) -> Path:
    cfg = compose_cfg(["dataset=synthetic", *overrides])
    return entry_dir(tmp_path, OmegaConf.to_container(cfg, resolve=True), SPLITS)


def _a_conv(model: torch.nn.Module) -> torch.Tensor:
    """A k x k convolution's weight with several input channels (its layout shows)."""
    return next(p for p in model.parameters() if p.dim() == 4 and min(p.shape[1], p.shape[3]) > 1)


def test_precision_and_memory_format_are_part_of_the_round_0_key(tmp_path):
    base = _entry(tmp_path, "trainer.precision=32-true", "model.module.channels_last=false")
    assert _entry(tmp_path, "trainer.precision=bf16-mixed") != base
    assert _entry(tmp_path, "model.module.channels_last=true") != base


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.precision=bf16-mixed", "trainer.precision: '32-true' -> 'bf16-mixed'"),
        ("model.module.channels_last=true", "model.module.channels_last: False -> True"),
    ],
)
def test_resume_with_another_precision_refuses_naming_it(cfg_factory, tmp_path, override, named):
    base = ["al.rounds=1", "trainer.precision=32-true", "model.module.channels_last=false"]
    run(cfg_factory(*base), tmp_path)
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ConfigError) as err:
        run(cfg_factory(*base, override, f"resume={tmp_path}"), tmp_path)
    assert named in str(err.value)
    assert (tmp_path / "results.json").read_bytes() == before


def test_channels_last_changes_the_layout_not_the_model():
    cfg = compose_cfg(["dataset=synthetic", "model=tiny"])
    torch.manual_seed(0)
    plain = build_model(cfg, 2).eval()
    cfg.model.module.channels_last = True
    torch.manual_seed(0)
    nhwc = build_model(cfg, 2).eval()
    conv = _a_conv(nhwc)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), atol=1e-4, rtol=1e-4)


def test_a_bf16_channels_last_run_predicts_in_fp32_with_its_layout(cfg_factory, tmp_path):
    results = run(cfg_factory("al.rounds=1", *FAST_BF16), tmp_path)
    assert results["config"]["trainer"]["precision"] == "bf16-mixed"
    model, meta = load_model(tmp_path / "checkpoints" / "round-0.ckpt")
    assert meta["module"]["channels_last"] is True  # predict.py and annotate.py rebuild it so
    conv = _a_conv(model)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    image = torch.rand(1, 48, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside a bf16 trainer's test step
        probs = model.predict_image(image)
    assert probs.dtype == torch.float32
    np.testing.assert_allclose(probs.sum(0).numpy(), 1.0, atol=1e-5)
    torch.testing.assert_close(probs, model.predict_image(image))


@pytest.mark.parametrize("placement", ["paper", "decoder", "head"])
def test_mc_dropout_scores_a_channels_last_model_as_its_nchw_twin(placement):
    stats = []
    for channels_last in (False, True):
        cfg = compose_cfg(
            [
                "dataset=synthetic",
                "model=tiny",
                f"model.dropout_placement={placement}",
                f"model.module.channels_last={channels_last}",
            ]
        )
        torch.manual_seed(0)
        net = build_model(cfg, 2).eval().net
        image = np.random.default_rng(0).random((1, 100, 90)).astype(np.float32)
        stats.append(mc_dropout_stats(net, image, T=3, patch=64, overlap=16, seed=1))
    for field in ("mean", "var", "entropy", "mutual_info"):
        torch.testing.assert_close(
            getattr(stats[1], field), getattr(stats[0], field), atol=1e-5, rtol=1e-4
        )
