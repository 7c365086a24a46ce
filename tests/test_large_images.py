"""Large images: streamed row bands give the whole-image results, and masks stay ADS's PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from axal.data.io import ImageRows, Sample, read_image, resample
from axal.mc_dropout import StatBands, eval_mode, mc_dropout_stats, split_stages
from axal.model import SegModel
from axal.networks import SmpUNet
from axal.pngstream import GreyPngWriter
from axal.predict import classes_of_probabilities, predict_image, segment_bands, to_model_scale
from axal.streaming import ArrayRows, BilinearRows, ResampledRows
from axal.tiling import blend_weight, pad_to, sliding_window, tile_starts


def _whole_image_windows(fn, image, patch, overlap, batch_size, multiple=32):
    """The whole-image sliding window as axal computed it before row bands (reference)."""
    c, h, w = image.shape
    ph = min(patch, -(-h // multiple) * multiple)
    pw = min(patch, -(-w // multiple) * multiple)
    padded = pad_to(image, ph, pw, multiple)
    hh, ww = padded.shape[-2:]
    weight = blend_weight(ph, pw, overlap)
    out, norm = None, torch.zeros(hh, ww)
    coords = [(y, x) for y in tile_starts(hh, ph, overlap) for x in tile_starts(ww, pw, overlap)]
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        pred = fn(torch.stack([padded[:, y : y + ph, x : x + pw] for y, x in chunk]))
        if out is None:
            out = torch.zeros(pred.shape[1], hh, ww, dtype=pred.dtype)
        for (y, x), p in zip(chunk, pred):
            out[:, y : y + ph, x : x + pw] += p * weight
            norm[y : y + ph, x : x + pw] += weight
    return (out / norm.clamp_min(1e-8))[:, :h, :w]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = SmpUNet(
        encoder_name="timm-mobilenetv3_small_minimal_100",
        encoder_weights=None,
        decoder_channels=[16, 8, 8, 8, 8],
        dropout_rate=0.2,
        dropout_placement="paper",
        classes=3,
    )
    return SegModel(net, n_classes=3, patch_size=64, overlap=16, eval_batch_size=3).eval()


@pytest.mark.parametrize("shape", [(1, 150, 130), (1, 20, 15), (1, 70, 300)])
def test_row_bands_give_the_whole_image_sliding_window_bit_for_bit(shape):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    image = torch.rand(shape)
    with torch.no_grad():

        def fn(t):
            return torch.softmax(conv(t), 1)

        assert torch.equal(
            sliding_window(fn, image, patch=64, overlap=16, batch_size=3),
            _whole_image_windows(fn, image, 64, 16, 3),
        )


def test_mc_statistics_in_bands_do_not_depend_on_the_callers_rng(model):
    net = model.net
    image = torch.rand(1, 150, 100)
    prefix, suffix = split_stages(net)
    kw = dict(T=3, patch=64, overlap=16, tile_batch=2, sample_chunk=2, seed=4)
    whole = mc_dropout_stats(net, image, **kw)
    bands = StatBands(prefix, suffix, image, 3, 64, 16, 2, 2, 4, torch.device("cpu"), 32, modes=net)
    rows, entropy = 0, []
    for y0, maps in bands:
        assert y0 == rows and maps["entropy"].shape[0] <= 64  # one window row at a time
        rows += maps["entropy"].shape[0]
        entropy.append(maps["entropy"])
        torch.rand(100)  # the caller's own draws between bands change nothing
    assert rows == 150
    assert torch.equal(torch.cat(entropy), whole.entropy)
    np.testing.assert_array_equal(bands.features, whole.features)


def _png(path, array, pixel_size=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    if pixel_size is not None:
        (path.parent / "pixel_size_in_micrometer.txt").write_text(f"{pixel_size}\n")
    return path


@pytest.mark.parametrize("pixel_size", [0.1, 0.07, 0.13])  # the model's, upsampled, shrunk
def test_streamed_predict_writes_the_whole_image_masks(model, tmp_path, pixel_size):
    """predict's masks and uncertainty, streamed, equal the whole-image computation (class
    maps exactly, except where two classes tie to float rounding)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:170, 0:150]
    grey = 0.5 + 0.3 * np.sin(yy / 7) * np.sin(xx / 5) + rng.normal(0, 0.05, yy.shape)
    path = _png(tmp_path / "img" / "image.png", np.clip(grey * 255, 0, 255).astype(np.uint8))
    meta = {"pixel_size": 0.1, "task": "axonmyelin"}
    files = predict_image(model, meta, path, tmp_path / "out", 3, pixel_size, seed=5)
    names = {f.name for f in files}
    assert names == {f"image_seg-{k}.png" for k in ("axonmyelin", "axon", "myelin")} | {
        "image_uncertainty.png"
    }

    scaled = to_model_scale(read_image(path), pixel_size, 0.1, path)
    with eval_mode(model), torch.inference_mode():
        probs = model.predict_image(torch.from_numpy(scaled)[None])
        probs = F.interpolate(probs[None], size=(170, 150), mode="bilinear")[0]
    top2 = probs.topk(2, dim=0).values
    decided = ((top2[0] - top2[1]) > 1e-4).numpy()
    expected = np.array([0, 127, 255], np.uint8)[probs.argmax(0).numpy()]
    written = np.asarray(Image.open(tmp_path / "out" / "image_seg-axonmyelin.png"))
    assert written.shape == (170, 150) and set(np.unique(written)) <= {0, 127, 255}
    np.testing.assert_array_equal(written[decided], expected[decided])
    axon = np.asarray(Image.open(tmp_path / "out" / "image_seg-axon.png"))
    np.testing.assert_array_equal(axon, np.where(written == 255, 255, 0))

    stats = mc_dropout_stats(model.net, scaled, T=3, patch=64, overlap=16, seed=_seed(5))
    entropy = F.interpolate(stats.entropy[None, None], size=(170, 150), mode="bilinear")[0, 0]
    expected_grey = np.clip(np.rint(entropy.numpy() / math.log(3) * 255), 0, 255)
    grey_out = np.asarray(Image.open(tmp_path / "out" / "image_uncertainty.png")).astype(int)
    assert np.abs(grey_out - expected_grey).max() <= 1


