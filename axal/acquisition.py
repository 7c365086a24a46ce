"""Acquisition strategies: score pool images from MC statistics, then pick k of them.

Strategies see only per-pixel statistics (:class:`axal.mc_dropout.PixelStats`) and pooled
features, never the model or trainer, so they are cheap to test and to swap from the config
(``conf/strategy/*.yaml``). :func:`acquire` is the one place that runs the network: it streams
the pool one image at a time through the MC engine and hands each image's statistics to the
strategy (and to an optional ``on_image`` callback, e.g. to save uncertainty maps).

Every score-based strategy reduces its per-pixel map to one number per image (``reduction``) and
selects by ``sampling``: ``top`` (top-k), ``power`` (p ~ score^beta, Kirsch et al. 2021,
arXiv 2106.12059; BALD + power = PowerBALD) or ``softrank`` (p ~ rank^-beta), the stochastic ones
drawn without replacement by the Gumbel-top-k trick.

Beside the uncertainty scores: label-free typical picks (:class:`TypiClust`), foreground-aware
random (:class:`RandomForeground`), class-stratified power entropy (:class:`ClaSP`) and a
:class:`Schedule` that changes strategy at a given round; ``stratify=subject`` spreads any
strategy's batch over subjects (:func:`select_units`). See docs/strategies.md.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from tqdm.auto import tqdm

from .mc_dropout import (
    PixelStats,
    StatBands,
    _net_device,
    check_mc_capable,
    image_features,
    mc_dropout_stats,
    split_stages,
)
from .pools import Unit

REDUCTIONS = ("sum", "mean", "top_percentile")
SAMPLINGS = ("top", "power", "softrank")
STRATIFY = ("none", "subject")
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# reductions and sampling
# --------------------------------------------------------------------------------------------


def reduce_map(
    values: np.ndarray | torch.Tensor, reduction: str = "sum", percentile: float = 90.0
) -> float:
    """One number per image from a per-pixel map.

    ``sum`` is the paper's (it favours large images), ``mean`` is size-neutral, and
    ``top_percentile`` is the mean of the pixels at or above the ``percentile``-th percentile, so
    a few very uncertain regions are not diluted by a sea of easy background.
    """
    v = values.detach().double().cpu().numpy() if torch.is_tensor(values) else np.asarray(values)
    v = v.astype(np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot reduce an empty uncertainty map")
    if reduction == "sum":
        return float(v.sum())
    if reduction == "mean":
        return float(v.mean())
    if reduction == "top_percentile":
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"strategy.percentile={percentile} must be in [0, 100]")
        q = np.percentile(v, percentile)
        return float(v[v >= q].mean())
    raise ValueError(f"strategy.reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")


def _ranked(scores: Mapping[str, float]) -> list[str]:
    """Ids by decreasing score, ties broken by id so the order never depends on dict order."""
    return sorted(scores, key=lambda i: (-scores[i], i))


def sample_ids(
    scores: Mapping[str, float],
    k: int,
    rng: np.random.Generator,
    sampling: str = "top",
    beta: float = 1.0,
) -> list[str]:
    """Pick ``k`` ids from ``scores`` (higher = more informative) by ``sampling``.

    ``power``: without replacement with p ~ max(score, eps)^beta; ``softrank``: p ~ rank^-beta
    (rank 1 = highest score). Both use Gumbel-top-k (top-k of log p + Gumbel noise), which is
    exactly sequential sampling without replacement, seeded by ``rng``.
    """
    _check_k(k, len(scores))
    bad = [i for i, s in scores.items() if not math.isfinite(s)]
    if bad:
        raise ValueError(f"non-finite acquisition score for image {bad[0]!r}")
    ranked = _ranked(scores)
    if sampling == "top":
        return ranked[:k]
    if beta < 0:
        raise ValueError(f"strategy.beta={beta} must be >= 0")
    if sampling == "power":
        s = np.array([scores[i] for i in ranked], dtype=np.float64)
        logp = beta * np.log(np.clip(s, _EPS, None))
    elif sampling == "softrank":
        logp = -beta * np.log(np.arange(1, len(ranked) + 1, dtype=np.float64))
    else:
        raise ValueError(f"strategy.sampling={sampling!r} is not one of {', '.join(SAMPLINGS)}")
    keys = logp + rng.gumbel(size=len(ranked))
    order = np.argsort(-keys, kind="stable")[:k]
    return [ranked[j] for j in order]


def k_center_greedy(
    features: np.ndarray,
    k: int,
    centers: np.ndarray | None = None,
    first: int = 0,
) -> list[int]:
    """Greedy k-center (Sener & Savarese 2018): repeatedly take the point farthest from all centers.

    ``features`` (N, D) are the candidates, ``centers`` (M, D) already-covered points (the
    labelled set). Without centers the first pick is index ``first``. Returns candidate indices.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}]")
    picks: list[int] = []
    mind = np.full(n, np.inf)
    if centers is not None and len(centers):
        c = np.asarray(centers, dtype=np.float64)
        for row in c:  # streaming over centers keeps memory at O(N)
            mind = np.minimum(mind, np.linalg.norm(x - row, axis=1))
    else:
        picks.append(first)
        mind = np.linalg.norm(x - x[first], axis=1)
    while len(picks) < k:
        mind[picks] = -1.0  # never re-pick (also covers exact duplicates once all else is taken)
        j = int(np.argmax(mind))
        picks.append(j)
        mind = np.minimum(mind, np.linalg.norm(x - x[j], axis=1))
    return picks


