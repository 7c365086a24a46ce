"""Real annotation: rounds on a lab's folder, suggestions, AxonDeepSeg predictions, bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from axal.annotate import annotate, labelled_units
from axal.checkpoint import CheckpointError
from axal.data import DataError, make_synthetic
from tests.conftest import CONF, ROOT, needs_data, real_data_root

ADS_VALUES = {"axonmyelin": {0, 127, 255}, "axon": {0, 255}, "myelin": {0, 255}}
FAST = [
    "model=tiny",
    "trainer.max_restarts=0",
    "trainer.progress=false",
    "al.mc_samples=2",
    "k=2",
]


def annotate_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="annotate", overrides=[f"dataset.root={root}", *FAST, *overrides]
        )


def synthetic_folder(root: Path, n: int, labelled: int, size: int = 96) -> dict[str, np.ndarray]:
    """A legacy-layout folder of synthetic cases (0.1 um/px), the first ``labelled`` with masks;
    returns every case's ground-truth mask (AxonDeepSeg values) for a simulated annotator."""
    truth = {}
    for j, s in enumerate(make_synthetic(n_images=n, size=size, n_subjects=n, seed=0)):
        case = root / s.id
        case.mkdir(parents=True)
        Image.fromarray((s.image * 255).astype(np.uint8)).save(case / "image.png")
        (case / "pixel_size_in_micrometer.txt").write_text("0.1\n")
        truth[s.id] = np.array([0, 127, 255], dtype=np.uint8)[s.mask]
        if j < labelled:
            Image.fromarray(truth[s.id]).save(case / "mask.png")
    return truth


def check_predictions(out: Path, rel: str, stem: str, size: tuple[int, int]) -> None:
    for kind, allowed in ADS_VALUES.items():
        path = out / "predictions" / rel / f"{stem}_seg-{kind}.png"
        with Image.open(path) as im:
            assert im.mode == "L" and im.size == size, path
            assert set(np.unique(np.asarray(im)).tolist()) <= allowed, path


@needs_data
def test_two_rounds_on_real_tem_cases_with_a_simulated_annotator(tmp_path):
    """6 real TEM cases (2 labelled), k=2: the annotator copies the ground truth of each
    suggestion; the next round trains on it and suggests other images."""
    tem = real_data_root() / "tem_mouse_corpuscallosum"
    root = tmp_path / "lab"
    images = sorted(tem.glob("sub-*/micr/*_TEM.png"))[:6]
    truth = {}
    for j, image in enumerate(images):
        case = root / image.stem
        case.mkdir(parents=True)
        shutil.copy(image, case / "image.png")
        (case / "pixel_size_in_micrometer.txt").write_text("0.00493\n")
        rel = image.parent.relative_to(tem)
        truth[image.stem] = (
            tem / "derivatives/labels" / rel / f"{image.stem}_seg-axonmyelin-manual.png"
        )
        if j < 2:
            shutil.copy(truth[image.stem], case / "mask.png")
    overrides = (
        "al.initial=2",
        "trainer.steps=30",
        "trainer.finetune_steps=20",
        "dataset.pixel_size=0.00986",  # half resolution: 300 px for the model, 600 px files
        "dataset.infer_size=320",
    )
    out = root / "axal"

    state = annotate(annotate_cfg(root, *overrides))
    r0 = state["rounds"][0]
    first = [s["image"] for s in r0["suggestions"]]
    assert len(first) == 2 and not set(first) & set(r0["labelled"])
    assert r0["fine_tuned_from"] is None and (out / r0["checkpoint"]).is_file()
    assert r0["seed"] == 0 and set(r0["scores"]) == {i.stem for i in images[2:]}
    for s in r0["suggestions"]:
        assert s["score"] == pytest.approx(r0["scores"][s["unit"]])
        assert (s["x"], s["y"], s["width"], s["height"]) == (0, 0, 600, 600)
        assert (out / s["overlay"]).is_file()
    with open(out / "suggestions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["rank", "image", "x", "y", "width", "height", "score", "strategy"]
    assert [r["image"] for r in rows] == first and rows[0]["strategy"] == "hybrid"
    for stem in [i.stem for i in images[2:]]:  # every unlabelled image, at its own size
        check_predictions(out, stem, "image", (600, 600))
    page = (out / "annotate.html").read_text()
    assert all(s["overlay"] in page and s["image"] in page for s in r0["suggestions"])
    # each suggestion says how many fibers the prediction holds in its box
    assert all(isinstance(s["predicted_fibers"], int) for s in r0["suggestions"])
    assert f"{r0['suggestions'][0]['predicted_fibers']} predicted fibers" in page

    # nothing new: the suggestions stand, no round is trained
    assert len(annotate(annotate_cfg(root, *overrides))["rounds"]) == 1

    for image_id in first:  # the simulated annotator
        shutil.copy(truth[image_id], root / image_id / "mask.png")
    state = annotate(annotate_cfg(root, *overrides))
    r1 = state["rounds"][1]
    assert r1["labelled"] == r0["labelled"] + sorted(first)  # trained on the new masks too
    assert r1["new_masks"] == sorted(first) and r1["n_labelled"] == 4
    assert r1["fine_tuned_from"] == r0["checkpoint"] and r1["steps"] == 20
    second = [s["image"] for s in r1["suggestions"]]
    assert len(second) == 2 and not set(second) & set(first)
    assert set(r1["scores"]) == {i.stem for i in images[2:]} - set(first)
    for stem in second:
        check_predictions(out, stem, "image", (600, 600))
    saved = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in saved["rounds"]] == [0, 1] and saved["task"] == "axonmyelin"
    # each round names the machine and libraries that trained it
    assert all(r["environment"]["torch"] and r["environment"]["cpu"] for r in saved["rounds"])


