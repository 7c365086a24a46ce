"""U-Net networks written as a sequence of stages, so MC dropout can cache the deterministic prefix.

Every network here is an ``nn.Module`` whose forward is ``stages`` applied in order to a *state*:
a tuple of tensors that all share the batch dimension (the current activation first, then the
skip connections still needed). The MC-dropout engine (``axal.mc_dropout``) runs the stages before
the first dropout layer once per input and only the rest T times; this file decides where dropout
sits (``dropout_placement``) and therefore how much can be cached.

A stage holding dropout also offers ``mc_forward(state, samples)``: its output for ``samples`` MC
draws at once, sample-major. It runs its own deterministic part (a decoder block's convolutions
before its dropout) once, and lets the dropout broadcast its input into the masked output rather
than copying the state ``samples`` times; ``forward`` is ``mc_forward(state, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn

State = tuple[torch.Tensor, ...]
PLACEMENTS = ("paper", "decoder", "head", "none")


def _check_placement(placement: str, rate: float) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(
            f"model.dropout_placement={placement!r} is not one of {', '.join(PLACEMENTS)}"
        )
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"model.dropout_rate={rate} must be in [0, 1)")


class ByteDropout(nn.Dropout):
    """``nn.Dropout`` whose masks, at inference (MC sampling), come from random bytes.

    On CPU, ``F.dropout`` draws one float per element (Bernoulli) and dominates the cost of
    the stochastic suffix when it is short (``head`` placement). Here each element costs one
    random byte, so the rate is rounded to a multiple of 1/256 (0.2 -> 51/256 = 0.199) and kept
    activations are scaled by the matching 1/(1 - p). Training (autograd on) uses
    ``F.dropout`` unchanged.
    """

    def sampling(self) -> bool:
        """True when this layer draws MC masks (dropout on, no autograd)."""
        return self.training and self.p > 0 and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sampling():
            return super().forward(x)
        return self.sample(x, 1)

    @property
    def threshold(self) -> int:
        """A byte below this drops its element: the rate in 1/256ths."""
        return min(256, round(self.p * 256))

    @property
    def scale(self) -> float:
        """Factor on kept activations, 1 / (1 - threshold / 256); 0 when all are dropped."""
        return 0.0 if self.threshold >= 256 else 256.0 / (256 - self.threshold)

    def keep_mask(self, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """A fresh 0/1 ``uint8`` mask of ``shape`` (1 = keep), one random byte per element.

        A uint8 clamp is ~10x cheaper on CPU than a comparison producing ``bool``, and a uint8
        mask multiplies into float activations without a conversion pass.
        """
        t = self.threshold
        if t == 0 or t >= 256:
            return torch.full(tuple(shape), int(t == 0), dtype=torch.uint8, device=device)
        keep = random_bytes(math.prod(shape), device).view(tuple(shape))
        return keep.clamp_(t - 1, t).sub_(t - 1)

    def sample(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """``samples`` masked copies of ``x``, sample-major ``(samples * B, ...)``.

        ``x`` is scaled once and broadcast into the masked output, so the MC engine never
        materialises ``x`` repeated ``samples`` times; the masks are the bytes that ``forward``
        would draw for that repeated batch, in the same order.
        """
        keep = self.keep_mask((samples, *x.shape), x.device)
        return (keep * (x * self.scale)).flatten(0, 1)


def random_bytes(n: int, device: torch.device) -> torch.Tensor:
    """``n`` uniform random bytes, reproducible under ``torch.manual_seed``.

    On CPU, torch's Mersenne Twister fills bytes at about half the speed of numpy's SFC64, and
    MC sampling spends a large share of its time here; so one 63-bit seed is drawn from torch's
    generator and numpy's SFC64 fills the bytes. Other devices use their own torch generator.
    """
    words = (n + 7) // 8
    if device.type == "cpu":
        seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64))
        raw = np.random.SFC64(seed).random_raw(words)
        return torch.from_numpy(raw.view(np.uint8)[:n])
    out = torch.empty(words, dtype=torch.int64, device=device)
    out.random_(-(2**63), 2**63 - 1)  # the full range: every byte uniform on 0..255
    return out.view(torch.uint8)[:n]


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution computed as a batched matrix product.

    Same parameters and checkpoints as ``nn.Conv2d(cin, cout, 1)``, but on CPU oneDNN runs a
    1x1 convolution with a handful of channels ~15x slower than ``baddbmm``; as the segmentation
    head it runs T times per tile during MC sampling.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        weight = self.weight.view(1, self.out_channels, self.in_channels)
        flat = x.reshape(b, self.in_channels, h * w)
        if self.bias is None:
            out = torch.matmul(weight, flat)
        else:
            bias = self.bias.view(1, self.out_channels, 1).expand(b, -1, -1)
            out = torch.baddbmm(bias, weight.expand(b, -1, -1), flat)
        return out.view(b, self.out_channels, h, w)

    def masked(
        self, x: torch.Tensor, keep: torch.Tensor, scale: float, margin: bool = False
    ) -> torch.Tensor:
        """``forward`` of ``keep * x * scale`` for masks ``keep`` (S, B, C, H, W), x (B, C, H, W).

        Output sample-major (S * B, out, H, W). Dropout followed by this layer is linear in the
        mask, so each output map accumulates ``W[o, c] * scale * keep[c] * x[c]`` in place: the
        masked input (in_channels maps per sample) is never materialised. ``margin=True`` (two
        outputs only) gives logit 1 - logit 0 instead, (S * B, H, W), at half the work: it is
        all that two-class statistics need.
        """
        samples, (b, cin, h, w) = keep.shape[0], x.shape
        weight = self.weight.view(self.out_channels, cin)
        bias = self.bias
        if margin:
            if self.out_channels != 2:
                raise ValueError(f"a logit margin needs 2 output channels, not {weight.shape[0]}")
            weight = weight[1:] - weight[:1]
            bias = None if bias is None else bias[1:] - bias[:1]
        cout = weight.shape[0]
        if bias is None:
            out = x.new_zeros(samples, b, cout, h, w)
        else:
            out = bias.view(1, 1, cout, 1, 1).expand(samples, b, cout, h, w).clone()
        weights = (weight * scale).tolist()
        kept = x.new_empty(samples, b, h, w)
        for c in range(cin):
            kept.copy_(keep[:, :, c])  # to float once per channel, shared by every output map
            for o in range(cout):
                out[:, :, o].addcmul_(kept, x[:, c], value=weights[o][c])
        return out.flatten(0, 1)[:, 0] if margin else out.flatten(0, 1)


def repeat_samples(t: torch.Tensor, samples: int) -> torch.Tensor:
    """``t`` repeated along the batch, sample-major (index = sample * B + item)."""
    return t if samples == 1 else t.repeat(samples, *([1] * (t.dim() - 1)))


def sample_dropout(drop: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """``drop`` applied to ``x`` repeated ``samples`` times, without the copy when it can."""
    if samples > 1 and isinstance(drop, ByteDropout) and drop.sampling():
        return drop.sample(x, samples)
    return drop(repeat_samples(x, samples))


def _dropout(active: bool, rate: float) -> nn.Module:
    return ByteDropout(rate) if active and rate > 0 else nn.Identity()


class StagedNet(nn.Module):
    """Base: ``forward`` runs ``self.stages`` on the state ``(x,)`` and returns the logits."""

    stages: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages, (x,))[0]


def run_stages(stages: Sequence[nn.Module], state: State) -> State:
    for stage in stages:
        state = stage(state)
    return state


# --------------------------------------------------------------------------------------------
# smp U-Net, split into encoder | center | decoder blocks | head
# --------------------------------------------------------------------------------------------


class _SmpEncoderStage(nn.Module):
    """Runs the (opaque) smp encoder and returns all its feature maps, input first."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, state: State) -> State:
        return tuple(self.encoder(state[0]))