def spread_picks(
    order: list[str], k: int, units: Mapping[str, Unit] | None, min_distance: float
) -> list[str]:
    """The first ``k`` of ``order``, skipping units closer than ``min_distance`` (pixels, box
    centre to centre, same image) to an earlier pick of the batch: a batch does not crowd into
    one neighbourhood (Cai et al., IEEE TIP 2021). Skipped units fill the batch if need be.
    """
    if min_distance <= 0 or units is None:
        return order[:k]
    picks: list[str] = []
    skipped: list[str] = []
    for unit_id in order:
        if len(picks) == k:
            break
        u = units[unit_id]
        cy, cx = u.y + u.h / 2, u.x + u.w / 2
        near = any(
            units[p].image == u.image
            and math.hypot(units[p].y + units[p].h / 2 - cy, units[p].x + units[p].w / 2 - cx)
            < min_distance
            for p in picks
        )
        (skipped if near else picks).append(unit_id)
    return picks + skipped[: k - len(picks)]


def check_stratify(stratify: str | None) -> str:
    value = "none" if stratify in (None, False) else str(stratify)
    if value not in STRATIFY:
        raise ValueError(f"strategy.stratify={stratify!r} is not one of {', '.join(STRATIFY)}")
    return value


def _check_k(k: int, n: int) -> None:
    if k < 1:
        raise ValueError(f"al.per_round={k} must be at least 1")
    if k > n:
        raise ValueError(f"al.per_round={k} but the pool holds {n} images")


# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------


