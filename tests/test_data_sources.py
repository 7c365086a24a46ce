"""Dataset sources: real BIDS datasets, tiny generated BIDS/folder datasets, locating data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pooch
import pytest
from PIL import Image

from axal.data import DataError, load_bids, load_dataset, load_folder, locate_dataset
from tests.conftest import REAL_DATA, needs_data

DATA = REAL_DATA


def _offline(*args, **kwargs):
    raise ConnectionError("no network")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Fail any test that would download; keep pooch's cache out of the user's home."""

    def refuse(*args, **kwargs):
        pytest.fail("test tried to download a dataset")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    monkeypatch.setattr(pooch, "os_cache", lambda project: tmp_path / "cache" / project)


@pytest.fixture(scope="module")
def tem():
    return load_bids(DATA / "tem_mouse_corpuscallosum")


@pytest.fixture(scope="module")
def sem():
    return load_bids(DATA / "sem_rat_spinalcord", modality="SEM")


# ----------------------------------------------------------------- real data


@needs_data
def test_real_tem(tem):
    assert len(tem) == 21
    assert len({s.subject for s in tem}) == 10
    stems = sorted(p.stem for p in (DATA / "tem_mouse_corpuscallosum").glob("sub-*/micr/*.png"))
    assert [s.id for s in tem] == stems
    for s in tem:
        assert s.subject == s.id.split("_")[0]
        assert s.image.dtype == np.float32 and s.image.shape == (600, 600)
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.mask.dtype == np.uint8 and s.mask.shape == s.image.shape
        assert set(np.unique(s.mask).tolist()) == {0, 1, 2}
        assert s.pixel_size == pytest.approx(0.00493)
        assert Path(s.path).is_file()


@needs_data
def test_real_sem(sem):
    assert len(sem) == 10
    assert len({s.subject for s in sem}) == 8
    by_id = {s.id: s for s in sem}
    assert by_id["sub-rat1_sample-data1_SEM"].pixel_size == pytest.approx(0.18)  # per-sample JSON
    assert by_id["sub-rat3_sample-data9_SEM"].pixel_size == pytest.approx(0.1)  # per-subject JSON
    assert by_id["sub-rat7_sample-Maxo03img60_SEM"].pixel_size == pytest.approx(0.07)
    assert sum(s.subject == "sub-rat3" for s in sem) == 3
    la = by_id["sub-rat6_sample-data15_SEM"]  # LA image and LA mask
    assert la.image.shape == la.mask.shape == (744, 1154)
    anti = by_id["sub-rat2_sample-data5_SEM"]  # anti-aliased mask, myelin at 128
    assert (anti.mask == 1).mean() > 0.3
    for s in sem:
        assert set(np.unique(s.mask).tolist()) == {0, 1, 2}
        assert s.image.ndim == 2 and s.image.shape == s.mask.shape


@needs_data
def test_locate_real_dataset_from_root_and_env(monkeypatch):
    tem_dir = DATA / "tem_mouse_corpuscallosum"
    assert locate_dataset("tem", root=str(tem_dir)) == tem_dir
    assert locate_dataset("tem", root=str(DATA)) == tem_dir
    monkeypatch.setenv("AXAL_DATA", str(DATA))
    assert locate_dataset("sem") == DATA / "sem_rat_spinalcord"
    monkeypatch.setenv("AXAL_DATA", str(tem_dir))  # pointing at the dataset folder itself
    assert locate_dataset("tem") == tem_dir
    monkeypatch.setattr(pooch, "retrieve", _offline)
    with pytest.raises(DataError, match="could not be downloaded"):
        locate_dataset("sem")  # the TEM folder must not be taken for the SEM dataset
    with pytest.raises(DataError, match="dataset.root"):
        locate_dataset("sem", root=str(tem_dir))


@needs_data
def test_load_dataset_tem_with_resampling():
    samples = load_dataset("tem", root=str(DATA), pixel_size=0.0493)
    assert len(samples) == 21 and [s.id for s in samples] == sorted(s.id for s in samples)
    assert all(s.image.shape == s.mask.shape == (60, 60) for s in samples)


# ----------------------------------------------------------------- tiny BIDS datasets


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _bids(root: Path, subject: str, sample: str, modality="TEM", shape=(8, 10), mask=True) -> str:
    stem = f"{subject}_sample-{sample}_{modality}"
    _png(root / subject / "micr" / f"{stem}.png", np.full(shape, 100, dtype=np.uint8))
    if mask:
        raw = np.zeros(shape, dtype=np.uint8)
        raw[2:6, 2:6], raw[3:5, 3:5] = 127, 255
        _png(
            root / "derivatives/labels" / subject / "micr" / f"{stem}_seg-axonmyelin-manual.png",
            raw,
        )
    return stem


