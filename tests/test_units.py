"""Annotation units: tiles as the pool, loss only on labelled pixels, per-tile scores."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from axal.acquisition import BALD, spread_picks
from axal.data import make_synthetic, split_by_subject
from axal.model import build_loss
from axal.pools import IGNORE, ActiveDataModule, Unit, image_units, unit_splits
from axal.simulation import run


def _tile_dm(tile: int = 32, n_initial: int = 2) -> ActiveDataModule:
    samples = make_synthetic(n_images=6, size=96, n_subjects=3, seed=0)
    images = split_by_subject(samples, n_test=1, n_val=0, n_initial=1, seed=0)
    shapes = {s.id: s.image.shape for s in samples}
    splits = unit_splits(images, shapes, "tile", tile, n_initial, seed=0)
    return ActiveDataModule(samples, splits, patch_size=32, steps=2, batch_size=4)


def test_images_are_cut_into_non_overlapping_tiles_with_smaller_edge_tiles():
    tiles = image_units("img", (100, 80), "tile", 32)
    assert len(tiles) == 3 * 3
    covered = np.zeros((100, 80), dtype=int)
    for t in tiles:
        covered[t.slices] += 1
    assert (covered == 1).all()  # every pixel in exactly one tile
    # a 16 px edge (half a tile) is a tile of its own; a 4 px sliver joins its neighbour
    assert {(t.w, t.h) for t in tiles} == {(32, 32), (16, 32), (32, 36), (16, 36)}
    unit = tiles[5]
    assert Unit.parse(unit.id, {"img": (100, 80)}) == unit
    assert Unit.parse("img", {"img": (100, 80)}).whole


def test_slivers_too_small_to_annotate_merge_into_their_neighbour():
    """A tile size that does not divide the image never suggests 8 x 8 or 64 x 8 slivers."""
    tiles = image_units("img", (136, 72), "tile", 64)
    assert min(min(t.w, t.h) for t in tiles) >= 32
    assert sorted((t.w, t.h) for t in tiles) == [(72, 64), (72, 72)]
    covered = np.zeros((136, 72), dtype=int)
    for t in tiles:
        covered[t.slices] += 1
    assert (covered == 1).all()


def test_only_labelled_tiles_carry_labels_into_the_loss():
    dm = _tile_dm()
    dm.label(dm.unlabelled[:3])
    masks = dm.loss_masks()
    for image_id, mask in masks.items():
        labelled = np.zeros(mask.shape, dtype=bool)
        for u in (dm.units[i] for i in dm.labelled):
            if u.image == image_id:
                labelled[u.slices] = True
        assert (mask[~labelled] == IGNORE).all()
        assert (mask[labelled] == dm.masks[image_id][labelled]).all()
    assert dm.labelled_pixels() == sum(dm.units[u].pixels for u in dm.labelled)
    # training targets hold real labels only where a labelled tile was
    torch.manual_seed(0)  # the patches are drawn from torch's RNG
    _, y = next(iter(dm.train_dataloader()))
    assert (y == IGNORE).any() and (y != IGNORE).any()


@pytest.mark.parametrize("name", ["dice", "ce", "weighted_bce", "dice_ce"])
def test_pixels_outside_labelled_tiles_do_not_change_the_loss(name):
    torch.manual_seed(0)
    loss = build_loss(name, 2)
    target = (torch.rand(2, 32, 32) > 0.5).long()
    target[:, :, 16:] = IGNORE
    logits = torch.randn(2, 2, 32, 32)
    other = logits.clone()
    other[:, :, :, 16:] = torch.randn(2, 2, 32, 16) * 10  # only ignored pixels change
    assert loss(logits, target) == pytest.approx(loss(other, target).item(), rel=1e-5)
    changed = logits.clone()
    changed[:, :, :, :16] = torch.randn(2, 2, 32, 16) * 10
    assert loss(changed, target).item() != pytest.approx(loss(logits, target).item(), rel=1e-3)


def test_a_tile_run_labels_exactly_the_picked_tiles(cfg_factory, tmp_path):
    saved = run(
        cfg_factory("strategy=bald", "al.unit=tile", "al.tile_size=48", "al.per_round=2"),
        tmp_path,
    )
    assert saved["unit"] == "tile" and saved["tile_size"] == 48
    r0, r1 = saved["rounds"]
    assert len(r0["labelled"]) == 2 and all("@" in u for u in r0["labelled"])
    assert len(r0["selected"]) == 2 and set(r0["selected"]) <= set(saved["splits"]["pool"])
    assert r1["labelled"] == r0["labelled"] + r0["selected"]

    def area(unit_id: str) -> int:
        _, _, w, h = (int(v) for v in unit_id.split("@")[1].split(","))
        return w * h

    assert r0["labelled_pixels"] == sum(area(u) for u in r0["labelled"])
    assert r1["labelled_pixels"] == sum(area(u) for u in r1["labelled"])
    train = saved["splits"]["initial"] + saved["splits"]["pool"]
    assert {area(u) for u in train} == {48 * 48, 48 * 32, 32 * 32}  # 128 px: 48 + 48 + 32
    assert saved["pool_pixels"] == sum(area(u) for u in train) == len(train) // 9 * 128 * 128
    # every pool tile was scored from one MC pass per image, and the picks are the best two
    assert set(r0["scores"]) == set(saved["splits"]["pool"])
    best = sorted(r0["scores"], key=lambda u: -r0["scores"][u])[:2]
    assert sorted(r0["selected"]) == sorted(best)
    with open(tmp_path / "selection.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["unit"] for r in rows] == r0["selected"]
    for row in rows:
        image, box = row["unit"].split("@")
        assert row["image_id"] == image and box == ",".join(
            row[k] for k in ("x", "y", "width", "height")
        )


def test_tile_scores_reduce_one_pixel_map_inside_each_box():
    """A strategy's per-pixel map of the whole image, summed inside each tile's box."""
    from axal.acquisition import acquire
    from axal.networks import SmpUNet

    torch.manual_seed(0)
    net = SmpUNet(
        encoder_name="timm-mobilenetv3_small_minimal_100",
        encoder_weights=None,
        decoder_channels=[16, 8, 8, 8, 8],
        classes=2,
        dropout_placement="head",
    )
    image = np.random.default_rng(0).random((64, 96)).astype(np.float32)
    tiles = image_units("a", image.shape, "tile", 32)
    kept = {}
    picks, scores = acquire(
        BALD(),
        net,
        {"a": image},
        2,
        units={"a": tiles},
        mc_samples=4,
        seed=0,
        patch=64,
        overlap=8,
        on_image=lambda i, stats, pixel_map: kept.update(map=pixel_map),
    )
    assert set(scores) == {t.id for t in tiles}
    for t in tiles:
        assert scores[t.id] == pytest.approx(float(kept["map"][t.slices].double().sum()))


def test_spatial_spread_keeps_a_batch_out_of_one_neighbourhood():
    tiles = {t.id: t for t in image_units("a", (96, 96), "tile", 32)}
    tiles.update({t.id: t for t in image_units("b", (96, 96), "tile", 32)})
    order = ["a@0,0,32,32", "a@32,0,32,32", "a@0,32,32,32", "a@64,64,32,32", "b@0,0,32,32"]
    assert spread_picks(order, 3, tiles, 0) == order[:3]
    # neighbours of the first pick (centres 32 px apart) are skipped
    assert spread_picks(order, 3, tiles, 40) == ["a@0,0,32,32", "a@64,64,32,32", "b@0,0,32,32"]
    # not enough far-apart units: the skipped ones fill the batch, in order
    assert spread_picks(order[:3], 2, tiles, 40) == ["a@0,0,32,32", "a@32,0,32,32"]