def test_tile_suggestions_count_only_their_boxes(tmp_path):
    """unit=tile: a mask added for a suggested image labels only the suggested boxes; an
    unlabelled suggestion stays in the pool; boxes are in the file's pixels."""
    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=4, labelled=1)
    overrides = (
        "al.unit=tile",
        "al.tile_size=24",  # 48 px for the model (0.2 um/px) = 2 x 2 tiles, 48 px in the files
        "al.initial=1",
        "dataset.pixel_size=0.2",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "dataset.batch_size=4",
        "trainer.steps=3",
        "trainer.finetune_steps=2",
    )
    out = root / "axal"
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert r0["labelled"] == [f"syn-000@{x},{y},24,24" for y in (0, 24) for x in (0, 24)]
    picks = r0["suggestions"]
    assert len(picks) == 2 and all("@" in s["unit"] for s in picks)
    for s in picks:
        x, y, w, h = (int(v) for v in s["unit"].split("@")[1].split(","))
        assert (s["x"], s["y"], s["width"], s["height"]) == (2 * x, 2 * y, 2 * w, 2 * h)
    # the annotator labels the first suggestion's image only, with a mask of the whole image
    labelled = picks[0]["image"]
    Image.fromarray(truth[labelled]).save(root / labelled / "mask.png")
    r1 = annotate(annotate_cfg(root, *overrides))["rounds"][1]
    counted = [u for u in r1["labelled"] if u.split("@")[0] == labelled]
    assert sorted(counted) == sorted(s["unit"] for s in picks if s["image"] == labelled)
    pool = set(r1["scores"])
    other_tiles = {f"{labelled}@{x},{y},24,24" for y in (0, 24) for x in (0, 24)} - set(counted)
    assert other_tiles <= pool  # the rest of the labelled image stays in the pool
    if picks[1]["image"] != labelled:
        assert picks[1]["unit"] in pool  # not labelled: still a candidate, no error
    check_predictions(out, picks[1]["image"], "image", (96, 96))