class Strategy:
    """Base: a per-pixel map, reduced per image, then sampled. Subclasses define ``pixel_map``."""

    name = "strategy"
    measure = "uncertainty"  # what pixel_map shows, named on the uncertainty figures
    needs_mc = True  # run the MC engine on every pool image
    needs_features = False  # select() needs pooled features (and the labelled set's)
    # the statistics pixel_map reads, pixel by pixel: then the pool is scored in row bands
    # (axal.mc_dropout.StatBands) and only this map is kept whole; None: it needs whole maps
    stats_keys: tuple[str, ...] | None = None
    full_data = False  # the full-data reference: every training unit labelled before round 0

    def __init__(
        self,
        reduction: str = "sum",
        percentile: float = 90.0,
        sampling: str = "top",
        beta: float = 1.0,
        name: str | None = None,
        stratify: str = "none",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"strategy.reduction={reduction!r} is not one of {REDUCTIONS}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"strategy.sampling={sampling!r} is not one of {SAMPLINGS}")
        self.reduction = reduction
        self.percentile = float(percentile)
        self.sampling = sampling
        self.beta = float(beta)
        self.stratify = check_stratify(stratify)
        if name is not None:
            self.name = name

    def for_round(self, round_index: int) -> Strategy:
        """The strategy that picks after round ``round_index`` (a :class:`Schedule` changes)."""
        return self

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        """(H, W) per-pixel informativeness; also what uncertainty figures show."""
        raise NotImplementedError

    def score(self, stats: PixelStats) -> float:
        return self.reduce(self.pixel_map(stats))

    def reduce(self, pixel_map: torch.Tensor) -> float:
        """One score per image from the strategy's per-pixel map."""
        return reduce_map(pixel_map, self.reduction, self.percentile)

    def unit_details(self, stats: PixelStats, slices: tuple[slice, slice]) -> np.ndarray | None:
        """More than one number per unit, handed to ``select`` as ``details`` (none here)."""
        return None

    def select(
        self,
        scores: Mapping[str, float],
        k: int,
        rng: np.random.Generator,
        features: Mapping[str, np.ndarray] | None = None,
        labelled_features: np.ndarray | None = None,
        units: Mapping[str, Unit] | None = None,
        min_distance: float = 0.0,
        **_: object,
    ) -> list[str]:
        """``k`` ids by ``sampling``; with ``min_distance``, spread over each image."""
        if min_distance <= 0:
            return sample_ids(scores, k, rng, self.sampling, self.beta)
        _check_k(k, len(scores))
        order = sample_ids(scores, len(scores), rng, self.sampling, self.beta)
        return spread_picks(order, k, units, min_distance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, {self.reduction}, {self.sampling})"


class Random(Strategy):
    """Uniform random baseline: no scoring pass at all."""

    name = "random"
    measure = "none (random picks)"
    needs_mc = False

    def __init__(self, name: str | None = None, stratify: str = "none", **_: object) -> None:
        super().__init__(name=name, stratify=stratify)

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return torch.zeros_like(stats.entropy)

    def select(self, scores, k, rng, features=None, labelled_features=None, **_) -> list[str]:
        ids = sorted(scores)
        _check_k(k, len(ids))
        return [ids[j] for j in rng.choice(len(ids), size=k, replace=False)]


class Full(Random):
    """The full-data reference: every training unit is labelled before round 0, so there is
    never a pool to pick from; the run trains one model with the same recipe as the others."""

    name = "full"
    full_data = True


def edt_weight(prediction: np.ndarray | torch.Tensor) -> np.ndarray:
    """Range-normalised distance of each pixel to the predicted foreground boundary, in [0, 1].

    A symmetric reading of the paper's ``apply_edt``: uncertainty right at object edges is
    expected (annotators disagree there too), so pixels far from any predicted edge weigh more.
    The distance is the EDT of the foreground mask plus that of its complement (each pixel's
    distance to the other side), min-max normalised; a mask without any edge gives weight 1.
    """
    fg = np.asarray(prediction.cpu() if torch.is_tensor(prediction) else prediction) > 0
    if fg.all() or not fg.any():
        return np.ones(fg.shape, dtype=np.float64)
    dist = ndimage.distance_transform_edt(fg) + ndimage.distance_transform_edt(~fg)
    lo, hi = float(dist.min()), float(dist.max())
    return (dist - lo) / (hi - lo) if hi > lo else np.ones(fg.shape, dtype=np.float64)


def paper_edt_weight(last_probability: np.ndarray | torch.Tensor) -> np.ndarray:
    """The paper's final code: one-sided and from the last MC sample's raw probability.

    Zero on the pixels that sample calls myelin (p > 0.5), growing with the distance into the
    background, divided by its maximum; a sample without myelin gives weight 1 everywhere.
    """
    p = last_probability.cpu().numpy() if torch.is_tensor(last_probability) else last_probability
    fg = np.asarray(p) > 0.5
    if not fg.any():
        return np.ones(fg.shape, dtype=np.float64)
    dist = ndimage.distance_transform_edt(~fg)
    hi = float(dist.max())
    return dist / hi if hi > 0 else np.zeros(fg.shape, dtype=np.float64)


UNCERTAINTIES = ("var", "std")
EDTS = ("none", "symmetric", "paper")


class MCDropout(Strategy):
    """The paper's score: the MC spread of p(foreground), summed over the image.

    ``uncertainty``: ``std`` is the paper's text (the per-pixel standard deviation), ``var`` its
    square. ``edt``: ``symmetric`` weighs by :func:`edt_weight` of the mean prediction,
    ``paper`` by :func:`paper_edt_weight` of the last sample (the paper's final code);
    ``apply_edt=true`` is the older name of ``symmetric``. ``mc_samples`` (e.g. 5, the paper's
    code) overrides ``al.mc_samples`` for this strategy.
    """

    name = "mc_dropout"

    def __init__(
        self,
        apply_edt: bool = False,
        uncertainty: str = "var",
        edt: str = "none",
        mc_samples: int | None = None,
        **kw,
    ) -> None:
        super().__init__(**kw)
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"strategy.uncertainty={uncertainty!r} is not one of {UNCERTAINTIES}")
        if edt not in EDTS:
            raise ValueError(f"strategy.edt={edt!r} is not one of {EDTS}")
        self.uncertainty = uncertainty
        self.edt = "symmetric" if apply_edt and edt == "none" else edt
        self.stats_keys = ("var",) if self.edt == "none" else None  # edt: the whole image
        self.mc_samples = mc_samples
        what = "standard deviation" if uncertainty == "std" else "variance"
        self.measure = f"MC-dropout {what} of p(foreground) (summed over classes if C > 2)"
        if self.edt != "none":
            self.measure += f" x {self.edt} edge-distance weight"

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        spread = stats.var.sqrt() if self.uncertainty == "std" else stats.var
        out = spread[1] if spread.shape[0] == 2 else spread.sum(0)
        if self.edt == "symmetric":
            out = out * torch.from_numpy(edt_weight(stats.prediction)).to(out.dtype)
        elif self.edt == "paper":
            if stats.last is None:
                raise ValueError("strategy.edt=paper needs the last MC sample's probability")
            out = out * torch.from_numpy(paper_edt_weight(stats.last)).to(out.dtype)
        return out


class Entropy(Strategy):
    """Predictive entropy of the mean probability (total uncertainty, aleatoric included)."""

    name = "entropy"
    measure = "predictive entropy (nats)"
    stats_keys = ("entropy",)

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return stats.entropy


class BALD(Strategy):
    """Mutual information between prediction and weights: disagreement between MC samples."""

    name = "bald"
    measure = "BALD (mutual information, nats)"
    stats_keys = ("mutual_info",)

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return stats.mutual_info


class Margin(Strategy):
    """1 - (top1 - top2) of the mean probabilities: small margins = near the decision boundary."""

    name = "margin"
    measure = "1 - margin of the top-2 mean probabilities"
    stats_keys = ("mean",)

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        top2 = stats.mean.topk(2, dim=0).values
        return 1.0 - (top2[0] - top2[1])


_BASES: dict[str, type[Strategy]] = {
    "mc_dropout": MCDropout,
    "entropy": Entropy,
    "bald": BALD,
    "margin": Margin,
}


def _feature_matrix(ids: list[str], features: Mapping[str, np.ndarray] | None) -> np.ndarray:
    if features is None or any(i not in features for i in ids):
        missing = [i for i in ids if features is None or i not in features]
        raise ValueError(f"this strategy needs pooled features; none for image {missing[0]!r}")
    return np.stack([np.asarray(features[i], dtype=np.float64).ravel() for i in ids])