class _SmpDropStage(nn.Module):
    """The paper's "dropout after each pooling and at the bottleneck", for smp encoders.

    smp encoders are opaque (their pooling happens inside), so this drops each feature map at
    stride >= 2 as it leaves the encoder, the bottleneck included; the full-resolution skip stays
    intact. As a stage of its own it lets the MC engine cache the whole encoder.
    """

    def __init__(self, n: int, rate: float) -> None:
        super().__init__()
        self.drops = nn.ModuleList(_dropout(i >= 2, rate) for i in range(n))

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def mc_forward(self, state: State, samples: int) -> State:
        return tuple(sample_dropout(drop, f, samples) for drop, f in zip(self.drops, state))


class _SmpCenterStage(nn.Module):
    """Prepares the decoder state: (bottleneck after ``center``, skips deepest first)."""

    def __init__(self, center: nn.Module) -> None:
        super().__init__()
        self.center = center

    def forward(self, state: State) -> State:
        feats = state[1:]  # smp drops the full-resolution input "feature"
        head, skips = feats[-1], feats[:-1][::-1]
        # the input stays last: the final block upsamples to its size
        return (self.center(head), *skips, state[0])


class _SmpBlockStage(nn.Module):
    """One decoder block: upsample, concatenate the next skip, convolve (then optional dropout)."""

    def __init__(self, block: nn.Module, has_skip: bool, rate: float, active: bool) -> None:
        super().__init__()
        self.block = block
        self.has_skip = has_skip
        self.drop = _dropout(active, rate)

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def mc_forward(self, state: State, samples: int) -> State:
        # state = (x, remaining skips deepest first, network input): the next element sets the
        # output size, and is concatenated as the skip when this block has one
        x, target, rest = state[0], state[1], state[2:]
        height, width = target.shape[-2:]
        x = self.block(x, height, width, skip_connection=target if self.has_skip else None)
        return (sample_dropout(self.drop, x, samples), *(repeat_samples(t, samples) for t in rest))


