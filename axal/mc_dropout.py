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
    labels: torch.Tensor | None = None  # (H, W) uint8 argmax, when the maps were not kept

    @property
    def prediction(self) -> torch.Tensor:
        """(H, W) argmax of the mean probability."""
        return self.labels if self.labels is not None else self.mean.argmax(0)


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


STAT_KEYS = ("mean", "var", "entropy", "mutual_info", "last")


class StatBands:
    """The MC statistics of one image as row bands, top down: ``for y0, maps in bands``.

    The shared accumulation: the prefix once per tile batch, the suffix over chunks of
    repeated state; per-tile statistics are blended (``axal.streaming``) and each band of
    rows leaves as soon as no later tile touches it, so memory is one band of the maps named
    in ``keys`` (float64), not the image's. ``features`` and ``region_features`` are set once
    the bands are exhausted. The RNG is the seed's own across bands (the caller's is left as
    it was between bands), so the result does not depend on what is done with each band.
    """

    def __init__(
        self,
        prefix: Sequence[nn.Module],
        suffix: Sequence[nn.Module],
        image: np.ndarray | torch.Tensor | Any,
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
        keys: Sequence[str] = STAT_KEYS,
        modes: nn.Module | None = None,
    ) -> None:
        from .streaming import Windows, as_rows

        if T < 1 or sample_chunk < 1 or tile_batch < 1:
            raise ValueError(
                f"T={T}, sample_chunk={sample_chunk} and tile_batch={tile_batch} must all be >= 1"
            )
        if not 0 <= overlap < patch:
            raise ValueError(f"tile overlap={overlap} must be in [0, patch={patch})")
        unknown = set(keys) - set(STAT_KEYS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}: choose from {STAT_KEYS}")
        self.prefix, self.suffix, self.T = prefix, suffix, T
        self.tile_batch, self.sample_chunk, self.seed = tile_batch, sample_chunk, seed
        self.device, self.on_suffix_batch, self.keys = device, on_suffix_batch, tuple(keys)
        self.modes = modes  # a network put in MC mode while the bands are computed
        self.source = as_rows(image if hasattr(image, "rows") else _as_image(image))
        h, w = self.source.shape
        self.height = h
        self.win = Windows.of(h, w, patch, overlap, multiple)
        self.weight = blend_weight(self.win.ph, self.win.pw, overlap, device).double()
        self.region_pool = RegionPool(regions) if regions else None
        self._feats: torch.Tensor | None = None
        self._n_tiles = 0
        self._rng: list[torch.Tensor] | None = None
        self.features: np.ndarray | None = None
        self.region_features: np.ndarray | None = None

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """The seed's RNG stream, continued from the last batch; the caller's is restored."""
        cuda = self.device.type == "cuda"
        devices = [self.device] if cuda else []
        with torch.random.fork_rng(devices=devices, enabled=self.seed is not None):
            if self.seed is not None:
                if self._rng is None:
                    torch.manual_seed(self.seed)
                else:
                    torch.set_rng_state(self._rng[0])
                    if cuda:
                        torch.cuda.set_rng_state(self._rng[1], self.device)
            yield
            if self.seed is not None:
                state = [torch.get_rng_state()]
                if cuda:
                    state.append(torch.cuda.get_rng_state(self.device))
                self._rng = state

    def _tiles(self, tiles: torch.Tensor, chunk: Sequence[tuple[int, int]]) -> dict:
        with self._own_rng():
            state = run_stages(self.prefix, (tiles,))
            pooled = _pool_state(state).sum(0)
            self._feats = pooled if self._feats is None else self._feats + pooled
            if self.region_pool is not None:
                self.region_pool.add(state, chunk, self.win.ph, self.win.pw)
            self._n_tiles += len(chunk)
            acc = StreamingMoments()
            T, n = self.T, len(chunk)
            for done in range(0, T, self.sample_chunk):
                s = min(self.sample_chunk, T - done)
                if self.on_suffix_batch is not None:
                    self.on_suffix_batch(s * n)
                margin = run_margin(self.suffix, state, s)
                if margin is not None:
                    acc.update_margin(margin.view(s, n, *margin.shape[1:]))
                else:
                    logits = run_samples(self.suffix, state, s)[0]
                    acc.update_logits(logits.reshape(s, n, *logits.shape[1:]))
                    del logits
                del margin
            mean, var, ent, mi = acc.finalize()
            maps = {"mean": mean, "var": var, "entropy": ent, "mutual_info": mi, "last": acc.last}
            return {k: maps[k] for k in self.keys}

    @staticmethod
    def _finish(sums: dict[str, torch.Tensor], norm: torch.Tensor) -> dict[str, torch.Tensor]:
        denom = norm.clamp_min(1e-12)
        return {k: (v / denom).float().cpu() for k, v in sums.items()}

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        from .streaming import blend_bands

        with mc_mode(self.modes) if self.modes is not None else contextlib.nullcontext():
            yield from self._bands(blend_bands)
        assert self._feats is not None
        self.features = (self._feats / self._n_tiles).float().cpu().numpy()
        if self.region_pool is not None:
            self.region_features = self.region_pool.result()

    def _bands(self, blend_bands: Callable) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        yield from blend_bands(
            self.source,
            self.win,
            self.tile_batch,
            self._tiles,
            self.weight,
            self._finish,
            self.device,
            mode=torch.inference_mode,
            dtype=torch.float32,
            sum_dtype=torch.float64,
        )


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
    """The whole image's statistics: every band of :class:`StatBands`, put together."""
    from .streaming import collect

    bands = StatBands(
        prefix, suffix, image, T, patch, overlap, tile_batch, sample_chunk, seed, device,
        multiple, on_suffix_batch, regions,
    )  # fmt: skip
    out = collect(iter(bands), bands.height)
    assert bands.features is not None
    return PixelStats(
        mean=out["mean"],
        var=out["var"],
        entropy=out["entropy"],
        mutual_info=out["mutual_info"],
        features=bands.features,
        n_samples=T,
        region_features=bands.region_features,
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
    from .streaming import ArrayRows, TileCutter, Windows

    prefix, _ = split_stages(net)
    dev = torch.device(device) if device is not None else _net_device(net)
    if not 0 <= overlap < patch:
        raise ValueError(f"tile overlap={overlap} must be in [0, patch={patch})")
    x = _as_image(image)
    win = Windows.of(int(x.shape[-2]), int(x.shape[-1]), patch, overlap, multiple)
    cutter = TileCutter(ArrayRows(x), win, dev, torch.float32)  # no padded copy of the image
    ph, pw, coords = win.ph, win.pw, win.coords
    total: torch.Tensor | None = None
    region_pool = RegionPool(regions) if regions else None
    with eval_mode(net), torch.inference_mode():
        for i in range(0, len(coords), tile_batch):
            chunk = coords[i : i + tile_batch]
            tiles = cutter.tiles(chunk)
            state = run_stages(prefix, (tiles,))
            if region_pool is not None:
                region_pool.add(state, chunk, ph, pw)
            pooled = _pool_state(state).sum(0)
            total = pooled if total is None else total + pooled
    if region_pool is not None:
        return region_pool.result()
    assert total is not None
    return (total / len(coords)).float().cpu().numpy()
