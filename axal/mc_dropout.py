"""MC-dropout engine: per-pixel predictive statistics of one image, T stochastic passes cheaply.

Dropout only sits in part of the network (``axal.networks``: ``dropout_placement``), and every
stage before the first dropout layer is deterministic. So for each batch of tiles the *prefix*
runs once and only the *suffix* runs T times, ``sample_chunk`` samples at a time; the first
stochastic stage broadcasts the cached state into its dropout masks instead of copying it.
Statistics are accumulated online (running sums of p, p^2 and the per-sample entropy), so memory
is bounded by ``sample_chunk`` whatever T is, and only one image's maps exist at a time.

The naive whole-network path (baal's way: the input repeated in the batch) goes through the very
same accumulation code with an empty prefix; because the prefix consumes no random numbers, both
paths draw identical dropout masks for the same seed and chunking, which the tests exploit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .networks import repeat_samples, run_stages
from .tiling import blend_weight, pad_to, tile_starts

State = tuple[torch.Tensor, ...]
_DROPOUT = nn.modules.dropout._DropoutNd  # Dropout, Dropout1d/2d/3d, AlphaDropout, ...


# --------------------------------------------------------------------------------------------
# modes and stage splitting
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def mc_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm on running stats) with every dropout layer sampling; restores modes."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    for m in net.modules():
        if isinstance(m, _DROPOUT):
            m.train()
    try:
        yield net
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Plain eval mode, restoring each module's previous mode on exit."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield net
    finally:
        for m, training in modes:
            m.training = training


class _Whole(nn.Module):
    """Adapter: a network without ``stages`` as a single stage on the state ``(x,)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, state: State) -> State:
        return (self.net(state[0]),)


def _stages(net: nn.Module) -> list[nn.Module]:
    stages = getattr(net, "stages", None)
    return list(stages) if stages is not None else [_Whole(net)]


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, _DROPOUT) and m.p > 0 for m in module.modules())