def test_bids_pixel_size_json_and_subject(tmp_path):
    a = _bids(tmp_path, "sub-A", "1")
    b = _bids(tmp_path, "sub-A", "2")
    c = _bids(tmp_path, "sub-B", "1")
    micr = tmp_path / "sub-A/micr"
    (micr / "sub-A_TEM.json").write_text(json.dumps({"PixelSize": [0.5, 0.5]}))
    (micr / f"{b}.json").write_text(json.dumps({"PixelSize": 0.25}))  # per-image beats per-subject
    samples = load_bids(tmp_path)
    assert [s.id for s in samples] == sorted([a, b, c])
    got = {s.id: (s.subject, s.pixel_size) for s in samples}
    assert got == {a: ("sub-A", 0.5), b: ("sub-A", 0.25), c: ("sub-B", None)}
    mask = samples[0].mask
    assert mask[0, 0] == 0 and mask[2, 2] == 1 and mask[3, 3] == 2


def test_bids_combines_axon_and_myelin_and_ignores_uaxon(tmp_path):
    stem = _bids(tmp_path, "sub-A", "1", mask=False)
    labels = tmp_path / "derivatives/labels/sub-A/micr"
    axon = np.zeros((8, 10), dtype=np.uint8)
    axon[3:5, 3:5] = 255
    myelin = np.zeros((8, 10), dtype=np.uint8)
    myelin[2:6, 2:6] = 255  # overlaps the axon: axon must win
    uaxon = np.full((8, 10), 255, dtype=np.uint8)
    _png(labels / f"{stem}_seg-axon-manual.png", axon)
    _png(labels / f"{stem}_seg-myelin-manual.png", myelin)
    _png(labels / f"{stem}_seg-uaxon-manual.png", uaxon)
    (mask,) = [s.mask for s in load_bids(tmp_path)]
    expected = np.zeros((8, 10), dtype=np.uint8)
    expected[2:6, 2:6], expected[3:5, 3:5] = 1, 2
    np.testing.assert_array_equal(mask, expected)


def test_bids_modality_filter(tmp_path):
    _bids(tmp_path, "sub-A", "1", modality="TEM")
    sem = _bids(tmp_path, "sub-A", "2", modality="SEM")
    assert [s.id for s in load_bids(tmp_path, modality="SEM")] == [sem]
    assert len(load_bids(tmp_path)) == 2
    with pytest.raises(DataError, match="no BF images"):
        load_bids(tmp_path, modality="BF")


def test_bids_mask_without_image(tmp_path):
    _bids(tmp_path, "sub-A", "1")
    orphan = _png(
        tmp_path / "derivatives/labels/sub-A/micr/sub-A_sample-9_TEM_seg-axonmyelin-manual.png",
        np.zeros((8, 10), dtype=np.uint8),
    )
    with pytest.raises(DataError, match="mask without a matching image") as err:
        load_bids(tmp_path)
    assert str(orphan) in str(err.value)


def test_bids_size_mismatch_names_both_files_and_sizes(tmp_path):
    stem = _bids(tmp_path, "sub-A", "1", mask=False)
    mask = _png(
        tmp_path / f"derivatives/labels/sub-A/micr/{stem}_seg-axonmyelin-manual.png",
        np.zeros((9, 10), dtype=np.uint8),
    )
    with pytest.raises(DataError) as err:
        load_bids(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / f"sub-A/micr/{stem}.png") in msg and str(mask) in msg
    assert "10x8" in msg and "10x9" in msg


def test_bids_image_without_mask_and_empty_dataset(tmp_path):
    stem = _bids(tmp_path, "sub-A", "1", mask=False)
    with pytest.raises(DataError, match="has no mask") as err:
        load_bids(tmp_path)
    assert f"{stem}.png" in str(err.value) and "seg-axonmyelin-manual.png" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=str(empty)):
        load_bids(empty)


# ----------------------------------------------------------------- legacy folder layout


def _case(root: Path, name: str, shape=(6, 7), myelin=128, image=True, mask=True) -> None:
    if image:
        _png(root / name / "image.png", np.full(shape, 50, dtype=np.uint8))
    if mask:
        raw = np.zeros(shape, dtype=np.uint8)
        raw[1:5, 1:5], raw[2:4, 2:4] = myelin, 255
        _png(root / name / "mask.png", raw)


