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

    def __init__(
        self,
        reduction: str = "sum",
        percentile: float = 90.0,
        sampling: str = "top",
        beta: float = 1.0,
        name: str | None = None,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"strategy.reduction={reduction!r} is not one of {REDUCTIONS}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"strategy.sampling={sampling!r} is not one of {SAMPLINGS}")
        self.reduction = reduction
        self.percentile = float(percentile)
        self.sampling = sampling
        self.beta = float(beta)
        if name is not None:
            self.name = name

    def pixel_map(self, stats: PixelStats) -> torch.Tensor:
        """(H, W) per-pixel informativeness; also what uncertainty figures show."""
        raise NotImplementedError

    def score(self, stats: PixelStats) -> float:
        return self.reduce(self.pixel_map(stats))

    def reduce(self, pixel_map: torch.Tensor) -> float:
        """One score per image from the strategy's per-pixel map."""
        return reduce_map(pixel_map, self.reduction, self.percentile)

    def select(
        self,
        scores: Mapping[str, float],
        k: int,
        rng: np.random.Generator,
        features: Mapping[str, np.ndarray] | None = None,
        labelled_features: np.ndarray | None = None,
        units: Mapping[str, Unit] | None = None,
        min_distance: float = 0.0,
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

    def __init__(self, name: str | None = None, **_: object) -> None:
        super().__init__(name=name)

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
    """
    ids = sorted(images)
    if units is None:
        units = {i: [Unit(i, 0, 0, *_hw(images[i])[::-1], whole=True)] for i in ids}
    by_id = {u.id: u for i in ids for u in units[i]}
    _check_k(k, len(by_id))
    rng = np.random.default_rng(seed)
    if not strategy.needs_mc and not strategy.needs_features:
        picks = strategy.select({u: 0.0 for u in sorted(by_id)}, k, rng, units=by_id)
        return picks, {}
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
            if on_image is not None:
                on_image(i, stats, pixel_map)
            del stats
        else:
            feats = image_features(net, images[i], regions=regions, **kw)
            for u, f in zip(units[i], feats if regions else feats[None]):
                scores[u.id] = 0.0
                features[u.id] = f
    picks = strategy.select(
        scores,
        k,
        rng,
        features=features,
        labelled_features=labelled,
        units=by_id,
        min_distance=min_distance,
    )
    return picks, (scores if strategy.needs_mc else {})


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