def test_an_annotate_round_with_mean_teacher_learns_from_the_unlabelled_images(tmp_path):
    """trainer/semi=mean_teacher: the lab's images without masks are the unlabelled patches
    (its pool); the round keeps its steps and records what the teacher did."""
    root = tmp_path / "lab"
    synthetic_folder(root, n=3, labelled=1, size=64)
    overrides = (
        "al.unit=tile",
        "al.tile_size=32",
        "al.initial=1",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "dataset.batch_size=2",
        "trainer.steps=3",
        "trainer/semi=mean_teacher",
    )
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert r0["steps"] == 3 and r0["train_seconds"] > 0
    assert r0["semi"]["method"] == "mean_teacher" and r0["semi"]["unlabelled_batches"] == 3
    assert r0["config"]["trainer"]["semi"]["name"] == "mean_teacher"
    assert len(r0["suggestions"]) == 2


def test_labelled_units_follow_masks_and_suggestions():
    units = {"a": ["a@0", "a@1"], "b": ["b@0", "b@1"], "c": ["c@0", "c@1"]}
    # a: labelled whole before; b: suggested b@1, now masked; c: masked, never suggested
    got = labelled_units(units, {"a", "b", "c"}, ["a@0", "a@1"], {"b@1", "x@0"})
    assert got == ["a@0", "a@1", "b@1", "c@0", "c@1"]
    # a mask that disappeared takes its units out
    assert labelled_units(units, {"b"}, ["a@0", "a@1", "b@1"], {"b@1"}) == ["b@1"]


def test_a_folder_without_masks_says_how_many_are_needed(tmp_path):
    """al.initial_pick=random: no first picks, a refusal naming what is missing."""
    synthetic_folder(tmp_path / "lab", n=4, labelled=0)
    with pytest.raises(DataError, match=r"0 of 4 images have a mask.*at least 3 \(al.initial=3"):
        annotate(annotate_cfg(tmp_path / "lab", "al.initial_pick=random"))
    synthetic_folder(tmp_path / "two", n=4, labelled=2)
    with pytest.raises(DataError, match=r"2 of 4 .*Annotate 1 more: e\.g\. .*syn-002/mask\.png"):
        annotate(annotate_cfg(tmp_path / "two", "al.initial_pick=random"))


def two_kinds_folder(root: Path, n: int = 4, size: int = 64) -> dict[str, np.ndarray]:
    """``n`` synthetic EM-like cases and ``n`` of plain bright noise (no fibers): a folder whose
    images fall in two groups; returns each case's mask (AxonDeepSeg values)."""
    truth = synthetic_folder(root, n=n, labelled=0, size=size)
    rng = np.random.default_rng(5)
    for j in range(n):
        case = root / f"noise-{j}"
        case.mkdir()
        noise = rng.uniform(0.75, 1.0, (size, size))
        Image.fromarray((noise * 255).astype(np.uint8)).save(case / "image.png")
        (case / "pixel_size_in_micrometer.txt").write_text("0.1\n")
        truth[case.name] = np.zeros((size, size), dtype=np.uint8)
    return truth


TILE_FIRST = (
    "al.initial=2",
    "dataset.patch_size=32",
    "dataset.infer_size=64",
    "dataset.batch_size=4",
    "trainer.steps=3",
)