def _seed(seed):
    from axal.acquisition import image_seed

    return image_seed(seed, "image")


def test_segment_bands_arrive_one_window_row_at_a_time(model):
    image = np.random.default_rng(2).random((300, 90), dtype=np.float32)
    heights = [rows.shape[0] for _, rows in segment_bands(model, image, (300, 90))]
    # a batch of 3 windows spans at most two window rows (2 windows per row): never the image
    assert sum(heights) == 300 and len(heights) >= 4 and max(heights) <= 2 * 64


def test_streamed_png_is_a_plain_grey_png_and_never_half_written(tmp_path):
    target = tmp_path / "mask.png"
    _png(target, np.full((5, 7), 127, np.uint8))
    rows = np.random.default_rng(0).integers(0, 256, (300, 41), dtype=np.uint8)
    with pytest.raises(RuntimeError):
        with GreyPngWriter(target, 300, 41) as png:
            png.write(rows[:100])
            raise RuntimeError("disk full")
    assert np.asarray(Image.open(target)).shape == (5, 7)  # the old file, intact
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]  # no temporary left
    with GreyPngWriter(target, 300, 41) as png:
        for y in range(0, 300, 77):
            png.write(rows[y : y + 77])
    with Image.open(target) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), rows)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(60 * 70, dtype=np.uint32).reshape(60, 70).astype(np.uint8),
        (np.arange(60 * 70).reshape(60, 70) * 7).astype(np.uint16),
        np.random.default_rng(0).integers(0, 255, (60, 70, 3), dtype=np.uint8),
    ],
)
def test_images_are_read_in_bands_exactly_as_whole(tmp_path, array):
    path = _png(tmp_path / "x.png", array)
    rows = ImageRows(path)
    grey = array.astype(np.float64)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114])
    scale = 255.0 if array.dtype == np.uint8 else 65535.0  # 16-bit using more than 1/16
    expected = np.clip(grey / scale, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(
        np.concatenate([rows.rows(y, y + 7) for y in range(0, 60, 7)]), expected
    )


def test_resampling_in_bands_matches_the_whole_image_resize(monkeypatch):
    image = np.random.default_rng(0).random((301, 257), dtype=np.float32)
    for size in [(150, 128), (611, 522)]:
        whole = np.clip(
            np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR)), 0, 1
        )
        rows = ResampledRows(ArrayRows(image), size)
        bands = np.concatenate([rows.rows(y, min(size[0], y + 37)) for y in range(0, size[0], 37)])
        np.testing.assert_allclose(bands, whole, atol=1e-5)
        # a sample beyond axal.data.io.BANDED_RESAMPLE_PIXELS is resampled band by band
        monkeypatch.setattr("axal.data.io.BANDED_RESAMPLE_PIXELS", 1000)
        factor = size[0] / 301
        sample = resample(Sample("big", "big", image, None, 0.1 * factor, ""), 0.1)
        assert sample.image.shape == (round(301 * factor), round(257 * factor))
        expected = Image.fromarray(image).resize(sample.image.shape[::-1], Image.BILINEAR)
        np.testing.assert_allclose(sample.image, np.clip(np.asarray(expected), 0, 1), atol=1e-5)
        monkeypatch.undo()