class _HeadStage(nn.Module):
    """Dropout, then the segmentation head. When MC sampling into a 1x1 head, the two are fused
    (``PointwiseConv2d.masked``): per sample, only the masks and the head's multiply-adds run."""

    def __init__(self, head: nn.Module, rate: float, active: bool) -> None:
        super().__init__()
        self.drop = _dropout(active, rate)
        self.head = head

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def _fused(self) -> bool:
        drop, head = self.drop, self.head
        return (
            isinstance(drop, ByteDropout) and drop.sampling() and isinstance(head, PointwiseConv2d)
        )

    def _masked_head(self, x: torch.Tensor, samples: int, margin: bool) -> torch.Tensor:
        keep = self.drop.keep_mask((samples, *x.shape), x.device)
        return self.head.masked(x, keep, self.drop.scale, margin=margin)

    def mc_forward(self, state: State, samples: int) -> State:
        x = state[0]
        if self._fused():
            return (self._masked_head(x, samples, margin=False),)
        return (self.head(sample_dropout(self.drop, x, samples)),)

    def mc_margin(self, state: State, samples: int) -> torch.Tensor | None:
        """Logit 1 - logit 0 of ``mc_forward``'s output, (samples * B, H, W), when the head is
        fused and has two classes (same masks, half the work); otherwise None."""
        if not (self._fused() and self.head.out_channels == 2):
            return None
        return self._masked_head(state[0], samples, margin=True)