class Coreset(Strategy):
    """k-center greedy on pooled features over labelled + pool: covers the feature space.

    Needs no MC sampling: features come from one deterministic prefix pass
    (:func:`axal.mc_dropout.image_features`). Pass the labelled set's features as
    ``labelled_features`` (``acquire`` computes them from ``labelled_images``); without them the
    first center is the first pool id in sorted order. ``reduction``/``sampling`` are unused.
    """

    name = "coreset"
    measure = "BALD (mutual information, nats; shown only: coreset picks by features)"
    needs_mc = False
    needs_features = True

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return stats.mutual_info  # only for figures; selection ignores it

    def select(self, scores, k, rng, features=None, labelled_features=None, **_) -> list[str]:
        ids = sorted(scores)
        _check_k(k, len(ids))
        x = _feature_matrix(ids, features)
        return [ids[j] for j in k_center_greedy(x, k, labelled_features)]


class Hybrid(Strategy):
    """Uncertainty then diversity: keep the ``prefilter`` most uncertain by ``base``, then k-center.

    ``prefilter``: int = that many images, float in (0, 1] = that share of the pool, None = 3k.
    Two near-identical uncertain images would both top a pure uncertainty ranking; the k-center
    step takes only one of them. Without labelled features, the first center is the top score.
    """

    name = "hybrid"
    needs_features = True

    def __init__(self, base: str = "bald", prefilter: int | float | None = None, **kw) -> None:
        if base not in _BASES:
            raise ValueError(f"strategy.base={base!r} is not one of {sorted(_BASES)}")
        base_kw = {k: v for k, v in kw.items() if k != "name"}
        super().__init__(**kw)
        self.base = _BASES[base](**base_kw)
        self.measure = self.base.measure
        self.stats_keys = self.base.stats_keys
        self.prefilter = prefilter

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return self.base.pixel_map(stats)

    def _n_candidates(self, k: int, n: int) -> int:
        p = self.prefilter
        if p is None:
            m = 3 * k
        elif isinstance(p, float) and p <= 1:
            if p <= 0:
                raise ValueError(f"strategy.prefilter={p} as a share must be in (0, 1]")
            m = math.ceil(p * n)
        else:
            m = int(p)
        return min(n, max(k, m))

    def select(self, scores, k, rng, features=None, labelled_features=None, **_) -> list[str]:
        _check_k(k, len(scores))
        cand = _ranked(scores)[: self._n_candidates(k, len(scores))]
        x = _feature_matrix(cand, features)
        return [cand[j] for j in k_center_greedy(x, k, labelled_features, first=0)]


class RandomForeground(Strategy):
    """Foreground-aware random: draws ``k`` units with p ~ (predicted foreground share)^beta.

    A uniform draw of tiles spends much of the budget on background, which teaches a model
    little; nnActive (Lüth et al. 2025, arXiv 2511.19183) found a foreground-aware random the
    strongest baseline, one no AL method reliably beat. nnActive's version places queries on
    foreground the labels reveal; this one reads no label: each unit's weight is the mean over
    its pixels of the model's mean MC probability of any non-background class (the MC pass of
    :func:`acquire` gives it). A unit predicted as pure background keeps a tiny chance
    (``floor``), so a model that sees no foreground yet still draws from the whole pool.
    """

    name = "random_foreground"
    measure = "predicted foreground probability (mean over MC samples)"

    def __init__(
        self, beta: float = 1.0, floor: float = 1e-3, mc_samples: int | None = None, **kw
    ) -> None:
        kw.setdefault("reduction", "mean")
        kw.pop("sampling", None)
        super().__init__(sampling="power", beta=beta, **kw)
        if floor < 0:
            raise ValueError(f"strategy.floor={floor} must be >= 0")
        self.floor = float(floor)
        self.mc_samples = mc_samples

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return 1.0 - stats.mean[0]

    def reduce(self, pixel_map: torch.Tensor) -> float:
        return reduce_map(pixel_map, self.reduction, self.percentile) + self.floor