def test_load_folder(tmp_path):
    _case(tmp_path, "b", myelin=128)
    _case(tmp_path, "a", myelin=127)
    _case(tmp_path, "c")
    (tmp_path / "empty_dir").mkdir()  # no image, no mask: ignored
    (tmp_path / "a" / "pixel_size_in_micrometer.txt").write_text("0.02\n")
    (tmp_path / "subjects.tsv").write_text("case\tsubject\na\tmouse1\nb\tmouse1\nc\tc\n")
    samples = load_folder(tmp_path)
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert [s.subject for s in samples] == ["mouse1", "mouse1", "c"]
    assert [s.pixel_size for s in samples] == [0.02, None, None]
    for s in samples:
        assert s.mask[1, 1] == 1 and s.mask[2, 2] == 2 and s.mask[0, 0] == 0
        assert s.image.dtype == np.float32 and s.path.endswith("image.png")


def test_load_folder_errors(tmp_path):
    _case(tmp_path, "a")
    _case(tmp_path, "orphan", image=False)
    with pytest.raises(DataError, match="mask without an image.*orphan"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match="dataset.root"):
        load_dataset("folder")
    bad = tmp_path / "bad"
    _case(bad, "x")
    (bad / "x" / "pixel_size_in_micrometer.txt").write_text("about 0.1")
    with pytest.raises(DataError, match="pixel_size_in_micrometer.txt"):
        load_folder(bad)


# ----------------------------------------------------------------- locate / download / load_dataset


def test_download_failure_tells_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("AXAL_DATA", str(tmp_path))  # empty: nothing to find locally

    monkeypatch.setattr(pooch, "retrieve", _offline)
    with pytest.raises(DataError) as err:
        locate_dataset("tem")
    msg = str(err.value)
    assert "could not be downloaded" in msg
    assert "dataset.root=/path/to/tem_mouse_corpuscallosum" in msg
    assert "AXAL_DATA=/path/holding/tem_mouse_corpuscallosum" in msg
    assert (
        "https://github.com/axondeepseg/data_axondeepseg_srf_testing/archive/"
        "e72182a4e4a986dbffd161bd8d2dcb265bab5502.zip"
    ) in msg


def test_download_finds_extracted_dataset_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("AXAL_DATA", raising=False)
    extracted = tmp_path / "x" / "data_axondeepseg_sem-a4d02a1"
    files = [
        extracted / "dataset_description.json",
        extracted / "derivatives/labels/dataset_description.json",
    ]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    calls = []

    def fake_retrieve(url, known_hash=None, fname=None, path=None, processor=None, **kwargs):
        calls.append(url)
        assert isinstance(processor, pooch.Unzip)
        return [str(f) for f in reversed(files)]

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    assert locate_dataset("sem") == extracted
    url = (
        "https://github.com/axondeepseg/data_axondeepseg_sem/archive/"
        "a4d02a1adec4bde04267baab3770e18f441afd73.zip"
    )
    assert calls == [url]


def test_load_dataset_synthetic_and_bad_names():
    samples = load_dataset("synthetic", n_images=5, size=64, n_subjects=2, seed=3, pixel_size=0.2)
    assert [s.id for s in samples] == [f"syn-{i:03d}" for i in range(5)]
    assert all(s.image.shape == (32, 32) and s.pixel_size == 0.2 for s in samples)
    with pytest.raises(DataError, match="dataset.name"):
        load_dataset("mri")
    with pytest.raises(DataError, match="dataset.name"):
        locate_dataset("synthetic")


def test_a_subject_table_that_could_leak_the_split_is_refused_naming_it(tmp_path):
    """A subjects.tsv missing a case (it would be split as its own subject) or listing a case
    whose image is absent is an error naming the file and the cases."""
    _case(tmp_path, "a")
    _case(tmp_path, "b")
    tsv = tmp_path / "subjects.tsv"
    tsv.write_text("case\tsubject\na\tmouse1\n")
    with pytest.raises(DataError, match=r"subjects.tsv names no subject for 1 cases \(b\)"):
        load_folder(tmp_path)
    tsv.write_text("case\tsubject\na\tmouse1\nb\tmouse1\ngone\tmouse2\n")
    with pytest.raises(DataError, match="subjects.tsv lists cases with no image: gone"):
        load_folder(tmp_path)


def test_predictions_written_beside_bids_images_are_never_read_as_images(tmp_path):
    from axal.data.sources import bids_images

    micr = tmp_path / "sub-01" / "micr"
    micr.mkdir(parents=True)
    names = [
        "sub-01_sample-1_TEM.png",
        "sub-01_sample-1_TEM_seg-axonmyelin.png",
        "sub-01_sample-1_TEM_seg-axon.png",
        "sub-01_sample-1_TEM_seg-axonmyelin.round-2.png",  # kept beside a person's edit
    ]
    for name in names:
        (micr / name).write_bytes(b"")
    assert [p.name for p in bids_images(tmp_path)] == ["sub-01_sample-1_TEM.png"]
