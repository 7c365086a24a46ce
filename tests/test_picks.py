"""What the strategies pick: class and boundary shares of picked tiles against the pool."""

from __future__ import annotations

import numpy as np

from axal.pools import task_mask
from axal.report.picks import Labels, boundary, composition, summarize_picks, write_picks
from axal.report.summary import load_runs
from axal.settings import load_samples
from axal.simulation import run


def test_boundary_marks_both_sides_of_a_class_change_and_nothing_else():
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[:, 3:] = 1
    edge = boundary(mask)
    assert edge[:, 2:4].all() and not edge[:, :2].any() and not edge[:, 4].any()


def test_composition_counts_only_the_pixels_inside_the_units():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 1  # myelin fills the top-left 2x2 tile only
    masks = Labels.of({"img": mask})
    top_left = composition(["img@0,0,2,2"], masks)
    assert top_left["myelin"] == 1.0 and top_left["boundary"] == 0.75  # all but its corner
    assert composition(["img@2,2,2,2"], masks)["myelin"] == 0.0
    assert composition(["img"], masks)["myelin"] == 0.25  # a whole-image unit


def test_picks_of_a_tile_run_are_the_selected_tiles_masks(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "strategy=bald", "al.unit=tile", "al.tile_size=32", "al.per_round=3", "al.rounds=3"
    )
    saved = run(cfg, tmp_path / "bald")
    picked = saved["rounds"][0]["selected"] + saved["rounds"][1]["selected"]
    assert len(picked) == 6 and not saved["rounds"][2]["selected"]  # the last round picks none
    masks = {s.id: task_mask(s.mask, "myelin") for s in load_samples(cfg)}
    want = np.mean([masks[u.split("@")[0]][_box(u)].mean() for u in picked])  # equal-size tiles
    summary = summarize_picks(load_runs([tmp_path]))
    bald = summary["synthetic/tile"]["bald"]
    assert bald["n_runs"] == 1 and bald["n_picked"] == 6
    assert abs(bald["picked"]["myelin"] - want) < 1e-9
    pool = np.concatenate(
        [masks[u.split("@")[0]][_box(u)].ravel() for u in saved["splits"]["pool"]]
    )
    assert abs(bald["pool"]["myelin"] - pool.mean()) < 1e-9
    md = write_picks([tmp_path], tmp_path / "out").read_text()
    assert "| bald | 1 |" in md and "boundary, picked" in md


def _box(unit_id: str) -> tuple[slice, slice]:
    x, y, w, h = (int(v) for v in unit_id.split("@")[1].split(","))
    return slice(y, y + h), slice(x, x + w)