def kmeans(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, n_init: int = 3, iters: int = 100
) -> np.ndarray:
    """Cluster labels of the rows of ``x`` by Lloyd's k-means with k-means++ seeds (the best
    of ``n_init`` starts by inertia), seeded by ``rng``; an emptied cluster is reseeded at the
    point farthest from its centre, so every label 0..n_clusters-1 is used when n >= k."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"cannot make {n_clusters} clusters of {n} points")
    sq = (x * x).sum(1)

    def dist2(centres: np.ndarray) -> np.ndarray:
        d = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None]
        return np.clip(d, 0.0, None)

    best, best_inertia = None, np.inf
    for _ in range(max(1, n_init)):
        idx = [int(rng.integers(n))]
        closest = dist2(x[idx])[:, 0]
        for _ in range(1, n_clusters):
            total = closest.sum()
            if total <= 0:  # fewer distinct points than clusters: take any unused one
                j = int(rng.choice(np.setdiff1d(np.arange(n), idx)))
            else:
                j = int(rng.choice(n, p=closest / total))
            idx.append(j)
            closest = np.minimum(closest, dist2(x[[j]])[:, 0])
        centres = x[idx].copy()
        labels = np.full(n, -1)
        for _ in range(iters):
            d = dist2(centres)
            new = d.argmin(1)
            for c in np.setdiff1d(np.arange(n_clusters), new):  # an empty cluster
                counts = np.bincount(new, minlength=n_clusters)
                movable = np.flatnonzero(counts[new] > 1)  # never empty another cluster
                new[movable[int(d[movable, new[movable]].argmax())]] = c
            if np.array_equal(new, labels):
                break
            labels = new
            centres = np.stack([x[labels == c].mean(0) for c in range(n_clusters)])
        inertia = float(dist2(centres)[np.arange(n), labels].sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    assert best is not None
    return best


def typicality(x: np.ndarray, knn: int = 20) -> np.ndarray:
    """TypiClust's typicality of each row: 1 / mean distance to its ``knn`` nearest other rows
    (fewer when the set is smaller); a lone point is maximally typical."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 1:
        return np.array([np.inf])
    k = max(1, min(int(knn), n - 1))
    sq = (x * x).sum(1)
    d = np.sqrt(np.clip(sq[:, None] - 2.0 * x @ x.T + sq[None], 0.0, None))
    np.fill_diagonal(d, np.inf)
    nearest = np.partition(d, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(1) + _EPS)


