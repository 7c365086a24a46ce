"""Image/mask readers on the real files' quirks and on tiny generated files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
from PIL import Image

from axal.data import (
    DataError,
    Sample,
    classes_from_axon_myelin,
    classes_from_axonmyelin,
    read_image,
    read_mask,
    resample,
)
from tests.conftest import REAL_DATA, needs_data

DATA = REAL_DATA

SEM_LABELS = "sem_rat_spinalcord/derivatives/labels"
TEM_LABELS = "tem_mouse_corpuscallosum/derivatives/labels"


# ----------------------------------------------------------------- real-file quirks


@needs_data
def test_read_image_la_real_sem_uses_grey_channel_and_ignores_alpha():
    path = DATA / "sem_rat_spinalcord/sub-rat6/micr/sub-rat6_sample-data15_SEM.png"
    with Image.open(path) as im:
        assert im.mode == "LA"  # the quirk this test is about
        raw = np.asarray(im)
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == raw.shape[:2] == (744, 1154)
    np.testing.assert_allclose(img, raw[..., 0] / 255.0, atol=1e-6)


@needs_data
@pytest.mark.parametrize(
    "rel, mode, values",
    [
        (
            f"{SEM_LABELS}/sub-rat6/micr/sub-rat6_sample-data15_SEM_seg-axonmyelin-manual.png",
            "LA",
            {0, 127, 255},
        ),
        (
            f"{TEM_LABELS}/sub-370/micr/sub-370_sample-0003_acq-roi_TEM_seg-uaxon-manual.png",
            "LA",
            {0, 255},
        ),
        (
            f"{TEM_LABELS}/sub-372/micr/sub-372_sample-0003_acq-roi_TEM_seg-uaxon-manual.png",
            "RGB",
            {0, 255},
        ),
    ],
)
def test_read_mask_real_la_and_rgb_give_2d_raw_grey(rel, mode, values):
    path = DATA / rel
    with Image.open(path) as im:
        assert im.mode == mode
        first = np.asarray(im)[..., 0]
    mask = read_mask(path)
    assert mask.dtype == np.uint8 and mask.ndim == 2
    assert set(np.unique(mask).tolist()) == values
    np.testing.assert_array_equal(mask, first)


@needs_data
def test_anti_aliased_real_mask_maps_to_nearest_class():
    path = DATA / f"{SEM_LABELS}/sub-rat2/micr/sub-rat2_sample-data5_SEM_seg-axonmyelin-manual.png"
    raw = read_mask(path)
    assert {128, 130, 233} <= set(np.unique(raw).tolist())  # the quirk: no 127 at all
    classes = classes_from_axonmyelin(raw)
    assert set(np.unique(classes).tolist()) == {0, 1, 2}
    assert (classes[raw == 128] == 1).all() and (classes[raw == 130] == 1).all()
    assert (classes[raw == 233] == 2).all() and (classes[raw == 255] == 2).all()
    assert (classes == 1).mean() > 0.3  # myelin is ~40% of this image, not lost to background


# ----------------------------------------------------------------- class mapping


def test_classes_from_axonmyelin_thresholds():
    raw = np.array([[0, 10, 63, 64, 127, 128, 130, 191, 192, 233, 255]], dtype=np.uint8)
    expected = [[0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]]
    out = classes_from_axonmyelin(raw)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_classes_from_axonmyelin_rejects_colour():
    with pytest.raises(DataError, match="2-D"):
        classes_from_axonmyelin(np.zeros((4, 4, 3), dtype=np.uint8))


def test_axon_wins_over_myelin_when_combining_binary_masks():
    axon = np.array([[0, 255, 255, 0]], dtype=np.uint8)
    myelin = np.array([[0, 0, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(classes_from_axon_myelin(axon, myelin), [[0, 2, 2, 1]])


# ----------------------------------------------------------------- generated files


def test_rgba_image_is_luminance_and_alpha_is_ignored(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # transparent red
    rgba[0, 1] = (0, 255, 0, 255)
    rgba[0, 2] = (0, 0, 255, 17)
    rgba[1, :] = (200, 200, 200, 90)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    img = read_image(path)
    assert img.shape == (2, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], [0.299, 0.587, 0.114], atol=1e-3)
    np.testing.assert_allclose(img[1], 200 / 255, atol=1e-6)
    np.testing.assert_array_equal(read_mask(path)[1], [200, 200, 200])


def test_16bit_png_is_scaled_by_its_dtype_max(tmp_path):
    arr = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "img16.png"
    Image.fromarray(arr).save(path)
    img = read_image(path)
    np.testing.assert_allclose(img, arr / 65535.0, atol=1e-6)
    assert img.max() <= 1.0  # not divided by 255
    np.testing.assert_array_equal(read_mask(path), [[0, 1, 128, 255]])


def test_16bit_and_rgb_tiff(tmp_path):
    grey = tmp_path / "img16.tif"
    tifffile.imwrite(grey, np.array([[0, 65535], [13107, 52428]], dtype=np.uint16))
    np.testing.assert_allclose(read_image(grey), [[0, 1], [0.2, 0.8]], atol=1e-6)
    rgb = tmp_path / "rgb.tiff"
    tifffile.imwrite(rgb, np.full((2, 2, 3), 51, dtype=np.uint8))
    np.testing.assert_allclose(read_image(rgb), 0.2, atol=1e-6)


def test_palette_and_bilevel_images(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.putdata([0, 1])
    pal.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), [[0.0, 1.0]])
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 255])
    bilevel.save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), [[0, 255]])


def test_corrupt_truncated_and_missing_files_raise_data_error_naming_path(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all")
    Image.fromarray(np.arange(4096, dtype=np.uint8).reshape(64, 64)).save(tmp_path / "ok.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    for path in (garbage, truncated, tmp_path / "missing.png"):
        with pytest.raises(DataError, match=path.name):
            read_image(path)
        with pytest.raises(DataError, match=path.name):
            read_mask(path)


# ----------------------------------------------------------------- resample


def _sample(h=40, w=60, pixel_size=0.1):
    rng = np.random.default_rng(0)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[10:30, 10:30], mask[15:25, 15:25] = 1, 2
    return Sample("s", "sub-a", rng.random((h, w), dtype=np.float32), mask, pixel_size, "")


def test_resample_scales_to_target_pixel_size():
    s = _sample()
    half = resample(s, 0.2)
    assert half.image.shape == half.mask.shape == (20, 30)
    assert half.pixel_size == 0.2 and half.image.dtype == np.float32
    assert set(np.unique(half.mask).tolist()) == {0, 1, 2}  # nearest: no new class values
    assert abs(half.image.mean() - s.image.mean()) < 0.02
    double = resample(s, 0.05)
    assert double.image.shape == (80, 120) and double.mask[40, 40] == 2
    assert s.image.shape == (40, 60)  # input untouched


def test_resample_noop_and_invalid_target():
    s = _sample()
    assert resample(s, 0.1) is s
    unknown = _sample(pixel_size=None)
    assert resample(unknown, 0.5) is unknown
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(DataError, match="dataset.pixel_size"):
            resample(s, bad)


def test_resample_refuses_an_implausible_pixel_size_naming_file_and_value():
    """4.93 (nanometres written as micrometres) for a 0.00986 um/px model: 500x, refused
    before any memory goes, naming the file and the value; a plausible factor still works."""
    image = np.zeros((200, 200), np.float32)
    wrong = Sample("a", "a", image, None, 4.93, "/lab/a/image.png")
    with pytest.raises(DataError, match=r"/lab/a/image.png: its pixel size 4.93 um"):
        resample(wrong, 0.00986)
    assert resample(replace(wrong, pixel_size=0.0493), 0.00986).image.shape == (1000, 1000)


def test_predict_scaling_refuses_an_implausible_pixel_size_naming_the_file(tmp_path):
    from axal.predict import to_model_scale

    with pytest.raises(DataError, match="x.png: its pixel size 4.93"):
        to_model_scale(np.zeros((200, 200), np.float32), 4.93, 0.00986, tmp_path / "x.png")