def split_stages(net: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(prefix, suffix): the stages before the first one holding active dropout, and the rest.

    A network without ``stages`` is one opaque stage, so nothing is cached. Without any active
    dropout the suffix is empty (see :func:`check_mc_capable`).
    """
    stages = _stages(net)
    for i, stage in enumerate(stages):
        if _has_dropout(stage):
            return stages[:i], stages[i:]
    return stages, []


def check_mc_capable(net: nn.Module) -> None:
    """Raise if the network has no active dropout: all T MC passes would then be identical."""
    if not split_stages(net)[1]:
        raise ValueError(
            "the network has no active dropout layer, so every MC-dropout pass would be "
            "identical; set model.dropout_placement to paper/decoder/head (not none) and "
            "model.dropout_rate > 0, or use a strategy that needs no MC sampling (random, coreset)"
        )


def run_samples(suffix: Sequence[nn.Module], state: State, samples: int) -> State:
    """The suffix on ``samples`` MC draws of one state, sample-major (index = sample * B + b).

    The first stage's ``mc_forward`` (``axal.networks``) avoids copying the state; a stage
    without it gets the state repeated, as baal repeats the input.
    """
    first, rest = suffix[0], suffix[1:]
    mc_forward = getattr(first, "mc_forward", None)
    if mc_forward is not None:
        out = mc_forward(state, samples)
    else:
        out = first(tuple(repeat_samples(t, samples) for t in state))
    return run_stages(rest, out)


def run_margin(suffix: Sequence[nn.Module], state: State, samples: int) -> torch.Tensor | None:
    """Logit 1 - logit 0 of :func:`run_samples`, when the suffix is one stage that offers it.

    The fused two-class head (``axal.networks``, ``head`` placement) computes this margin
    directly at half the cost of both logits; it is all the two-class statistics use.
    """
    mc_margin = getattr(suffix[0], "mc_margin", None) if len(suffix) == 1 else None
    return None if mc_margin is None else mc_margin(state, samples)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


@dataclass
class PixelStats:
    """Per-pixel MC statistics of one image (CPU tensors) and its pooled feature vector.

    ``features``: global average pool of every tensor of the cached prefix state (the output of
    the deterministic stages before the first dropout), concatenated and averaged over tiles.
    What that is depends on the placement: the whole smp encoder pyramid for ``paper``, the last
    decoder map for ``head``; for the naive path (empty prefix) it is the input's mean.
    """

    mean: torch.Tensor  # (C, H, W) mean softmax probability over the T samples
    var: torch.Tensor  # (C, H, W) variance over the T samples of each class probability
    entropy: torch.Tensor  # (H, W) entropy of the mean probability (nats)
    mutual_info: torch.Tensor  # (H, W) BALD: entropy - mean over samples of sample entropy
    features: np.ndarray  # (D,) float32, see above
    n_samples: int
    region_features: np.ndarray | None = None  # (R, D) the same, pooled in each given region
    last: torch.Tensor | None = None  # (H, W) p(foreground) of the last MC sample alone

    @property
    def prediction(self) -> torch.Tensor:
        """(H, W) argmax of the mean probability."""
        return self.mean.argmax(0)


def _entropy(p: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.special.entr(p).sum(dim)


class StreamingMoments:
    """Online sums over MC samples of p, p^2 and the sample entropy, for a batch of tiles.

    Per-sample work stays in float32 (it is the hot path once the prefix is cached); each
    chunk's sums are added into float64 totals, so var = E[p^2] - E[p]^2 does not lose
    precision as T grows. With two classes only the foreground is accumulated (p0 = 1 - p1,
    both classes share one variance), which halves the per-sample work.
    """

    def __init__(self) -> None:
        self.n = 0
        self.binary = False
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None
        self.sh: torch.Tensor | None = None
        self.last: torch.Tensor | None = None  # (B, H, W) p(foreground), latest sample

    def _add(self, s1: torch.Tensor, s2: torch.Tensor, sh: torch.Tensor, n: int) -> None:
        if self.s1 is None:
            self.s1, self.s2, self.sh = s1.double(), s2.double(), sh.double()
        else:
            assert self.s2 is not None and self.sh is not None
            self.s1 += s1
            self.s2 += s2
            self.sh += sh
        self.n += n

    def update(self, probs: torch.Tensor) -> None:
        """Add samples ``probs`` of shape (S, B, C, H, W)."""
        p = probs.float()
        self.last = 1.0 - p[-1, :, 0]
        self._add(p.sum(0), (p * p).sum(0), _entropy(p, 2).sum(0), p.shape[0])

    def update_logits(self, logits: torch.Tensor) -> None:
        """Add samples given as logits (S, B, C, H, W): softmax, or a sigmoid for 2 classes."""
        logits = logits.float()
        if logits.shape[2] != 2:
            self.update(logits.softmax(2))
            return
        self.update_margin(logits[:, :, 1] - logits[:, :, 0])

    def update_margin(self, d: torch.Tensor) -> None:
        """Add two-class samples given as the logit difference d (S, B, H, W); overwrites d."""
        self.binary = True
        # softmax over two classes is the sigmoid of d. Its entropy, with a = |d| and
        # q = sigmoid(-a) <= 1/2 the smaller probability, is
        # softplus(-a) + a * q = a * q - log1p(-q): no term cancels, and log1p is cheaper
        # (in place where possible: fresh large buffers cost page faults on CPU)
        d = d.float()
        p = torch.sigmoid(d)
        self.last = p[-1].clone()
        s1 = p.sum(0)[:, None]
        s2 = p.mul_(p).sum(0)[:, None]  # p itself is not needed after this
        a = d.abs_()
        q = a.neg().sigmoid_()
        h = a.mul_(q).sub_(q.neg_().log1p_())  # a * q - log1p(-q)
        self._add(s1, s2, h.sum(0), p.shape[0])

    def finalize(self) -> tuple[torch.Tensor, ...]:
        """(mean (B,C,H,W), var (B,C,H,W), entropy (B,H,W), mutual_info (B,H,W)), float64."""
        assert self.s1 is not None and self.s2 is not None and self.sh is not None
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean * mean).clamp_min(0)
        if self.binary:  # p0 = 1 - p1 has the same variance
            mean = torch.cat([1 - mean, mean], 1)
            var = torch.cat([var, var], 1)
        ent = _entropy(mean, 1)
        mi = (ent - self.sh / self.n).clamp_min(0)
        return mean, var, ent, mi


# --------------------------------------------------------------------------------------------
# tiled engine
# --------------------------------------------------------------------------------------------


def _as_image(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
    x = x.float()
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"expected an image HxW or (C,H,W), got shape {tuple(x.shape)}")
    return x


def _net_device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _tiles(
    image: torch.Tensor, patch: int, overlap: int, multiple: int
) -> tuple[torch.Tensor, int, int, list[tuple[int, int]]]:
    """Pad the image as ``sliding_window`` does; return it, tile size and tile corners."""
    if not 0 <= overlap < patch:
        raise ValueError(f"tile overlap={overlap} must be in [0, patch={patch})")
    _, h, w = image.shape
    ph = min(patch, -(-h // multiple) * multiple)
    pw = min(patch, -(-w // multiple) * multiple)
    padded = pad_to(image, ph, pw, multiple)
    hh, ww = padded.shape[-2:]
    coords = [(y, x) for y in tile_starts(hh, ph, overlap) for x in tile_starts(ww, pw, overlap)]
    return padded, ph, pw, coords


def _pool_state(state: State) -> torch.Tensor:
    """(B, D): global average pool of every 4-D tensor in the state, concatenated."""
    return torch.cat([t.float().mean(dim=(-2, -1)) for t in state if t.dim() == 4], dim=1)


Region = tuple[int, int, int, int]  # y0, x0, y1, x1 in image pixels


class RegionPool:
    """Average pool of the prefix state inside given image regions (e.g. annotation tiles).

    Each tensor of the state is pooled over the feature-map cells that cover the part of a
    region inside each inference tile (at least one cell, so a region smaller than a deep
    layer's stride still gets that cell's features); tensors are concatenated as in
    :func:`_pool_state`. The network is never run per region.
    """

    def __init__(self, regions: Sequence[Region]) -> None:
        self.regions = list(regions)
        self.sums: list[list[torch.Tensor | None]] = [[] for _ in self.regions]
        self.counts: list[list[int]] = [[] for _ in self.regions]

    def add(self, state: State, corners: Sequence[tuple[int, int]], ph: int, pw: int) -> None:
        maps = [t for t in state if t.dim() == 4]
        for r, (ry0, rx0, ry1, rx1) in enumerate(self.regions):
            if not self.sums[r]:
                self.sums[r] = [None] * len(maps)
                self.counts[r] = [0] * len(maps)
            for j, (y, x) in enumerate(corners):
                iy0, iy1, ix0, ix1 = max(ry0, y), min(ry1, y + ph), max(rx0, x), min(rx1, x + pw)
                if iy0 >= iy1 or ix0 >= ix1:
                    continue
                for m, t in enumerate(maps):
                    fy, fx = ph / t.shape[-2], pw / t.shape[-1]
                    cy0, cx0 = int((iy0 - y) // fy), int((ix0 - x) // fx)
                    cy1 = max(cy0 + 1, math.ceil((iy1 - y) / fy))
                    cx1 = max(cx0 + 1, math.ceil((ix1 - x) / fx))
                    part = t[j, :, cy0:cy1, cx0:cx1].float().sum(dim=(-2, -1))
                    old = self.sums[r][m]
                    self.sums[r][m] = part if old is None else old + part
                    self.counts[r][m] += (cy1 - cy0) * (cx1 - cx0)

    def result(self) -> np.ndarray:
        """(R, D) float32."""
        rows = []
        for sums, counts in zip(self.sums, self.counts):
            if not sums or any(s is None for s in sums):
                raise ValueError("a region lies outside the image")
            rows.append(torch.cat([s / c for s, c in zip(sums, counts)]).cpu().numpy())
        return np.stack(rows).astype(np.float32)


def _run(
    prefix: Sequence[nn.Module],
    suffix: Sequence[nn.Module],
    image: np.ndarray | torch.Tensor,
    T: int,
    patch: int,
    overlap: int,
    tile_batch: int,
    sample_chunk: int,
    seed: int | None,
    device: torch.device,
    multiple: int,
    on_suffix_batch: Callable[[int], None] | None = None,
    regions: Sequence[Region] | None = None,
) -> PixelStats:
    """Shared accumulation: prefix once per tile batch, suffix over chunks of repeated state."""
    if T < 1 or sample_chunk < 1 or tile_batch < 1:
        raise ValueError(
            f"T={T}, sample_chunk={sample_chunk} and tile_batch={tile_batch} must all be >= 1"
        )
    x = _as_image(image).to(device)
    _, h, w = x.shape
    padded, ph, pw, coords = _tiles(x, patch, overlap, multiple)
    hh, ww = padded.shape[-2:]
    weight = blend_weight(ph, pw, overlap, device).double()
    maps: dict[str, torch.Tensor] = {}
    norm = torch.zeros(hh, ww, device=device, dtype=torch.float64)
    feats: torch.Tensor | None = None
    region_pool = RegionPool(regions) if regions else None
    n_tiles = 0
    fork_devices = [device] if device.type == "cuda" else []
    rng = torch.random.fork_rng(devices=fork_devices, enabled=seed is not None)
    with torch.inference_mode(), rng:
        if seed is not None:
            torch.manual_seed(seed)
        for i in range(0, len(coords), tile_batch):
            chunk = coords[i : i + tile_batch]
            tiles = torch.stack([padded[:, y : y + ph, xx : xx + pw] for y, xx in chunk])
            state = run_stages(prefix, (tiles,))
            pooled = _pool_state(state).sum(0)
            feats = pooled if feats is None else feats + pooled
            if region_pool is not None:
                region_pool.add(state, chunk, ph, pw)
            n_tiles += len(chunk)
            acc = StreamingMoments()
            for done in range(0, T, sample_chunk):
                s = min(sample_chunk, T - done)
                if on_suffix_batch is not None:
                    on_suffix_batch(s * len(chunk))
                margin = run_margin(suffix, state, s)
                if margin is not None:
                    acc.update_margin(margin.view(s, len(chunk), *margin.shape[1:]))
                else:
                    logits = run_samples(suffix, state, s)[0]
                    acc.update_logits(logits.reshape(s, len(chunk), *logits.shape[1:]))
                    del logits
                del margin
            mean, var, ent, mi = acc.finalize()
            last = acc.last
            if not maps:
                c = mean.shape[1]
                for key, ch in (
                    ("mean", c),
                    ("var", c),
                    ("entropy", 0),
                    ("mutual_info", 0),
                    ("last", 0),
                ):
                    shape = (ch, hh, ww) if ch else (hh, ww)
                    maps[key] = torch.zeros(shape, device=device, dtype=torch.float64)
            for j, (y, xx) in enumerate(chunk):
                win = (slice(y, y + ph), slice(xx, xx + pw))
                maps["mean"][(slice(None), *win)] += mean[j] * weight
                maps["var"][(slice(None), *win)] += var[j] * weight
                maps["entropy"][win] += ent[j] * weight
                maps["mutual_info"][win] += mi[j] * weight
                maps["last"][win] += last[j] * weight
                norm[win] += weight
            del state, acc, mean, var, ent, mi
    denom = norm.clamp_min(1e-12)
    out = {k: (v / denom)[..., :h, :w].float().cpu() for k, v in maps.items()}
    assert feats is not None
    return PixelStats(
        mean=out["mean"],
        var=out["var"],
        entropy=out["entropy"],
        mutual_info=out["mutual_info"],
        features=(feats / n_tiles).float().cpu().numpy(),
        n_samples=T,
        region_features=region_pool.result() if region_pool is not None else None,
        last=out["last"],
    )


def mc_dropout_stats(
    net: nn.Module,
    image: np.ndarray | torch.Tensor,
    T: int = 20,
    patch: int = 256,
    overlap: int = 32,
    tile_batch: int = 2,
    sample_chunk: int = 2,
    seed: int | None = None,
    device: torch.device | str | None = None,
    multiple: int = 32,
    on_suffix_batch: Callable[[int], None] | None = None,
    cache_prefix: bool = True,
    regions: Sequence[Region] | None = None,
) -> PixelStats:
    """Per-pixel MC-dropout statistics of one image, caching the deterministic prefix.

    The image is tiled as in ``axal.tiling.sliding_window``. Each statistic is computed per tile
    from its T samples, then tiles are blended with ``blend_weight`` (in overlaps the maps are a
    weighted average of per-tile estimates). ``seed`` makes the result deterministic without
    touching the global RNG. The network must already live on ``device`` (default: its own).
    Peak activation memory is ``tile_batch * sample_chunk`` tiles through the suffix.
    ``on_suffix_batch`` (tests, benchmarks) is called with each suffix batch size;
    ``cache_prefix=False`` runs the whole network T times instead (the naive reference).
    ``regions`` (y0, x0, y1, x1) also pool the features inside each region (annotation tiles).
    """
    check_mc_capable(net)
    prefix, suffix = split_stages(net) if cache_prefix else ([], _stages(net))
    dev = torch.device(device) if device is not None else _net_device(net)
    with mc_mode(net):
        return _run(
            prefix,
            suffix,
            image,
            T,
            patch,
            overlap,
            tile_batch,
            sample_chunk,
            seed,
            dev,
            multiple,
            on_suffix_batch,
            regions,
        )


def naive_mc_stats(net: nn.Module, image: np.ndarray | torch.Tensor, **options: Any) -> PixelStats:
    """The baal way: the whole network on the input repeated in the batch (reference/benchmark).

    Same options and accumulation as :func:`mc_dropout_stats`; ``features`` is then only the
    input's mean.
    """
    return mc_dropout_stats(net, image, cache_prefix=False, **options)


def image_features(
    net: nn.Module,
    image: np.ndarray | torch.Tensor,
    patch: int = 256,
    overlap: int = 32,
    tile_batch: int = 4,
    device: torch.device | str | None = None,
    multiple: int = 32,
    regions: Sequence[Region] | None = None,
) -> np.ndarray:
    """The ``PixelStats.features`` vector alone: runs only the deterministic prefix, once.

    Used for coreset (no MC needed) and for the labelled set's features. Without dropout the
    prefix is the whole network, so this pools the logits; with dropout it matches exactly the
    features that :func:`mc_dropout_stats` returns. With ``regions``: (R, D), one row each.
    """
    prefix, _ = split_stages(net)
    dev = torch.device(device) if device is not None else _net_device(net)
    x = _as_image(image).to(dev)
    padded, ph, pw, coords = _tiles(x, patch, overlap, multiple)
    total: torch.Tensor | None = None
    region_pool = RegionPool(regions) if regions else None
    with eval_mode(net), torch.inference_mode():
        for i in range(0, len(coords), tile_batch):
            chunk = coords[i : i + tile_batch]
            tiles = torch.stack([padded[:, y : y + ph, xx : xx + pw] for y, xx in chunk])
            state = run_stages(prefix, (tiles,))
            if region_pool is not None:
                region_pool.add(state, chunk, ph, pw)
            pooled = _pool_state(state).sum(0)
            total = pooled if total is None else total + pooled
    if region_pool is not None:
        return region_pool.result()
    assert total is not None
    return (total / len(coords)).float().cpu().numpy()
