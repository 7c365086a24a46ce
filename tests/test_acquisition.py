"""Acquisition strategies: scores rank the right images, samplers draw with the right odds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import chisquare

from axal.acquisition import (
    BALD,
    Coreset,
    Entropy,
    Hybrid,
    Margin,
    MCDropout,
    Random,
    acquire,
    edt_weight,
    k_center_greedy,
    reduce_map,
    sample_ids,
)
from axal.mc_dropout import PixelStats, StreamingMoments
from axal.networks import PaperUNet

CONF = Path(__file__).resolve().parents[1] / "conf" / "strategy"


def stats_from_samples(fg: list[float] | np.ndarray, size: int = 8) -> PixelStats:
    """PixelStats of a binary task where sample t predicts foreground prob fg[t] everywhere."""
    p1 = torch.as_tensor(np.asarray(fg, dtype=np.float64))[:, None, None].expand(-1, size, size)
    probs = torch.stack([1 - p1, p1], dim=1)  # (T, 2, H, W)
    acc = StreamingMoments()
    acc.update(probs[:, None])
    mean, var, ent, mi = (t[0].float() for t in acc.finalize())
    return PixelStats(mean, var, ent, mi, np.zeros(4, np.float32), len(fg))


DISAGREE = [0.05, 0.85] * 5  # samples flip between confident answers (mean 0.45)
AGREE = [0.9] * 10  # every sample confident and identical
CONSISTENT_HALF = [0.5] * 10  # every sample says 50/50: aleatoric, not epistemic


def test_mc_dropout_ranks_disagreement_above_agreement() -> None:
    s = MCDropout()
    assert s.score(stats_from_samples(DISAGREE)) > s.score(stats_from_samples(AGREE))
    assert s.score(stats_from_samples(AGREE)) == pytest.approx(0.0, abs=1e-9)
    assert s.score(stats_from_samples(CONSISTENT_HALF)) == pytest.approx(0.0, abs=1e-9)


def test_bald_tops_disagreement_and_entropy_tops_consistent_half() -> None:
    pool = {"disagree": DISAGREE, "agree": AGREE, "half": CONSISTENT_HALF}
    stats = {k: stats_from_samples(v) for k, v in pool.items()}
    rng = np.random.default_rng(0)
    bald = {k: BALD().score(v) for k, v in stats.items()}
    ent = {k: Entropy().score(v) for k, v in stats.items()}
    assert BALD().select(bald, 1, rng) == ["disagree"]
    assert bald["half"] == pytest.approx(0.0, abs=1e-6)
    assert Entropy().select(ent, 1, rng) == ["half"]
    margin = {k: Margin().score(v) for k, v in stats.items()}
    assert Margin().select(margin, 1, rng) == ["half"]


def test_three_class_variance_sums_classes() -> None:
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    probs = probs[:, :, None, None].expand(-1, -1, 4, 4)
    acc = StreamingMoments()
    acc.update(probs[:, None])
    mean, var, ent, mi = (t[0].float() for t in acc.finalize())
    st = PixelStats(mean, var, ent, mi, np.zeros(1, np.float32), 2)
    per_pixel = MCDropout().pixel_map(st)
    assert per_pixel.shape == (4, 4)
    assert per_pixel[0, 0].item() == pytest.approx(2 * 0.35**2, rel=1e-5)


def test_edt_weight_downweights_edges() -> None:
    pred = np.zeros((21, 21), dtype=np.int64)
    pred[5:16, 5:16] = 1
    w = edt_weight(pred)
    assert w.min() == 0.0 and w.max() == 1.0
    assert w[10, 10] > w[5, 10]  # the object's centre is far from the edge
    assert np.all(edt_weight(np.zeros((5, 5))) == 1)
    # same uncertainty mass, at the edge vs at the centre
    st = stats_from_samples(AGREE, size=21)
    st.mean = torch.stack([torch.from_numpy(1.0 - pred), torch.from_numpy(pred)]).float()
    edge, centre = st.var.clone(), st.var.clone()
    edge[:, 5, 8:13] = 0.1
    centre[:, 10, 8:13] = 0.1
    s = MCDropout(apply_edt=True)
    st.var = edge
    e = s.score(st)
    st.var = centre
    assert s.score(st) > e


def test_reductions_on_known_maps() -> None:
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert reduce_map(m, "sum") == 10.0
    assert reduce_map(torch.tensor(m), "mean") == 2.5
    assert reduce_map(m, "top_percentile", 50) == 3.5
    assert reduce_map(m, "top_percentile", 90) == 4.0
    big = np.full((4, 4), 0.5)
    small = np.full((2, 2), 0.5)
    assert reduce_map(big, "sum") > reduce_map(small, "sum")  # the paper's size bias
    assert reduce_map(big, "mean") == reduce_map(small, "mean")
    with pytest.raises(ValueError, match="reduction"):
        reduce_map(m, "median")


def test_power_sampling_matches_expected_frequencies() -> None:
    scores = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    rng = np.random.default_rng(0)
    n = 4000
    counts = {k: 0 for k in scores}
    for _ in range(n):
        counts[sample_ids(scores, 1, rng, "power", 1.0)[0]] += 1
    expected = np.array([1, 2, 3, 4]) / 10 * n
    assert chisquare([counts[k] for k in "abcd"], expected).pvalue > 0.001


def test_softrank_matches_expected_frequencies() -> None:
    scores = {"a": 0.1, "b": 5.0, "c": 0.7, "d": 2.0}  # ranks: b=1, d=2, c=3, a=4
    rng = np.random.default_rng(1)
    n = 4000
    counts = {k: 0 for k in scores}
    for _ in range(n):
        counts[sample_ids(scores, 1, rng, "softrank", 1.0)[0]] += 1
    w = 1 / np.arange(1, 5)
    expected = w / w.sum() * n
    assert chisquare([counts[k] for k in "bdca"], expected).pvalue > 0.001


@pytest.mark.parametrize("sampling", ["power", "softrank"])
def test_large_beta_tends_to_top_k(sampling: str) -> None:
    scores = {f"im{i}": float(i + 1) for i in range(6)}
    top = sample_ids(scores, 2, np.random.default_rng(0), "top")
    assert top == ["im5", "im4"]
    rng = np.random.default_rng(2)
    hits = sum(sample_ids(scores, 2, rng, sampling, 50.0) == top for _ in range(500))
    assert hits >= 495


def test_selection_deterministic_per_seed() -> None:
    scores = {f"im{i}": float(i % 5 + 1) for i in range(30)}
    s = BALD(sampling="power")
    a = s.select(scores, 5, np.random.default_rng(3))
    assert a == s.select(scores, 5, np.random.default_rng(3))
    assert a != s.select(scores, 5, np.random.default_rng(4))
    assert len(set(a)) == 5
    # top-k ties are broken by id, independent of dict order
    tied = {"b": 1.0, "a": 1.0, "c": 0.5}
    assert sample_ids(tied, 1, np.random.default_rng(0)) == ["a"]
    r = Random()
    assert r.select(scores, 4, np.random.default_rng(9)) == r.select(
        dict(reversed(list(scores.items()))), 4, np.random.default_rng(9)
    )


def test_coreset_prefers_spread_out_points() -> None:
    rng = np.random.default_rng(0)
    cluster = rng.normal(0, 0.1, (6, 2))
    far = rng.normal(0, 0.1, (3, 2)) + [10, 0]
    feats = {f"c{i}": v for i, v in enumerate(cluster)}
    feats.update({f"f{i}": v for i, v in enumerate(far)})
    feats["lone"] = np.array([0.0, 10.0])
    picks = Coreset().select(
        {k: 0.0 for k in feats}, 2, rng, features=feats, labelled_features=np.zeros((1, 2))
    )
    assert "lone" in picks and any(p.startswith("f") for p in picks)
    idx = k_center_greedy(np.array([[0.0], [0.1], [5.0], [9.0]]), 2, first=0)
    assert idx == [0, 3]


def test_hybrid_avoids_near_duplicates() -> None:
    feats = {
        "a": np.array([1.0, 1.0]),
        "b": np.array([1.0, 1.0]),
        "c": np.array([0.0, 3.0]),
        "d": np.array([2.0, 0.0]),
    }
    scores = {"a": 10.0, "b": 10.0, "c": 5.0, "d": 1.0}
    picks = Hybrid().select(scores, 2, np.random.default_rng(0), features=feats)
    assert "a" in picks and "b" not in picks  # a top-uncertainty pure ranking picks both
    assert BALD().select(scores, 2, np.random.default_rng(0)) == ["a", "b"]
    assert Hybrid(prefilter=3).select(scores, 2, np.random.default_rng(0), features=feats) == [
        "a",
        "c",
    ]
    # a prefilter of k candidates leaves no choice: diversity needs room
    assert Hybrid(prefilter=0.5).select(scores, 2, np.random.default_rng(0), features=feats) == [
        "a",
        "b",
    ]


def test_k_out_of_range_is_a_clear_error() -> None:
    scores = {"a": 1.0, "b": 2.0, "c": 3.0}
    with pytest.raises(ValueError, match="al.per_round=5 but the pool holds 3 images"):
        sample_ids(scores, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 1"):
        BALD().select(scores, 0, np.random.default_rng(0))
    images = {k: np.zeros((8, 8), np.float32) for k in scores}
    with pytest.raises(ValueError, match="al.per_round=5 but the pool holds 3 images"):
        acquire(Random(), None, images, 5, mc_samples=2, seed=0)


def test_configs_instantiate() -> None:
    for path in sorted(CONF.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        strategy = instantiate(cfg)
        assert strategy.name == path.stem == cfg.name
    power = instantiate(OmegaConf.load(CONF / "bald_power.yaml"))
    assert isinstance(power, BALD) and power.sampling == "power"


def _tiny_net(placement: str = "decoder") -> PaperUNet:
    torch.manual_seed(0)
    return PaperUNet(filters=(4, 8), dropout_placement=placement, dropout_rate=0.5)


def test_acquire_end_to_end() -> None:
    rng = np.random.default_rng(0)
    images = {f"im{i}": rng.random((40, 48)).astype(np.float32) for i in range(4)}
    images["flat"] = np.full((40, 48), 0.5, np.float32)
    net = _tiny_net()
    net.train()
    seen: list[str] = []
    picks, scores = acquire(
        BALD(),
        net,
        images,
        2,
        mc_samples=4,
        seed=1,
        patch=32,
        overlap=8,
        on_image=lambda i, st, pixel_map: seen.append(i),
    )
    assert net.training and all(m.training for m in net.modules())  # modes restored
    assert seen == sorted(images) and set(scores) == set(images)
    assert picks == sorted(scores, key=lambda i: -scores[i])[:2]
    again, scores2 = acquire(BALD(), net, images, 2, mc_samples=4, seed=1, patch=32, overlap=8)
    assert again == picks and scores2 == scores
    # random runs no network at all
    picks_r, scores_r = acquire(Random(), None, images, 3, mc_samples=4, seed=1)
    assert len(set(picks_r)) == 3 and scores_r == {}
    # coreset runs only the deterministic prefix, on the pool and the labelled set
    labelled = {"lab": rng.random((40, 48)).astype(np.float32)}
    picks_c, _ = acquire(
        Coreset(),
        _tiny_net("none"),
        images,
        2,
        mc_samples=4,
        seed=1,
        patch=32,
        overlap=8,
        labelled_images=labelled,
    )
    assert len(set(picks_c)) == 2
    picks_h, _ = acquire(
        Hybrid(),
        net,
        images,
        2,
        mc_samples=3,
        seed=1,
        patch=32,
        overlap=8,
        labelled_images=labelled,
    )
    assert len(set(picks_h)) == 2
    with pytest.raises(ValueError, match="dropout_placement"):
        acquire(BALD(), _tiny_net("none"), images, 1, mc_samples=2, seed=0, patch=32, overlap=8)


class _Scale(torch.nn.Module):
    def forward(self, state):
        return (4 * state[0],)


class _DropToLogits(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, state):
        x = state[0]
        return (torch.cat([torch.zeros_like(x), self.drop(x)], 1),)


class _ToyNet(torch.nn.Module):
    """Deterministic stage, then dropout feeding the foreground logit: only signal can flicker."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList([_Scale(), _DropToLogits()])
        self.bias = torch.nn.Parameter(torch.zeros(1))  # gives the net a device

    def forward(self, x):
        return self.stages[1](self.stages[0]((x,)))[0]