def test_bilinear_rows_match_interpolate():
    maps = torch.rand(3, 97, 64)
    for size in [(50, 33), (200, 64), (97, 80)]:
        resizer = BilinearRows(97, *size)
        parts = [resizer.push_all(maps[:, y : y + 10]) for y in range(0, 97, 10)]
        out = torch.cat([p for p in parts if p is not None], dim=1)
        expected = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["mc_dropout", "entropy", "bald", "margin", "hybrid"])
def test_pool_scores_from_bands_equal_the_whole_image_maps(model, name):
    """Pixel-wise strategies score the pool in row bands: the same scores and picks, and the
    same prediction beside the map, as from whole maps of every statistic."""
    from axal.acquisition import _BASES, Hybrid, acquire, image_seed
    from axal.pools import Unit

    strategy = Hybrid(base="bald", prefilter=3) if name == "hybrid" else _BASES[name]()
    rng = np.random.default_rng(3)
    images = {f"i{n}": rng.random((90 + 20 * n, 120), dtype=np.float32) for n in range(3)}
    units = {i: [Unit(i, x, y, 40, 40) for y in (0, 40) for x in (0, 40, 80)] for i in images}
    shown = {}
    kw = dict(mc_samples=3, seed=7, units=units, patch=64, overlap=16, tile_batch=2)
    picks, scores = acquire(
        strategy, model.net, images, 2, on_image=lambda i, s, m: shown.setdefault(i, (s, m)), **kw
    )
    for i, image in images.items():
        whole = mc_dropout_stats(
            model.net, image, T=3, patch=64, overlap=16, seed=image_seed(7, i), tile_batch=2
        )
        expected = strategy.pixel_map(whole)
        stats, pixel_map = shown[i]
        assert torch.equal(pixel_map, expected)
        assert torch.equal(stats.prediction.long(), whole.prediction)
        for u in units[i]:
            assert scores[u.id] == strategy.reduce(expected[u.slices])
    assert len(picks) == 2


def test_classes_of_probabilities_is_argmax_with_its_ties():
    p = torch.rand(3, 50, 40)
    p[1, :5] = p[0, :5]  # ties: the first class wins, as argmax
    p[2, 5:9] = p[:, 5:9].amax(0)
    assert torch.equal(classes_of_probabilities(p), p.argmax(0).to(torch.uint8))


def test_mosaics_past_pils_decompression_bomb_limit_are_read(tmp_path, monkeypatch):
    """PIL refuses images beyond twice its pixel limit (179 Mpx: a 20k mosaic is 400 Mpx)."""
    path = _png(tmp_path / "mosaic.png", np.full((120, 100), 200, np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 12,000 px is a "bomb" to PIL now
    np.testing.assert_allclose(read_image(path), 200 / 255)


def test_enlarged_bands_are_cut_to_a_budget():
    from axal.streaming import resized_bands

    maps = torch.rand(3, 40, 30)
    bands = ((y, {"p": maps[:, y : y + 8]}) for y in range(0, 40, 8))
    out = list(resized_bands(bands, 40, (320, 240), budget=3 * 240 * 16))
    assert all(m["p"].shape[1] <= 16 for _, m in out)  # 16 rows of 240 x 3 values each
    starts = [0] + list(np.cumsum([m["p"].shape[1] for _, m in out]))[:-1]
    assert [y for y, _ in out] == starts  # in order, no row missing or repeated
    whole = torch.cat([m["p"] for _, m in out], dim=1)
    expected = F.interpolate(maps[None], size=(320, 240), mode="bilinear")[0]
    torch.testing.assert_close(whole, expected, atol=2e-5, rtol=0)
