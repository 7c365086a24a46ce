"""Networks, losses and metrics: shapes, dropout placement, and the numbers the paper uses."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from axal.model import SegModel, WeightedBCELoss, build_loss, scores_from_stats
from axal.networks import PaperUNet, SmpUNet
from axal.tiling import sliding_window, tile_starts

TINY = dict(decoder_channels=(16, 8, 8, 8, 8))


def _dropouts(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Dropout) for m in net.modules())


@pytest.mark.parametrize("placement", ["paper", "decoder", "head", "none"])
def test_smp_unet_places_dropout_where_asked(placement):
    net = SmpUNet(dropout_placement=placement, **TINY).eval()
    out = net(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, 2, 64, 96)
    expected = {"paper": 4, "decoder": 5, "head": 1, "none": 0}[placement]
    assert _dropouts(net) == expected


def test_smp_unet_without_dropout_equals_plain_smp_unet():
    torch.manual_seed(0)
    ours = SmpUNet(dropout_placement="none", encoder_name="resnet18", head_kernel=3, **TINY).eval()
    plain = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=2, **TINY).eval()
    plain.encoder.load_state_dict(ours.stages[0].encoder.state_dict())
    for i, block in enumerate(plain.decoder.blocks):
        block.load_state_dict(ours.stages[2 + i].block.state_dict())
    plain.segmentation_head[0].load_state_dict(ours.stages[-1].head.state_dict())
    x = torch.rand(1, 1, 64, 64)
    assert torch.allclose(ours(x), plain(x), atol=1e-5)


def test_paper_unet_matches_the_paper():
    net = PaperUNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 512 and convs[0].out_channels == 32
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    # one dropout after each of the 4 poolings, one at the bottleneck, rate 0.2
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 5 and all(d.p == 0.2 for d in drops)
    assert net.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_weighted_bce_weighs_background_errors_more():
    loss = WeightedBCELoss()
    target = torch.tensor([[[1, 0]]])
    # same confidence in the wrong class, on a foreground pixel vs a background pixel
    miss_fg = loss(torch.tensor([[[[2.0]], [[-2.0]]]]).reshape(1, 2, 1, 1), target[..., :1])
    miss_bg = loss(torch.tensor([[[[-2.0]], [[2.0]]]]).reshape(1, 2, 1, 1), target[..., 1:])
    assert miss_bg / miss_fg == pytest.approx(0.7 / 0.3, rel=1e-4)


@pytest.mark.parametrize("name", ["dice", "weighted_bce", "ce", "dice_ce"])
def test_losses_fall_as_predictions_improve(name):
    loss = build_loss(name, 2)
    target = torch.randint(0, 2, (2, 16, 16))
    good = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 8 - 4
    assert loss(good, target) < loss(-good, target)
    with pytest.raises(ValueError, match="model.loss"):
        build_loss("focal", 2)


def test_metrics_from_counts():
    # background, myelin, axon counts: tp, fp, fn, tn
    tp, fp, fn, tn = (torch.tensor(v) for v in ([90, 8, 6], [2, 2, 2], [1, 2, 2], [0, 0, 0]))
    m = scores_from_stats(tp, fp, fn, tn)
    assert m["dice_myelin"] == pytest.approx(16 / 20)
    assert m["dice_axon"] == pytest.approx(12 / 16)
    assert m["dice"] == pytest.approx((16 / 20 + 12 / 16) / 2)


def test_sliding_window_covers_odd_sizes_exactly():
    image = torch.rand(1, 150, 333)
    out = sliding_window(lambda t: t * 3, image, patch=64, overlap=16)
    assert out.shape == image.shape and torch.allclose(out, image * 3, atol=1e-5)
    assert tile_starts(100, 64, 16) == [0, 36] and tile_starts(50, 64, 16) == [0]


def test_test_dice_is_one_for_a_perfect_model():
    class Oracle(nn.Module):
        def forward(self, x):
            fg = (x > 0.5).float()
            return torch.cat([1 - fg, fg], 1) * 10

    model = SegModel(Oracle(), patch_size=64, overlap=8)
    image = torch.rand(1, 1, 80, 80)
    model.on_test_epoch_start()
    model._count({"image": image, "mask": (image[0] > 0.5).long(), "subject": ["sub-a"]})
    assert scores_from_stats(*model._counts["sub-a"])["dice"] == pytest.approx(1.0)


def test_mc_dropout_layer_drops_at_the_configured_rate_and_keeps_the_mean():
    from axal.networks import ByteDropout

    drop = ByteDropout(0.2).train()
    x = torch.ones(200_000)
    with torch.inference_mode():
        y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(51 / 256, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # kept units are rescaled
    with torch.inference_mode():
        assert not torch.equal(drop(x), y)  # a new mask every pass
    drop.eval()
    assert torch.equal(drop(x), x)
    # training (autograd on) uses torch's dropout: gradients flow through kept units
    drop.train()
    w = torch.ones(1000, requires_grad=True)
    drop(w).sum().backward()
    assert set(w.grad.unique().tolist()) <= {0.0, 1.25}


def test_mc_masks_are_reproducible_per_seed_and_independent_across_draws():
    from axal.networks import ByteDropout

    drop = ByteDropout(0.2).train()
    with torch.inference_mode():
        torch.manual_seed(7)
        a = drop.keep_mask((4, 3, 50, 50), torch.device("cpu"))
        b = drop.keep_mask((4, 3, 50, 50), torch.device("cpu"))
        torch.manual_seed(7)
        again = drop.keep_mask((4, 3, 50, 50), torch.device("cpu"))
    assert set(a.unique().tolist()) == {0, 1}
    assert torch.equal(a, again) and not torch.equal(a, b)
    # the two draws agree only as often as independent Bernoulli(0.8) masks do
    agree = (a == b).float().mean().item()
    keep = 1 - 51 / 256
    assert agree == pytest.approx(keep**2 + (1 - keep) ** 2, abs=0.01)
    assert ByteDropout(0.0).train().keep_mask((2, 2), torch.device("cpu")).all()


def test_dropout_into_pointwise_head_folds_to_the_same_logits():
    """The head stage adds the kept weighted inputs instead of building the masked input."""
    from axal.networks import ByteDropout, PointwiseConv2d

    torch.manual_seed(0)
    for bias in (True, False):
        head = PointwiseConv2d(5, 3, bias=bias)
        x = torch.randn(2, 5, 7, 9)
        drop = ByteDropout(0.3).train()
        with torch.inference_mode():
            keep = drop.keep_mask((4, *x.shape), x.device)
            expected = head((keep * (x * drop.scale)).flatten(0, 1))
            folded = head.masked(x, keep, drop.scale)
        assert folded.shape == (8, 3, 7, 9)
        torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="2 output channels"):
            head.masked(x, keep, drop.scale, margin=True)
    # two classes: the margin alone, logit 1 - logit 0 of the same masked forward
    head = PointwiseConv2d(5, 2)
    with torch.inference_mode():
        expected = head((keep * (x * drop.scale)).flatten(0, 1))
        margin = head.masked(x, keep, drop.scale, margin=True)
    torch.testing.assert_close(margin, expected[:, 1] - expected[:, 0], atol=1e-5, rtol=1e-5)
