"""MC-dropout engine: cached prefix == whole network, streaming == full stack, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from axal.mc_dropout import (
    StreamingMoments,
    image_features,
    mc_dropout_stats,
    mc_mode,
    naive_mc_stats,
    split_stages,
)
from axal.networks import PaperUNet, SmpUNet
from axal.overlays import save_uncertainty_png

PLACEMENTS = ("paper", "decoder", "head")


def _smp(placement: str, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return SmpUNet(
        decoder_channels=(16, 8, 8, 8, 8),
        dropout_placement=placement,
        classes=classes,
        dropout_rate=0.3,
    )


def _paper(placement: str, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return PaperUNet(
        filters=(8, 16, 32), dropout_placement=placement, classes=classes, dropout_rate=0.3
    )


def _stats_from_stack(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference statistics from all T samples (T, C, H, W) at once."""
    p = probs.double()
    mean = p.mean(0)
    ent = -(mean * mean.clamp_min(1e-12).log()).sum(0)
    sample_ent = -(p * p.clamp_min(1e-12).log()).sum(1)
    return {
        "mean": mean,
        "var": p.var(0, unbiased=False),
        "entropy": ent,
        "mutual_info": ent - sample_ent.mean(0),
    }


def test_mc_mode_samples_dropout_freezes_batchnorm_and_restores() -> None:
    net = _paper("paper")
    net.train()
    net.stages[0].eval()
    before = {name: m.training for name, m in net.named_modules()}
    with mc_mode(net):
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                assert m.training
            if isinstance(m, nn.BatchNorm2d):
                assert not m.training
    assert {name: m.training for name, m in net.named_modules()} == before


def test_split_stages_and_no_dropout_error() -> None:
    prefix, suffix = split_stages(_smp("head"))
    assert len(suffix) == 1 and len(prefix) > 1
    net = _paper("none")
    assert split_stages(net)[1] == []
    with pytest.raises(ValueError, match="dropout_placement"):
        mc_dropout_stats(net, torch.rand(1, 32, 32), T=2)
    with pytest.raises(ValueError, match="dropout_rate"):
        mc_dropout_stats(_smp("paper").__class__(dropout_rate=0.0), torch.rand(1, 32, 32), T=2)


@pytest.mark.parametrize("make", [_smp, _paper], ids=["smp", "paper_unet"])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_cached_prefix_equals_whole_network_with_same_masks(make, placement) -> None:
    net = make(placement)
    image = torch.rand(1, 80, 100)  # several tiles, padded borders, overlap blending
    for chunk in (5, 2):  # same chunking on both paths => same dropout masks
        kw = dict(T=5, patch=64, overlap=16, tile_batch=3, sample_chunk=chunk, seed=7)
        cached = mc_dropout_stats(net, image, **kw)
        naive = naive_mc_stats(net, image, **kw)
        assert cached.var.max() > 0  # the samples really differ
        for key in ("mean", "var", "entropy", "mutual_info"):
            torch.testing.assert_close(
                getattr(cached, key), getattr(naive, key), atol=1e-6, rtol=1e-5
            )


def test_streaming_moments_equal_full_stack() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(23, 2, 3, 5, 6, generator=gen).softmax(2)  # (T, B, C, H, W)
    acc = StreamingMoments()
    for i in range(0, 23, 4):  # uneven last chunk
        acc.update(probs[i : i + 4])
    mean, var, ent, mi = acc.finalize()
    for b in range(2):
        ref = _stats_from_stack(probs[:, b])
        torch.testing.assert_close(mean[b], ref["mean"])
        torch.testing.assert_close(var[b], ref["var"])
        torch.testing.assert_close(ent[b], ref["entropy"])
        torch.testing.assert_close(mi[b], ref["mutual_info"])


@pytest.mark.parametrize("classes", [2, 3])
def test_engine_equals_hand_computed_stack(classes: int) -> None:
    """Single tile, T=7 in chunks of 3: rebuild all samples by hand with the same RNG stream."""
    net = _smp("decoder", classes)
    image = torch.rand(1, 64, 64)
    stats = mc_dropout_stats(net, image, T=7, patch=64, sample_chunk=3, seed=11)
    samples = []
    with mc_mode(net), torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(11)
        for s in (3, 3, 1):
            samples.append(net(image[None].repeat(s, 1, 1, 1)).softmax(1))
    ref = _stats_from_stack(torch.cat(samples))
    assert stats.mean.shape == (classes, 64, 64) and stats.entropy.shape == (64, 64)
    for key, val in ref.items():
        torch.testing.assert_close(getattr(stats, key), val.float(), atol=1e-5, rtol=1e-4)
    assert stats.n_samples == 7
    assert (stats.mutual_info >= 0).all() and (stats.var >= 0).all()


def test_suffix_batch_never_grows_with_T(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _smp("head")
    _, suffix = split_stages(net)
    sizes: list[int] = []
    drop = suffix[0].drop  # every suffix batch draws its masks here, whichever path runs
    keep_mask = drop.keep_mask

    def spy(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        sizes.append(shape[0] * shape[1])  # samples x tiles
        return keep_mask(shape, device)

    monkeypatch.setattr(drop, "keep_mask", spy)
    mc_dropout_stats(
        net,
        torch.rand(1, 100, 100),
        T=50,
        patch=64,
        overlap=16,
        tile_batch=2,
        sample_chunk=4,
        seed=0,
    )
    n_tiles = 9  # 100 -> padded 128 -> starts 0, 48, 64 per axis
    assert max(sizes) <= 4 * 2
    assert sum(sizes) == 50 * n_tiles


def test_seed_is_deterministic_and_leaves_global_rng_alone() -> None:
    net = _paper("decoder")
    image = np.random.default_rng(0).random((48, 40)).astype(np.float32)  # numpy HxW accepted
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = mc_dropout_stats(net, image, T=4, patch=64, seed=5)
    assert torch.equal(torch.rand(1), expected_next)
    b = mc_dropout_stats(net, image, T=4, patch=64, seed=5)
    c = mc_dropout_stats(net, image, T=4, patch=64, seed=6)
    assert torch.equal(a.var, b.var)
    assert not torch.equal(a.var, c.var)
    assert a.mean.shape == (2, 48, 40)


def test_features_are_the_prefix_pool() -> None:
    net = _smp("paper")
    image = torch.rand(1, 70, 70)
    stats = mc_dropout_stats(net, image, T=2, patch=64, seed=0)
    feats = image_features(net, image, patch=64)
    assert feats.ndim == 1 and feats.shape == stats.features.shape
    np.testing.assert_allclose(feats, stats.features, rtol=1e-5, atol=1e-6)


def test_save_uncertainty_png(tmp_path) -> None:
    net = _paper("head")
    image = torch.rand(1, 40, 40)
    stats = mc_dropout_stats(net, image, T=2, patch=64, seed=0)
    pred = stats.prediction.numpy()
    out = save_uncertainty_png(
        tmp_path / "maps" / "u.png", image[0].numpy(), pred, stats.var[1].numpy(), "x"
    )
    assert out.is_file() and out.stat().st_size > 1000
    assert [p.name for p in out.parent.iterdir()] == ["u.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="2-D"):
        save_uncertainty_png(tmp_path / "bad.png", image[0].numpy(), pred, stats.var.numpy())