def test_a_folder_without_masks_gets_label_free_first_picks(tmp_path):
    """No mask yet (annotate's default al.initial_pick=typical): the first picks are the most
    typical images of different groups, one per group, found without any label and without
    training; they stand until their masks exist, and round 0 then trains on them."""
    root = tmp_path / "lab"
    truth = two_kinds_folder(root)
    out = root / "axal"
    state = annotate(annotate_cfg(root, *TILE_FIRST))
    assert state["rounds"] == [] and not (out / "checkpoints").exists()  # nothing trained
    picks = state["first_picks"]["suggestions"]
    images = [p["image"] for p in picks]
    assert len(set(images)) == 2
    assert {i.split("-")[0] for i in images} == {"syn", "noise"}  # one of each group
    assert all(
        p["score"] is None and p["mask"] == str(root / p["image"] / "mask.png") for p in picks
    )
    with open(out / "suggestions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == images and rows[0]["strategy"] == "typical (label-free)"
    page = (out / "annotate.html").read_text()
    assert "First picks" in page and all(str(root / i / "mask.png") in page for i in images)

    # one mask saved: the picks stand (not recomputed around it), still no model
    Image.fromarray(truth[images[0]]).save(root / images[0] / "mask.png")
    again = annotate(annotate_cfg(root, *TILE_FIRST))
    assert again["rounds"] == [] and again["first_picks"]["suggestions"] == picks

    Image.fromarray(truth[images[1]]).save(root / images[1] / "mask.png")
    r0 = annotate(annotate_cfg(root, *TILE_FIRST))["rounds"][0]
    assert sorted(r0["labelled"]) == sorted(images) and r0["steps"] == 3
    assert len(r0["suggestions"]) == 2 and not set(images) & {s["image"] for s in r0["suggestions"]}


def test_tile_first_picks_lie_on_different_images_and_count_only_their_boxes(tmp_path):
    """al.unit=tile: the first picks are boxes on as many images as round 0 needs; a mask of a
    whole picked image labels only its box, the rest stays in the pool."""
    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=4, labelled=0, size=64)
    tiles = ("al.unit=tile", "al.tile_size=32", *TILE_FIRST)
    picks = annotate(annotate_cfg(root, *tiles))["first_picks"]["suggestions"]
    assert len({p["image"] for p in picks}) == 2 and all("@" in p["unit"] for p in picks)
    assert all((p["width"], p["height"]) == (32, 32) for p in picks)  # 0.1 um/px at both scales
    for p in picks:
        Image.fromarray(truth[p["image"]]).save(root / p["image"] / "mask.png")
    r0 = annotate(annotate_cfg(root, *tiles))["rounds"][0]
    assert sorted(r0["labelled"]) == sorted(p["unit"] for p in picks)
    assert len(r0["scores"]) == 4 * 4 - 2  # every other tile, of picked images too, is in the pool


def test_a_mask_with_other_values_is_refused_naming_file_and_values(tmp_path):
    synthetic_folder(tmp_path, n=3, labelled=3)
    bad = tmp_path / "syn-001" / "mask.png"
    indices = np.zeros((96, 96), dtype=np.uint8)
    indices[10:40, 10:40], indices[50:60, 50:60] = 1, 2
    Image.fromarray(indices).save(bad)
    values = r"0 \(\d+ px\), 1 \(\d+ px\), 2 \(\d+ px\)"
    with pytest.raises(
        DataError, match=rf"mask {re.escape(str(bad))} holds only small values \({values}"
    ):
        annotate(annotate_cfg(tmp_path))