def test_acquire_ranks_flickering_image_first_end_to_end() -> None:
    """Constant-zero input: every MC sample agrees; bright input: dropout flips the answer."""
    images = {
        "dark": np.zeros((16, 16), np.float32),
        "bright": np.ones((16, 16), np.float32),
        "dim": np.full((16, 16), 0.1, np.float32),
    }
    for strategy in (MCDropout(), BALD(), MCDropout(reduction="top_percentile")):
        picks, scores = acquire(
            strategy, _ToyNet(), images, 1, mc_samples=8, seed=0, patch=32, overlap=0
        )
        assert picks == ["bright"]
        assert scores["dark"] == pytest.approx(0.0, abs=1e-9)
        assert scores["bright"] > scores["dim"] > scores["dark"]


def _stack_stats(p1: torch.Tensor) -> PixelStats:
    """PixelStats from an explicit (T, H, W) stack of foreground probabilities."""
    probs = torch.stack([1 - p1, p1], dim=1).double()  # (T, 2, H, W)
    acc = StreamingMoments()
    acc.update(probs[:, None])
    mean, var, ent, mi = (t[0].float() for t in acc.finalize())
    return PixelStats(mean, var, ent, mi, np.zeros(1, np.float32), len(p1), last=p1[-1].float())


def test_std_and_var_rank_many_moderate_pixels_against_one_flipping_pixel_differently():
    T = 20
    flip = torch.full((T, 12, 12), 0.0)
    flip[::2, 0, 0] = 1.0  # one pixel flips between 0 and 1: var 0.25, std 0.5
    moderate = 0.5 + 0.03 * torch.tensor([1.0, -1.0] * (T // 2))[:, None, None].expand(T, 12, 12)
    moderate = moderate.clone()  # 144 pixels at 0.5 +- 0.03: var 9e-4 each, std 0.03
    stats = {"flip": _stack_stats(flip), "moderate": _stack_stats(moderate)}
    var = MCDropout(uncertainty="var")
    std = MCDropout(uncertainty="std")
    var_scores = {k: var.score(s) for k, s in stats.items()}
    std_scores = {k: std.score(s) for k, s in stats.items()}
    assert var_scores["flip"] == pytest.approx(0.25, rel=1e-3)
    assert std_scores["flip"] == pytest.approx(0.5, rel=1e-3)
    assert std_scores["moderate"] == pytest.approx(144 * 0.03, rel=1e-3)
    rng = np.random.default_rng(0)
    assert var.select(var_scores, 1, rng) == ["flip"]  # 0.25 > 144 * 9e-4 = 0.13
    assert std.select(std_scores, 1, rng) == ["moderate"]  # 4.32 > 0.5


def test_paper_exact_weight_is_zero_on_the_last_samples_myelin_and_grows_outside():
    T = 5
    p1 = torch.zeros(T, 1, 9)
    p1[:, 0, 4] = 0.4  # the mean calls nothing myelin ...
    p1[-1, 0, 4] = 0.9  # ... but the last sample does, at x = 4
    p1[:-1, 0, 0] = 0.6  # a pixel uncertain in the other samples, far from it
    stats = _stack_stats(p1)
    strategy = instantiate(OmegaConf.load(CONF / "paper_exact.yaml"))
    assert strategy.mc_samples == 5 and strategy.uncertainty == "std"
    weighted = strategy.pixel_map(stats)[0]
    plain = stats.var[1].sqrt()[0]
    assert weighted[4] == 0 and plain[4] > 0  # zero on the last sample's myelin
    assert weighted[0] == pytest.approx(float(plain[0]), rel=1e-5)  # farthest pixel: weight 1
    assert weighted[2] == pytest.approx(float(plain[2]) * 2 / 4, rel=1e-5)
