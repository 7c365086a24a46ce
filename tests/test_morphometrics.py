"""Morphometrics and correction effort on hand-made masks with analytic answers."""

import math

import numpy as np
import pytest

from axal.morphometrics import CostModel, aggregate, compare, correction_effort, fiber_table, main


def disc(mask, cy, cx, r_axon, r_fiber):
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    mask[d2 <= r_fiber**2] = 127
    mask[d2 <= r_axon**2] = 255
    return mask


def test_concentric_discs_give_analytic_diameter_thickness_gratio():
    mask = disc(np.zeros((200, 200), np.uint8), 100, 100, 30, 50)
    px = 0.01
    (row,) = fiber_table(mask, px)
    assert row["axon_diam (um)"] == pytest.approx(2 * 30 * px, rel=0.02)
    assert row["myelin_thickness (um)"] == pytest.approx(20 * px, rel=0.03)
    assert row["gratio"] == pytest.approx(0.6, rel=0.02)
    assert not row["image_border_touching"]
    agg = aggregate(mask, px)
    assert agg["fiber_count"] == 1
    assert agg["gratio_aggr"] == pytest.approx(0.6, rel=0.02)  # sqrt(1/(1+mvf/avf)) of one disc
    assert agg["axon_density_mm2"] == pytest.approx(1 / (200 * 200 * px**2 / 1e6))


def test_border_fiber_is_flagged():
    (row,) = fiber_table(disc(np.zeros((100, 100), np.uint8), 5, 50, 10, 15), 1.0)
    assert row["image_border_touching"]


def two_fibers():
    m = np.zeros((120, 240), np.uint8)
    disc(m, 60, 60, 20, 30)
    disc(m, 60, 180, 20, 30)
    return m


def test_perfect_prediction_needs_only_checks():
    truth = two_fibers()
    e = correction_effort(truth, truth)
    assert (e["fibers_checked"], e["fibers_fixed"], e["fibers_drawn"], e["fibers_deleted"]) == (
        2,
        0,
        0,
        0,
    )
    assert e["changed_pixels"] == 0
    c = CostModel()
    assert e["correction_seconds"] == pytest.approx(c.overhead + 2 * c.check)
    assert e["scratch_seconds"] == pytest.approx(c.overhead + 2 * c.draw)
    assert compare(truth, truth, 1.0)["fiber_f1"] == 1.0


def test_missed_fiber_is_drawn():
    truth, pred = two_fibers(), two_fibers()
    pred[:, 120:] = 0
    e = correction_effort(pred, truth)
    assert (e["fibers_checked"], e["fibers_drawn"], e["fibers_deleted"]) == (1, 1, 0)
    assert compare(pred, truth, 1.0)["fiber_recall"] == 0.5


def test_spurious_fiber_is_deleted():
    truth, pred = two_fibers(), two_fibers()
    truth[:, 120:] = 0
    e = correction_effort(pred, truth)
    assert (e["fibers_checked"], e["fibers_drawn"], e["fibers_deleted"]) == (1, 0, 1)
    assert compare(pred, truth, 1.0)["fiber_precision"] == 0.5


def test_merged_pair_of_equal_fibers_is_one_delete_and_two_draws():
    truth = np.zeros((120, 200), np.uint8)
    disc(truth, 60, 60, 20, 30)
    disc(truth, 60, 140, 20, 30)
    pred = truth.copy()
    pred[50:71, 60:141] = 255  # an axon bridge joins the two axons into one fiber
    e = correction_effort(pred, truth)
    # the merge overlaps each true fiber by IoU < 0.5: it is deleted and both fibers drawn
    assert (e["fibers_fixed"], e["fibers_drawn"], e["fibers_deleted"], e["fibers_checked"]) == (
        0,
        2,
        1,
        0,
    )
    assert compare(pred, truth, 1.0)["fiber_f1"] == 0.0


def test_merged_pair_dominated_by_one_fiber_is_one_fix_and_one_draw():
    truth = np.zeros((140, 240), np.uint8)
    disc(truth, 70, 70, 40, 55)
    disc(truth, 70, 165, 25, 35)
    pred = truth.copy()
    pred[66:75, 70:166] = 255  # the smaller fiber's axon joined to the larger one's
    e = correction_effort(pred, truth)
    assert (e["fibers_fixed"], e["fibers_drawn"], e["fibers_deleted"], e["fibers_checked"]) == (
        1,
        1,
        0,
        0,
    )