def normalise_features(x: np.ndarray) -> np.ndarray:
    """Each feature standardised over the rows (no pyramid level dominates by its scale), then
    each row scaled to unit length, as TypiClust does with its self-supervised embeddings."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class TypiClust(Strategy):
    """TypiClust (Hacohen et al. 2022, arXiv 2202.02794): the most typical unit of each of the
    largest clusters that hold no labelled unit. Reads no label and no uncertainty.

    Labelled and pool units are clustered together by k-means into ``labelled + k`` clusters
    (at most ``max_clusters``, the paper's 500). Clusters without a labelled unit come first,
    largest first, then the others; clusters smaller than ``min_cluster_size`` are left out
    (the paper's 5: outliers are what low budgets must avoid) unless none is larger. From each
    cluster in turn the unit with the highest typicality (1 / mean distance to its ``knn``
    nearest pool neighbours in the cluster, the paper's 20) is picked, so every uncovered
    cluster gives one unit before any gives two. Low budgets gain from typical picks; Chen et
    al. (arXiv 2210.02442) find the first uncertainty queries lose to random by picking outliers.

    Features: the same per-unit vector as ``coreset`` (:func:`axal.mc_dropout.image_features`:
    the deterministic prefix of the current model, for the default ``paper`` dropout placement
    the whole encoder pyramid, average-pooled inside each unit), standardised per feature and
    scaled to unit length. The current model's encoder is used rather than a self-supervised
    one because axal trains none, the encoder has just been fitted to this very data, and it is
    already computed per unit for coreset. No MC pass runs.
    """

    name = "typiclust"
    measure = "none (typical picks of feature clusters)"
    needs_mc = False
    needs_features = True

    def __init__(
        self,
        knn: int = 20,
        min_cluster_size: int = 5,
        max_clusters: int = 500,
        n_init: int = 3,
        **kw,
    ) -> None:
        super().__init__(**kw)
        if knn < 1 or max_clusters < 1 or n_init < 1:
            raise ValueError(
                f"strategy.knn={knn}, max_clusters={max_clusters} and n_init={n_init} must be >= 1"
            )
        self.knn, self.min_cluster_size = int(knn), int(min_cluster_size)
        self.max_clusters, self.n_init = int(max_clusters), int(n_init)

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return torch.zeros_like(stats.entropy)

    def select(self, scores, k, rng, features=None, labelled_features=None, **_) -> list[str]:
        ids = sorted(scores)
        _check_k(k, len(ids))
        picks = self.pick(_feature_matrix(ids, features), k, rng, labelled_features)
        return [ids[j] for j in picks]

    def pick(
        self,
        pool: np.ndarray,
        k: int,
        rng: np.random.Generator,
        labelled: np.ndarray | None = None,
    ) -> list[int]:
        """Indices of ``k`` rows of ``pool`` (features), given the ``labelled`` rows."""
        n_lab = 0 if labelled is None else len(labelled)
        x = pool if not n_lab else np.concatenate([labelled, pool])
        x = normalise_features(x)
        n_clusters = min(n_lab + k, self.max_clusters, len(x))
        labels = kmeans(x, n_clusters, rng, n_init=self.n_init)
        covered = np.bincount(labels[:n_lab], minlength=n_clusters)
        sizes = np.bincount(labels, minlength=n_clusters)
        order = sorted(range(n_clusters), key=lambda c: (covered[c], -sizes[c], c))
        big = [c for c in order if sizes[c] >= self.min_cluster_size]
        order = big or order
        members = {c: list(np.flatnonzero(labels[n_lab:] == c)) for c in order}
        picks: list[int] = []
        while len(picks) < k:
            progressed = False
            for c in order:
                if len(picks) == k:
                    break
                left = members[c]
                if not left:
                    continue
                j = left[int(np.argmax(typicality(x[n_lab:][left], self.knn)))]
                picks.append(int(j))
                left.remove(j)
                progressed = True
            if not progressed:  # every kept cluster is exhausted: the left-out small ones
                taken = set(picks)
                picks += [j for j in range(len(pool)) if j not in taken][: k - len(picks)]
        return picks


class Schedule(Strategy):
    """``first`` picks after rounds 0..switch_after-1, ``then`` after every later round: e.g.
    typical picks while the model is weak, uncertain ones once it is not (the round index
    reaches the strategy through :func:`acquire`)."""

    name = "schedule"

    def __init__(
        self, first: Strategy, then: Strategy, switch_after: int = 2, stratify: str = "none", **kw
    ) -> None:
        super().__init__(stratify=stratify, name=kw.get("name"))
        for part, role in ((first, "first"), (then, "then")):
            if not isinstance(part, Strategy):
                raise ValueError(f"strategy.{role} must be a strategy config with a _target_")
        if switch_after < 0:
            raise ValueError(f"strategy.switch_after={switch_after} must be >= 0")
        self.first, self.then, self.switch_after = first, then, int(switch_after)
        self.needs_mc = first.needs_mc or then.needs_mc
        self.needs_features = first.needs_features or then.needs_features
        self.measure = f"{first.measure}, then {then.measure}"

    def for_round(self, round_index: int) -> Strategy:
        return self.first if round_index < self.switch_after else self.then

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return self.then.pixel_map(stats)

    def select(self, scores, k, rng, round_index: int = 0, **kw) -> list[str]:
        return self.for_round(round_index).select(scores, k, rng, round_index=round_index, **kw)

    def __repr__(self) -> str:
        return f"Schedule({self.first!r} for rounds < {self.switch_after}, then {self.then!r})"


class ClaSP(Strategy):
    """Class-stratified, power-noised predictive entropy, its noise decaying over the rounds:
    after ClaSP PE (Lüth, Traub et al. 2026, arXiv 2601.13677, in nnActive), the one method that
    beat an improved random baseline across nnActive's settings.

    Each unit gets one entropy score per class: the predictive entropy summed over the pixels
    the mean prediction assigns to that class (classes 1.. only with ``background=false``). The
    batch takes turns between the classes, so a rare class (axon, or myelin in a mostly
    background tile) gets its share of the picks; within a class, units are drawn by power
    sampling, p ~ score^beta_r (Gumbel-top-k, log scale), with beta_r = beta * growth^round up
    to ``beta_max``: noisy, diverse picks early, close to top-k later. The recorded score is
    the unit's total entropy.
    """

    name = "clasp"
    measure = "predictive entropy (nats); picks stratified by predicted class"

    def __init__(
        self,
        beta: float = 1.0,
        growth: float = 2.0,
        beta_max: float = 64.0,
        background: bool = True,
        **kw,
    ) -> None:
        kw.pop("sampling", None)
        super().__init__(sampling="power", beta=beta, **kw)
        if beta < 0 or growth < 1 or beta_max < beta:
            raise ValueError(
                f"strategy.beta={beta} must be >= 0, growth={growth} >= 1, beta_max >= beta"
            )
        self.growth, self.beta_max, self.background = float(growth), float(beta_max), background

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        return stats.entropy

    def unit_details(self, stats: PixelStats, slices: tuple[slice, slice]) -> np.ndarray:
        entropy = stats.entropy[slices].double()
        predicted = stats.prediction[slices]
        n = stats.mean.shape[0]
        return np.array([float(entropy[predicted == c].sum()) for c in range(n)])

    def beta_at(self, round_index: int) -> float:
        return min(self.beta * self.growth ** max(int(round_index), 0), self.beta_max)

    def select(self, scores, k, rng, details=None, round_index: int = 0, **_) -> list[str]:
        ids = sorted(scores)
        _check_k(k, len(ids))
        if not details or any(i not in details for i in ids):
            raise ValueError("strategy=clasp needs per-class entropies of every unit (acquire)")
        per_class = np.stack([details[i] for i in ids])  # (N, C)
        classes = list(range(0 if self.background else 1, per_class.shape[1]))
        beta = self.beta_at(round_index)
        orders = []
        for c in classes:
            keys = beta * np.log(np.clip(per_class[:, c], _EPS, None)) + rng.gumbel(size=len(ids))
            orders.append(list(np.argsort(-keys, kind="stable")))
        picks: list[int] = []
        taken: set[int] = set()
        while len(picks) < k:
            for order in orders:
                while order and order[0] in taken:
                    order.pop(0)
                if order and len(picks) < k:
                    j = int(order.pop(0))
                    picks.append(j)
                    taken.add(j)
        return [ids[j] for j in picks]


def subject_quotas(groups: Mapping[str, list[str]], k: int, order: list[str]) -> dict[str, int]:
    """Round-robin over the subjects in ``order``: one pick each while any has units left,
    until ``k``: every subject gets k // S picks or all its units, the first ones one more."""
    quota = {g: 0 for g in groups}
    left = k
    while left:
        before = left
        for g in order:
            if left and quota[g] < len(groups[g]):
                quota[g] += 1
                left -= 1
        if left == before:
            break
    return quota


def select_units(
    strategy: Strategy,
    scores: Mapping[str, float],
    k: int,
    rng: np.random.Generator,
    subjects: Mapping[str, str] | None = None,
    **kw,
) -> list[str]:
    """``strategy.select``, or with ``strategy.stratify=subject`` once per subject.

    ``subjects`` maps each unit id to its subject. Stratified, the batch is spread over the
    subjects round-robin (:func:`subject_quotas`; subjects ordered by their best score, ties
    at random, so random strategies rotate the extra picks), each subject's share is picked by
    the strategy among that subject's units, and the picks are interleaved subject by subject.
    """
    _check_k(k, len(scores))
    if strategy.stratify == "none":
        return strategy.select(scores, k, rng, **kw)
    if subjects is None or any(u not in subjects for u in scores):
        raise ValueError("strategy.stratify=subject needs the subject of every pool unit")
    groups: dict[str, list[str]] = {}
    for u in sorted(scores):
        groups.setdefault(subjects[u], []).append(u)
    names = sorted(groups)
    tie = rng.permutation(len(names))
    best = {g: max(scores[u] for u in groups[g]) for g in names}
    order = sorted(names, key=lambda g: (-best[g], tie[names.index(g)]))
    quota = subject_quotas(groups, k, order)
    per = {
        g: strategy.select({u: scores[u] for u in groups[g]}, quota[g], rng, **kw)
        for g in order
        if quota[g]
    }
    picks: list[str] = []
    for j in range(max(quota.values())):
        picks += [per[g][j] for g in order if g in per and j < len(per[g])]
    return picks


# --------------------------------------------------------------------------------------------
# the acquisition loop
# --------------------------------------------------------------------------------------------


def image_seed(seed: int, image_id: str) -> int:
    """Per-image MC seed: stable across runs and independent of the pool's other members."""
    return (int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % (2**63 - 1)


def _regions(units: list[Unit]) -> list[tuple[int, int, int, int]] | None:
    """Engine regions of an image's units; None when the unit is the whole image."""
    if len(units) == 1 and units[0].whole:
        return None
    return [(u.y, u.x, u.y + u.h, u.x + u.w) for u in units]


def acquire(
    strategy: Strategy,
    net: nn.Module,
    images: Mapping[str, np.ndarray | torch.Tensor],
    k: int,
    *,
    mc_samples: int,
    seed: int,
    units: Mapping[str, list[Unit]] | None = None,
    patch: int = 256,
    overlap: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
    on_image: Callable[[str, PixelStats, torch.Tensor], None] | None = None,
    labelled_images: Mapping[str, np.ndarray | torch.Tensor] | None = None,
    labelled_units: Mapping[str, list[Unit]] | None = None,
    tile_batch: int = 2,
    sample_chunk: int = 2,
    min_distance: float = 0.0,
    round_index: int = 0,
    subjects: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, float]]:
    """Score every pool unit and pick ``k`` unit ids; returns (picks, scores by unit id).

    ``units`` (image id -> its unlabelled units; default: each image is one unit) lets one MC
    pass per image score all of its tiles: the strategy's per-pixel map is reduced inside each
    unit's box. ``random`` runs no pass and returns empty scores; ``coreset`` runs only the
    deterministic prefix (features, pooled per unit) on the pool and on ``labelled_images``
    (their ``labelled_units``); the others run the MC engine with ``mc_samples`` passes and a
    per-image seed derived from ``seed``, call ``on_image(id, stats, pixel_map)`` (e.g. to keep
    small copies of the maps for figures of the chosen images, without recomputing) and drop
    the stats before the next image. The network's train/eval modes are restored afterwards.
    ``round_index`` (the round whose model scores) picks the part of a :class:`Schedule`;
    ``subjects`` (image id -> subject) serves ``strategy.stratify=subject``.
    """
    outer, strategy = strategy, strategy.for_round(round_index)
    ids = sorted(images)
    if units is None:
        units = {i: [Unit(i, 0, 0, *_hw(images[i])[::-1], whole=True)] for i in ids}
    by_id = {u.id: u for i in ids for u in units[i]}
    _check_k(k, len(by_id))
    rng = np.random.default_rng(seed)
    unit_subjects = (
        None
        if subjects is None
        else {u: subjects[by_id[u].image] for u in by_id if by_id[u].image in subjects}
    )

    def select(scores: dict[str, float], **kw: object) -> list[str]:
        return select_units(
            outer,
            scores,
            k,
            rng,
            subjects=unit_subjects,
            units=by_id,
            round_index=round_index,
            **kw,
        )

    if not strategy.needs_mc and not strategy.needs_features:
        return select({u: 0.0 for u in sorted(by_id)}), {}
    kw = dict(patch=patch, overlap=overlap, tile_batch=tile_batch, device=device)
    labelled = None
    if strategy.needs_features and labelled_images:
        rows = []
        for i in sorted(labelled_images):
            own = (labelled_units or {}).get(i)
            f = image_features(
                net, labelled_images[i], regions=_regions(own) if own else None, **kw
            )
            rows.append(f if f.ndim == 2 else f[None])
        labelled = np.concatenate(rows)
    scores: dict[str, float] = {}
    features: dict[str, np.ndarray] = {}
    details: dict[str, np.ndarray] = {}
    bar = tqdm(ids, desc=f"scoring pool ({strategy.name})", unit="img", disable=not progress)
    for i in bar:
        regions = _regions(units[i])
        if strategy.needs_mc:
            T = getattr(strategy, "mc_samples", None) or mc_samples
            options = dict(T=T, sample_chunk=sample_chunk, seed=image_seed(seed, i), **kw)
            if strategy.stats_keys is not None:
                stats, pixel_map = banded_pixel_map(strategy, net, images[i], regions, **options)
            else:
                stats = mc_dropout_stats(net, images[i], regions=regions, **options)
                pixel_map = strategy.pixel_map(stats)  # computed once: scored, then shown
            feats = stats.region_features if regions else stats.features[None]
            for u, f in zip(units[i], feats):
                scores[u.id] = strategy.reduce(pixel_map[u.slices])
                features[u.id] = f
                extra = strategy.unit_details(stats, u.slices)
                if extra is not None:
                    details[u.id] = extra
            if on_image is not None:
                on_image(i, stats, pixel_map)
            del stats
        else:
            feats = image_features(net, images[i], regions=regions, **kw)
            for u, f in zip(units[i], feats if regions else feats[None]):
                scores[u.id] = 0.0
                features[u.id] = f
    picks = select(
        scores,
        features=features,
        labelled_features=labelled,
        min_distance=min_distance,
        details=details,
    )
    return picks, (scores if strategy.needs_mc else {})


def typical_units(
    net: nn.Module,
    images: Mapping[str, np.ndarray | torch.Tensor],
    unit_ids: list[str],
    k: int,
    seed: int,
    *,
    patch: int = 256,
    overlap: int = 32,
    device: torch.device | str | None = None,
) -> list[str]:
    """``k`` of ``unit_ids`` by :class:`TypiClust` on ``net``'s pooled features, with nothing
    labelled: a label-free initial set (``al.initial_pick=typical``), before any model is
    trained, so ``net`` is the round-0 model at its initial weights."""
    shapes = {i: _hw(im) for i, im in images.items()}
    by_image: dict[str, list[Unit]] = {}
    for unit_id in unit_ids:
        unit = Unit.parse(unit_id, shapes)
        by_image.setdefault(unit.image, []).append(unit)
    features: dict[str, np.ndarray] = {}
    for i in sorted(by_image):
        regions = _regions(by_image[i])
        f = image_features(
            net, images[i], patch=patch, overlap=overlap, regions=regions, device=device
        )
        for u, row in zip(by_image[i], f if regions else f[None]):
            features[u.id] = row
    rng = np.random.default_rng([int(seed), 11])
    return TypiClust().select({u: 0.0 for u in unit_ids}, k, rng, features=features)


def banded_pixel_map(
    strategy: Strategy,
    net: nn.Module,
    image: np.ndarray | torch.Tensor,
    regions: list[tuple[int, int, int, int]] | None,
    *,
    T: int,
    seed: int,
    patch: int,
    overlap: int,
    tile_batch: int,
    sample_chunk: int,
    device: torch.device | str | None = None,
) -> tuple[PixelStats, torch.Tensor]:
    """(stats, pixel map) of one image, the MC statistics computed in row bands: the strategy's
    map is made band by band from the statistics it reads (``stats_keys``), so only it and
    the predicted classes (uint8) are image-sized, not the float64 maps of every statistic.
    The map equals ``strategy.pixel_map(mc_dropout_stats(...))`` exactly; ``stats`` holds the
    features and ``labels``, no per-pixel statistics."""
    check_mc_capable(net)
    prefix, suffix = split_stages(net)
    dev = torch.device(device) if device is not None else _net_device(net)
    keys = tuple(dict.fromkeys((*strategy.stats_keys, "mean")))  # mean: the shown prediction
    bands = StatBands(
        prefix, suffix, image, T, patch, overlap, tile_batch, sample_chunk, seed, dev, 32,
        regions=regions, keys=keys, modes=net,
    )  # fmt: skip
    h, w = bands.source.shape
    pixel_map: torch.Tensor | None = None
    labels = torch.empty((h, w), dtype=torch.uint8)
    for y0, maps in bands:
        band = PixelStats(
            mean=maps["mean"],
            var=maps.get("var"),
            entropy=maps.get("entropy"),
            mutual_info=maps.get("mutual_info"),
            features=bands.features,  # not known before the last band
            n_samples=T,
            last=maps.get("last"),
        )  # type: ignore[arg-type]
        part = strategy.pixel_map(band)
        if pixel_map is None:
            pixel_map = torch.empty((h, w), dtype=part.dtype)
        pixel_map[y0 : y0 + part.shape[0]] = part
        labels[y0 : y0 + part.shape[0]] = band.mean.argmax(0).to(torch.uint8)
    assert pixel_map is not None and bands.features is not None
    stats = PixelStats(
        mean=None,
        var=None,
        entropy=None,
        mutual_info=None,
        features=bands.features,
        n_samples=T,
        region_features=bands.region_features,
        labels=labels,
    )  # type: ignore[arg-type]
    return stats, pixel_map


def _hw(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    h, w = image.shape[-2:]
    return int(h), int(w)
