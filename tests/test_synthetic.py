"""Synthetic EM-like data: determinism, exact masks, EM-like contrast, varying difficulty."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from axal.data import DataError, make_synthetic


@pytest.fixture(scope="module")
def samples():
    return make_synthetic(n_images=12, size=128, n_subjects=6, seed=0)


def test_shapes_ids_subjects(samples):
    assert [s.id for s in samples] == [f"syn-{i:03d}" for i in range(12)]
    assert [s.subject for s in samples] == [f"sub-syn{i % 6:02d}" for i in range(12)]
    for s in samples:
        assert s.image.shape == s.mask.shape == (128, 128)
        assert s.image.dtype == np.float32 and s.mask.dtype == np.uint8
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert set(np.unique(s.mask).tolist()) == {0, 1, 2}
        assert s.pixel_size == 0.1 and s.path == ""


def test_deterministic_and_seed_dependent(samples):
    again = make_synthetic(n_images=12, size=128, n_subjects=6, seed=0)
    for a, b in zip(samples, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    other = make_synthetic(n_images=12, size=128, n_subjects=6, seed=1)
    assert not np.array_equal(samples[0].mask, other[0].mask)
    # image i depends only on (seed, i): asking for fewer images keeps the same ones
    np.testing.assert_array_equal(make_synthetic(n_images=3, seed=0)[2].image, samples[2].image)


def test_myelin_ring_encloses_every_axon():
    for seed in range(3):
        for s in make_synthetic(n_images=12, size=128, seed=seed):
            touching = binary_dilation(s.mask == 2) & (s.mask == 0)
            assert not touching.any(), f"{s.id} seed {seed}: axon touches background"


def test_em_like_intensities(samples):
    for s in samples:
        myelin, bg, axon = (s.image[s.mask == k].mean() for k in (1, 0, 2))
        assert myelin < bg < axon, s.id  # dark myelin, lighter axoplasm than background


def test_difficulty_varies(samples):
    contrast = [s.image[s.mask == 2].mean() - s.image[s.mask == 1].mean() for s in samples]
    density = [(s.mask > 0).mean() for s in samples]
    assert max(contrast) > 1.5 * min(contrast)
    assert max(density) > 1.2 * min(density)


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"n_images": 0}, "dataset.n_images"),
        ({"size": 4}, "dataset.size"),
        ({"n_subjects": 0}, "dataset.n_subjects"),
        ({"n_images": 2.5}, "dataset.n_images"),
    ],
)
def test_bad_arguments(kwargs, setting):
    with pytest.raises(DataError, match=setting):
        make_synthetic(**kwargs)