def test_the_cli_reports_bad_input_in_one_line(tmp_path):
    synthetic_folder(tmp_path / "lab", n=2, labelled=0)
    done = subprocess.run(
        [sys.executable, str(ROOT / "annotate.py"), f"dataset.root={tmp_path / 'lab'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 1
    said = " ".join((done.stdout + done.stderr).split())  # the paragraph wraps with the path
    assert "0 of 2 images have a mask" in said
    assert "Traceback" not in said


def test_a_work_folder_of_another_task_is_refused_naming_both(tmp_path):
    synthetic_folder(tmp_path, n=3, labelled=1)
    overrides = ("al.initial=1", "trainer.steps=2", "dataset.patch_size=32", "k=1")
    annotate(annotate_cfg(tmp_path, "task=myelin", *overrides))
    with pytest.raises(CheckpointError, match="task=myelin.*task=axonmyelin"):
        annotate(annotate_cfg(tmp_path, "task=axonmyelin", *overrides))


def test_a_bids_folder_reads_images_without_labels_as_unlabelled(tmp_path):
    """BIDS: images without a derivatives/labels mask are the pool; predictions mirror the
    BIDS folders, and the page names the derivatives file to save each mask as."""
    root = tmp_path / "bids"
    for j, s in enumerate(make_synthetic(n_images=3, size=64, n_subjects=3, seed=0)):
        sub = f"sub-{j:02d}"
        micr = root / sub / "micr"
        micr.mkdir(parents=True)
        stem = f"{sub}_sample-1_TEM"
        Image.fromarray((s.image * 255).astype(np.uint8)).save(micr / f"{stem}.png")
        (micr / f"{stem}.json").write_text('{"PixelSize": [0.1, 0.1], "PixelSizeUnits": "um"}')
        if j == 0:
            labels = root / "derivatives" / "labels" / sub / "micr"
            labels.mkdir(parents=True)
            grey = np.array([0, 127, 255], dtype=np.uint8)[s.mask]
            Image.fromarray(grey).save(labels / f"{stem}_seg-axonmyelin-manual.png")
    overrides = ("al.initial=1", "trainer.steps=2", "dataset.patch_size=32", "k=1")
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert r0["labelled"] == ["sub-00_sample-1_TEM"]
    assert set(r0["scores"]) == {"sub-01_sample-1_TEM", "sub-02_sample-1_TEM"}
    (pick,) = r0["suggestions"]
    sub = pick["image"].split("_")[0]
    assert pick["mask"] == str(
        root / "derivatives/labels" / sub / "micr" / f"{pick['image']}_seg-axonmyelin-manual.png"
    )
    for stem in r0["scores"]:
        check_predictions(root / "axal", f"{stem.split('_')[0]}/micr", stem, (64, 64))


def test_a_second_annotate_on_one_folder_refuses_naming_the_holder(tmp_path):
    """Two annotate runs on one work folder: the second stops naming the first (pid, host,
    start); rounds.json keeps the first's round, and a later run adds its own."""
    import time

    from axal.rundir import RunFolderInUse

    lab = tmp_path / "lab"
    synthetic_folder(lab, n=3, labelled=1)
    overrides = ["al.initial=1", "dataset.patch_size=32", "k=1"]
    first = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "annotate.py"),
            f"dataset.root={lab}",
            *FAST,
            *overrides,
            "trainer.steps=400",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = lab / "axal" / "run.lock"
        for _ in range(600):
            if lock.is_file() and lock.read_text().strip():
                break
            time.sleep(0.2)
        with pytest.raises(RunFolderInUse, match=f"pid {first.pid} on host"):
            annotate(annotate_cfg(lab, *overrides, "trainer.steps=2"))
    finally:
        assert first.wait(timeout=600) == 0
    rounds = json.loads((lab / "axal" / "rounds.json").read_text())["rounds"]
    assert len(rounds) == 1
    annotate(annotate_cfg(lab, *overrides, "trainer.steps=2", "annotate.force=true"))
    rounds = json.loads((lab / "axal" / "rounds.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]


def test_a_changed_pixel_size_is_refused_advising_hydras_null(tmp_path):
    synthetic_folder(tmp_path, n=3, labelled=1)
    overrides = ("al.initial=1", "trainer.steps=2", "dataset.patch_size=32", "k=1")
    annotate(annotate_cfg(tmp_path, "dataset.pixel_size=null", *overrides))
    with pytest.raises(DataError, match="use dataset.pixel_size=null,"):
        annotate(annotate_cfg(tmp_path, "dataset.pixel_size=0.2", *overrides))


@pytest.mark.parametrize(
    "bad, named",
    [
        (["al.initial=0"], "al.initial=0"),
        (["strategy=bald", "strategy.sampling=foo"], "strategy.sampling='foo'"),
    ],
)
def test_the_cli_reports_bad_settings_in_one_paragraph(tmp_path, bad, named):
    lab = tmp_path / "lab é x"  # a path with a space and an accent
    synthetic_folder(lab, n=2, labelled=1)
    done = subprocess.run(
        [sys.executable, str(ROOT / "annotate.py"), f"dataset.root={lab}", *bad],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 1
    assert named in done.stderr and "Traceback" not in done.stdout + done.stderr, done.stderr


def test_an_edited_prediction_survives_the_next_round(tmp_path):
    """An annotator corrects a pool image's predicted mask in place and reruns: the edit is
    kept, the new prediction goes beside it, and an unedited prediction is refreshed in place."""
    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=6, labelled=2, size=64)
    overrides = (
        "al.initial=2",
        "dataset.pixel_size=0.1",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "dataset.batch_size=4",
        "trainer.steps=3",
        "trainer.finetune_steps=2",
        "k=1",
    )
    out = root / "axal"
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    picked = r0["suggestions"][0]["image"]
    pool = sorted(set(truth) - set(r0["labelled"]) - {picked})
    edited, untouched = pool[0], pool[1]
    edited_file = out / "predictions" / edited / "image_seg-axonmyelin.png"
    correction = truth[edited]  # the annotator's corrected mask, saved over the prediction
    Image.fromarray(correction).save(edited_file)
    before = edited_file.read_bytes()
    Image.fromarray(truth[picked]).save(root / picked / "mask.png")

    r1 = annotate(annotate_cfg(root, *overrides))["rounds"][1]
    assert edited_file.read_bytes() == before  # the person's work is kept
    beside = edited_file.with_name("image_seg-axonmyelin.round-1.png")
    assert beside.is_file() and f"{edited}/image_seg-axonmyelin.round-1.png" in str(
        r1["predictions"][edited]
    )
    plain = out / "predictions" / untouched / "image_seg-axonmyelin.png"
    assert not plain.with_name("image_seg-axonmyelin.round-1.png").exists()
    assert any(
        p.endswith(f"{untouched}/image_seg-axonmyelin.png") for p in r1["predictions"][untouched]
    )


def test_the_page_says_how_the_strategy_picked():
    from axal.suggestions import how_picked

    hybrid = {"_target_": "axal.acquisition.Hybrid", "base": "bald", "prefilter": None}
    record = {
        "config": {"strategy": hybrid},
        "suggestions": [{}] * 4,
        "scores": dict.fromkeys("abcdefghijklm", 0.0),
    }
    text = how_picked(record)
    assert "the 12 most uncertain of the 13" in text and "the 4 most different" in text
    assert "order of picking" in text and "mostly diversity" in text
    record["config"]["strategy"] = {"_target_": "axal.acquisition.Bald"}
    assert "4 highest-scoring of the 13" in how_picked(record)


def test_labelled_tiles_saved_over_are_named_on_the_next_round(tmp_path, caplog):
    """A tile labelled in round 0 whose mask then changes (saved over with model output) is
    warned about, by name, and recorded; the page says which file to edit for such images."""
    root = tmp_path / "lab"
    synthetic_folder(root, n=3, labelled=1)
    overrides = (
        "al.unit=tile",
        "al.tile_size=24",
        "al.initial=1",
        "dataset.pixel_size=0.2",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "trainer.steps=2",
        "k=1",
    )
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert set(r0["tile_masks"]) == set(r0["labelled"])
    mask_path = root / "syn-000" / "mask.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:48, :48] = 0  # the top-left tile (24 px at the model's scale) replaced
    Image.fromarray(mask).save(mask_path)
    with caplog.at_level("WARNING", logger="axal"):
        r1 = annotate(annotate_cfg(root, *overrides))["rounds"][1]
    assert r1["changed_tiles"] == ["syn-000@0,0,24,24"]
    assert "labelled tiles changed since round 0: syn-000@0,0,24,24" in caplog.text
    if any(s["image"] == "syn-000" for s in r1["suggestions"]):
        assert "your own mask" in (root / "axal" / "annotate.html").read_text()


def test_predictions_beside_images_keep_a_persons_file_and_overlays_share_one_scale(tmp_path):
    """``annotate.predictions_beside_images=true``: AxonDeepSeg's names next to each image, a
    file already there (a person's) kept, never read as an image; the round's overlays share
    one colour scale: the largest value of its maps."""
    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=6, labelled=2, size=64)
    overrides = (
        "al.initial=2",
        "dataset.pixel_size=0.1",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "dataset.batch_size=4",
        "trainer.steps=3",
        "trainer.finetune_steps=2",
        "k=2",
        "annotate.predictions_beside_images=true",
    )
    pool = sorted(truth)[2:]
    own = root / pool[0] / "image_seg-axonmyelin.png"  # e.g. AxonDeepSeg's, corrected by hand
    Image.fromarray(truth[pool[0]]).save(own)
    before = own.read_bytes()

    state = annotate(annotate_cfg(root, *overrides))
    r0 = state["rounds"][0]
    assert own.read_bytes() == before  # the person's file is kept ...
    assert (root / pool[0] / "image_seg-axonmyelin.round-0.png").is_file()  # ... new one beside
    for case in pool[1:]:
        for kind, allowed in ADS_VALUES.items():
            with Image.open(root / case / f"image_seg-{kind}.png") as im:
                assert im.size == (64, 64) and set(np.unique(np.asarray(im))) <= allowed
        assert f"../{case}/image_seg-axonmyelin.png" in r0["predictions"][case]
    assert not list((root / "axal" / "predictions").rglob("*.png"))  # none in the work folder
    assert "beside each image" in (root / "axal" / "annotate.html").read_text()

    rows = [row for row in r0["suggestions"] if row.get("uncertainty")]
    assert len(rows) == 2
    top = max(float(np.load(root / "axal" / row["uncertainty"]).max()) for row in rows)
    assert all(row["overlay_scale"] == [0.0, pytest.approx(top)] for row in rows)
    assert "share one colour scale" in (root / "axal" / "annotate.html").read_text()

    for row in r0["suggestions"]:  # the annotator labels the suggestions; the next round
        Image.fromarray(truth[row["image"]]).save(root / row["image"] / "mask.png")
    r1 = annotate(annotate_cfg(root, *overrides))["rounds"][1]
    assert len(r1["labelled"]) + len(r1["predictions"]) == 6  # no prediction read as an image
    assert own.read_bytes() == before


def test_annotate_and_predict_print_each_line_once_without_advertisements(tmp_path):
    """The console of annotate.py and predict.py, as run.py's: Lightning's lines once (not
    again through its own handler), no "Tip:" advertising other products."""
    root = tmp_path / "lab"
    synthetic_folder(root, n=4, labelled=3, size=64)
    overrides = [
        f"dataset.root={root}", *FAST, "k=1", "al.initial=3", "dataset.pixel_size=0.1",
        "dataset.patch_size=32", "dataset.infer_size=64", "dataset.batch_size=2",
        "trainer.steps=2",
    ]  # fmt: skip
    run = dict(capture_output=True, text=True, cwd=ROOT, timeout=300)
    done = subprocess.run([sys.executable, str(ROOT / "annotate.py"), *overrides], **run)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert said.count("GPU available: False") == 1  # one trainer, one copy of its line
    assert "Tip:" not in said and "litlogger" not in said
    ckpt = root / "axal" / "checkpoints" / "round-0.ckpt"
    predicted = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt={ckpt}", f"input={root / 'syn-003'}",
         f"out={tmp_path / 'pred'}"],
        **run,
    )  # fmt: skip
    said = predicted.stdout + predicted.stderr
    assert predicted.returncode == 0, said[-3000:]
    lines = [x for x in said.splitlines() if x.strip() and "%" not in x]  # progress bars aside
    assert len(lines) == len(set(lines)) and "predicted 1 images" in said
    assert "deprecated" not in said