class SmpUNet(StagedNet):
    """An ``smp.Unet`` (any smp encoder) with MC-dropout layers at a configurable placement."""

    def __init__(
        self,
        encoder_name: str = "timm-mobilenetv3_small_minimal_100",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (64, 32, 16, 8, 8),
        in_channels: int = 1,
        classes: int = 2,
        dropout_rate: float = 0.2,
        dropout_placement: str = "paper",
        head_kernel: int = 1,
    ) -> None:
        super().__init__()
        _check_placement(dropout_placement, dropout_rate)
        unet = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_depth=encoder_depth,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=classes,
        )
        n_feats = len(unet.encoder.out_channels)
        n_skips = n_feats - 2  # features except the input and the bottleneck
        stages: list[nn.Module] = [_SmpEncoderStage(unet.encoder)]
        if dropout_placement == "paper":
            stages.append(_SmpDropStage(n_feats, dropout_rate))
        stages.append(_SmpCenterStage(unet.decoder.center))
        for i, block in enumerate(unet.decoder.blocks):
            stages.append(
                _SmpBlockStage(block, i < n_skips, dropout_rate, dropout_placement == "decoder")
            )
        # a 1x1 head, as the original U-Net and the paper's: cheap to run T times
        cin = decoder_channels[-1]
        head = (
            PointwiseConv2d(cin, classes)
            if head_kernel == 1
            else nn.Conv2d(cin, classes, head_kernel, padding=head_kernel // 2)
        )
        stages.append(_HeadStage(head, dropout_rate, dropout_placement == "head"))
        self.stages = nn.ModuleList(stages)


# --------------------------------------------------------------------------------------------
# The paper's U-Net (Keras notebooks of arXiv 1907.05143): 32..512 filters, BN, dropout 0.2
# --------------------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _DownStage(nn.Module):
    """Pool (then paper dropout) the current map, convolve; the pre-pool map stays as a skip."""

    def __init__(self, cin: int, cout: int, rate: float, active: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.drop = _dropout(active, rate)
        self.conv = _double_conv(cin, cout)

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def mc_forward(self, state: State, samples: int) -> State:
        x = state[0]
        y = self.conv(sample_dropout(self.drop, self.pool(x), samples))
        return (y, *(repeat_samples(t, samples) for t in state))


class _FirstStage(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _double_conv(cin, cout)

    def forward(self, state: State) -> State:
        return (self.conv(state[0]),)


class _UpStage(nn.Module):
    def __init__(self, cin: int, cout: int, rate: float, active: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = _double_conv(2 * cout, cout)
        self.drop = _dropout(active, rate)

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def mc_forward(self, state: State, samples: int) -> State:
        x, skip, rest = state[0], state[1], state[2:]
        x = self.conv(torch.cat([self.up(x), skip], dim=1))
        return (sample_dropout(self.drop, x, samples), *(repeat_samples(t, samples) for t in rest))


class _BottleneckDrop(nn.Module):
    def __init__(self, rate: float) -> None:
        super().__init__()
        self.drop = ByteDropout(rate)

    def forward(self, state: State) -> State:
        return self.mc_forward(state, 1)

    def mc_forward(self, state: State, samples: int) -> State:
        rest = (repeat_samples(t, samples) for t in state[1:])
        return (sample_dropout(self.drop, state[0], samples), *rest)


class PaperUNet(StagedNet):
    """The paper's U-Net: ``filters`` doubling per level, BatchNorm, dropout after each pooling."""

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 2,
        filters: Sequence[int] = (32, 64, 128, 256, 512),
        dropout_rate: float = 0.2,
        dropout_placement: str = "paper",
    ) -> None:
        super().__init__()
        _check_placement(dropout_placement, dropout_rate)
        paper = dropout_placement == "paper"
        stages: list[nn.Module] = [_FirstStage(in_channels, filters[0])]
        for cin, cout in zip(filters[:-1], filters[1:]):
            stages.append(_DownStage(cin, cout, dropout_rate, paper))
        if paper and dropout_rate > 0:
            stages.append(_BottleneckDrop(dropout_rate))
        rev = list(filters[::-1])
        for cin, cout in zip(rev[:-1], rev[1:]):
            stages.append(_UpStage(cin, cout, dropout_rate, dropout_placement == "decoder"))
        stages.append(
            _HeadStage(
                PointwiseConv2d(filters[0], classes), dropout_rate, dropout_placement == "head"
            )
        )
        self.stages = nn.ModuleList(stages)
        self.stride = 2 ** (len(filters) - 1)
