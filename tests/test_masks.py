"""Masks are read by their encoding or refused: never silently read as "no myelin"."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from axal.data import (
    AXON,
    MYELIN,
    DataError,
    check_foreground,
    decode_mask,
    load_bids,
    load_folder,
    make_synthetic,
    read_image,
    read_mask,
)
from axal.errors import AxalError
from axal.simulation import run
from tests.conftest import FAST, compose_cfg

ADSG = {0: 0, MYELIN: 127, AXON: 255}


def _write_folder(root: Path, encode, n: int = 6, size: int = 64) -> list:
    """A folder dataset of synthetic images whose masks are stored by ``encode(classes)``."""
    samples = make_synthetic(n_images=n, size=size, n_subjects=n)
    for s in samples:
        case = root / s.id
        case.mkdir(parents=True)
        Image.fromarray((s.image * 255).astype(np.uint8)).save(case / "image.png")
        Image.fromarray(encode(s.mask)).save(case / "mask.png")
    return samples


def _index(classes):
    return classes.astype(np.uint8)


def _myelin_only(classes):
    return np.where(classes == MYELIN, 255, 0).astype(np.uint8)


def _adsg(classes):
    return np.vectorize(ADSG.get)(classes).astype(np.uint8)


# ----------------------------------------------------------------- the cases


def test_class_index_masks_are_refused_naming_the_file_and_the_values(tmp_path):
    _write_folder(tmp_path, _index)
    with pytest.raises(DataError) as err:
        load_folder(tmp_path)
    msg = str(err.value)
    assert "mask.png" in msg and str(tmp_path) in msg
    assert "0 (" in msg and "1 (" in msg and "2 (" in msg  # the values found, with counts
    assert "dataset.mask_encoding=index" in msg


def test_class_index_masks_load_with_mask_encoding_index(tmp_path):
    samples = _write_folder(tmp_path, _index)
    loaded = load_folder(tmp_path, mask_encoding="index")
    for want, got in zip(samples, loaded):
        np.testing.assert_array_equal(got.mask, want.mask)


def test_myelin_only_0_255_masks_are_myelin_in_the_myelin_task(tmp_path):
    samples = _write_folder(tmp_path, _myelin_only)
    loaded = load_folder(tmp_path, task="myelin")
    for want, got in zip(samples, loaded):
        np.testing.assert_array_equal(got.mask == MYELIN, want.mask == MYELIN)
        assert (got.mask == MYELIN).any() and not (got.mask == AXON).any()


def test_myelin_only_0_255_masks_are_refused_in_the_axonmyelin_task(tmp_path):
    _write_folder(tmp_path, _myelin_only)
    with pytest.raises(DataError, match="one-class mask.*task=axonmyelin") as err:
        load_folder(tmp_path, task="axonmyelin")
    assert "mask.png" in str(err.value) and "task=myelin" in str(err.value)
    # the user can say that 255 is axon instead
    loaded = load_folder(tmp_path, task="axonmyelin", mask_encoding="axondeepseg")
    assert all(set(np.unique(s.mask)) <= {0, AXON} for s in loaded)


def test_a_run_on_class_index_masks_fails_instead_of_scoring_dice_1(tmp_path):
    _write_folder(tmp_path / "data", _index)
    cfg = compose_cfg(FAST + ["dataset=folder", f"dataset.root={tmp_path / 'data'}"])
    cfg.dataset.test_subjects, cfg.dataset.patch_size = 2, 64
    with pytest.raises(DataError, match="dataset.mask_encoding=index"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_run_on_myelin_only_masks_learns_myelin(tmp_path):
    _write_folder(tmp_path / "data", _myelin_only)
    cfg = compose_cfg(FAST + ["dataset=folder", f"dataset.root={tmp_path / 'data'}"])
    cfg.dataset.test_subjects, cfg.dataset.patch_size, cfg.al.rounds = 2, 64, 1
    test = run(cfg, tmp_path / "run")["rounds"][0]["test"]
    # myelin is in the ground truth: no empty-set Dice of 1 for a model that predicts nothing
    assert 0.0 <= test["dice"] < 1.0


def test_a_test_set_without_foreground_is_an_error_not_dice_1(tmp_path):
    masks = {"a": np.zeros((4, 4), np.uint8), "b": np.zeros((4, 4), np.uint8)}
    masks["c"] = masks["a"].copy()
    masks["c"][1, 1] = MYELIN
    with pytest.raises(DataError, match="hold no myelin pixels") as err:
        check_foreground(masks, ["a", "b"], "myelin")
    assert "a, b" in str(err.value)
    check_foreground(masks, ["a", "c"], "myelin")
    with pytest.raises(DataError, match="hold no axon pixels"):
        check_foreground(masks, ["a", "c"], "axonmyelin")
    # end to end: empty masks everywhere stop the run before any training
    _write_folder(tmp_path / "data", lambda c: np.zeros_like(c, dtype=np.uint8))
    cfg = compose_cfg(FAST + ["dataset=folder", f"dataset.root={tmp_path / 'data'}"])
    cfg.dataset.test_subjects, cfg.dataset.patch_size = 2, 64
    with pytest.raises(DataError, match="test images .* hold no myelin pixels"):
        run(cfg, tmp_path / "run")


# ----------------------------------------------------------------- encodings


def test_gradient_mask_is_refused_not_split_into_three_classes(tmp_path):
    gradient = np.tile(np.arange(256, dtype=np.uint8), (16, 1))
    with pytest.raises(DataError, match="256 distinct values from 0 to 255") as err:
        decode_mask(gradient, tmp_path / "grad.png")
    assert "grad.png" in str(err.value)
    for encoding in ("axondeepseg", "binary"):
        with pytest.raises(DataError, match="grad.png"):
            decode_mask(gradient, tmp_path / "grad.png", encoding)


def test_anti_aliased_masks_go_to_the_nearest_class():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, size=(50, 50))
    raw = _adsg(classes)
    edges = rng.random(raw.shape) < 0.03  # 3% of pixels in between, as along smoothed borders
    raw[edges] = rng.choice([60, 70, 130, 190, 200, 233], size=int(edges.sum()))
    out, encoding = decode_mask(raw, "aa.png")
    assert encoding == "axondeepseg"
    np.testing.assert_array_equal(out[~edges], classes[~edges])
    assert set(np.unique(out[raw == 233])) == {AXON} and set(np.unique(out[raw == 130])) == {1}


def test_anti_aliased_binary_mask_is_binary():
    raw = np.zeros((40, 40), np.uint8)
    raw[10:30, 10:30] = 255
    raw[10, 10:30] = np.resize([64, 128, 191], 20)  # an anti-aliased border, 128 among them
    out, encoding = decode_mask(raw, "bin.png", task="myelin")
    assert encoding == "binary" and (out[11:30, 10:30] == MYELIN).all()


def test_masks_of_one_dataset_must_share_one_encoding(tmp_path):
    samples = _write_folder(tmp_path, _adsg, n=3)
    odd = tmp_path / samples[1].id / "mask.png"
    Image.fromarray(_myelin_only(samples[1].mask)).save(odd)
    with pytest.raises(DataError, match="do not share one encoding") as err:
        load_folder(tmp_path)
    assert str(odd) in str(err.value)


def test_unknown_mask_encoding_names_the_setting(tmp_path):
    _write_folder(tmp_path, _adsg, n=2)
    with pytest.raises(DataError, match="dataset.mask_encoding='rgb'"):
        load_folder(tmp_path, mask_encoding="rgb")


def test_bids_axonmyelin_masks_as_class_indices_are_refused(tmp_path):
    stem = "sub-A_sample-1_TEM"
    (tmp_path / "sub-A/micr").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / f"sub-A/micr/{stem}.png")
    labels = tmp_path / "derivatives/labels/sub-A/micr"
    labels.mkdir(parents=True)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6], mask[3:5, 3:5] = 1, 2
    Image.fromarray(mask).save(labels / f"{stem}_seg-axonmyelin-manual.png")
    with pytest.raises(DataError, match=f"{stem}_seg-axonmyelin-manual.png"):
        load_bids(tmp_path)
    assert (load_bids(tmp_path, mask_encoding="index")[0].mask == mask).all()


def test_data_errors_are_user_errors():
    assert issubclass(DataError, AxalError)


# ----------------------------------------------------------------- 16-bit data


def test_12_bit_data_in_a_16_bit_png_warns_and_uses_the_range_found(tmp_path, caplog):
    arr = np.array([[0, 1000, 2000, 4095]], dtype=np.uint16)
    path = tmp_path / "img12.png"
    Image.fromarray(arr).save(path)
    with caplog.at_level(logging.WARNING):
        img = read_image(path)
    np.testing.assert_allclose(img, arr / 4095.0, atol=1e-6)  # not almost black (/ 65535)
    assert "img12.png" in caplog.text and "less than 1/16" in caplog.text
    assert "dataset.bit_depth" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the setting scales every image alike, silently
        np.testing.assert_allclose(read_image(path, bit_depth=14), arr / 16383.0, atol=1e-6)
    assert caplog.text == ""
    with pytest.raises(DataError, match="dataset.bit_depth=10"):
        read_image(path, bit_depth=10)


def test_full_range_16_bit_image_is_not_rescaled(tmp_path, caplog):
    arr = np.array([[0, 30000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "img16.png")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(read_image(tmp_path / "img16.png"), arr / 65535.0, atol=1e-6)
    assert caplog.text == ""


def test_16_bit_class_index_mask_keeps_its_values(tmp_path):
    arr = np.array([[0, 1, 2, 2]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "mask16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask16.png"), [[0, 1, 2, 2]])