def test_cli_writes_adsx_columns(tmp_path):
    from PIL import Image

    path = tmp_path / "x_seg-axonmyelin.png"
    Image.fromarray(two_fibers()).save(path)
    out = tmp_path / "x.csv"
    assert main([str(path), "--pixel-size", "0.01", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert "axon_diam (um)" in lines[0] and "gratio" in lines[0] and len(lines) == 3
    agg = (tmp_path / "x_aggregate.csv").read_text().splitlines()
    assert "axon_density_mm2" in agg[0] and len(agg) == 2
    assert math.isclose(float(lines[1].split(",")[2]), 2 / 3, rel_tol=0.03)


def test_axonmyelin_run_records_fibers_morphometrics_and_correction(cfg_factory, tmp_path):
    import json

    from axal.simulation import run

    cfg = cfg_factory("task=axonmyelin", "strategy=random", "al.cost.draw=40")
    run(cfg, tmp_path)
    r0, r1 = json.loads((tmp_path / "results.json").read_text())["rounds"]
    for r in (r0, r1):
        test = r["test"]
        assert test["dice_axon"] is not None and 0 <= test["fiber_f1"] <= 1
        assert test["gratio_true"] is not None and test["density_true"] > 0
        if test["gratio_pred"] is not None:
            assert test["gratio_error"] == pytest.approx(
                abs(test["gratio_pred"] - test["gratio_true"])
            )
        for per in test["per_subject"].values():
            assert "fiber_f1" in per and "dice_myelin" in per
    c = r0["correction"]
    assert c["fibers_checked"] + c["fibers_fixed"] + c["fibers_drawn"] > 0
    # from scratch every true fiber of the unit is drawn, at the configured 40 s each
    n_true = c["fibers_checked"] + c["fibers_fixed"] + c["fibers_drawn"]
    assert c["scratch_seconds"] == pytest.approx(3.0 + 40 * n_true)
    assert r0["correction_total"] == c
    assert r1["correction"] is None  # the last round reveals nothing
    assert r1["correction_total"] == c


def test_predict_morphometrics_writes_ads_csv_and_refuses_bad_input(tmp_path):
    from PIL import Image

    from axal.checkpoint import CheckpointError
    from axal.predict import predict
    from axal.simulation import run
    from tests.conftest import FAST, compose_cfg

    ckpts = {}
    for task in ("axonmyelin", "myelin"):
        cfg = compose_cfg(FAST + ["strategy=random", "al.rounds=1", f"task={task}"])
        run(cfg, tmp_path / task)
        ckpts[task] = tmp_path / task / "checkpoints" / "round-0.ckpt"
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 90), dtype=np.uint8)).save(images / "a.png")
    with pytest.raises(CheckpointError, match="task=myelin.*task=axonmyelin"):
        predict(ckpts["myelin"], images, morphometrics=True)
    done = predict(ckpts["axonmyelin"], images, morphometrics=True)
    assert "pixel size unknown" in done.failed[str(images / "a.png")]
    assert not (images / "a_axon_morphometrics.csv").exists()
    done = predict(ckpts["axonmyelin"], images, morphometrics=True, pixel_size=0.05)
    assert not done.failed
    header = (images / "a_axon_morphometrics.csv").read_text().splitlines()[0]
    assert header.startswith("x0 (px),y0 (px),gratio,axon_area (um^2)")
    agg = (images / "a_axon_morphometrics_aggregate.csv").read_text().splitlines()
    assert agg[0].startswith("image,avf,mvf,gratio_aggr") and agg[1].startswith("a.png,")


def test_report_ranks_strategies_by_correction_seconds_under_cost_settings(cfg_factory, tmp_path):
    from axal.report import load_runs, summarize
    from axal.report.summary import COST_SETTINGS, correction_seconds
    from axal.report.tables import _markdown, lab_table
    from axal.simulation import run

    for strategy in ("random", "entropy"):
        run(cfg_factory("task=axonmyelin", f"strategy={strategy}"), tmp_path / strategy)
    runs = load_runs([tmp_path])
    summary = summarize(runs)
    (d,) = summary["datasets"].values()
    head, body = lab_table(d)
    assert any("fiber_f1" in h for h in head) and len(body) == 2
    assert sum(f"correction s, {name}" in " ".join(head) for name in COST_SETTINGS) == 3
    # re-costing with the default model gives back the recorded seconds
    for r in runs:
        total = [x for x in r["rounds"] if x.get("correction_total")][-1]["correction_total"]
        assert correction_seconds(r, {}) == pytest.approx(total["correction_seconds"])
    assert "What a lab measures" in _markdown(summary)
