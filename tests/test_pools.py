"""ActiveDataModule: pool bookkeeping, its state round-trip, and what the loaders yield."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axal.data import make_synthetic, split_by_subject
from axal.pools import ActiveDataModule, task_mask


@pytest.fixture
def dm():
    samples = make_synthetic(n_images=10, size=96, n_subjects=5, seed=0)
    splits = split_by_subject(samples, n_test=1, n_val=1, n_initial=2, seed=0)
    return ActiveDataModule(samples, splits, patch_size=64, steps=2, batch_size=3)


def test_label_moves_ids_from_pool_to_labelled(dm):
    before_pool, before_lab = list(dm.unlabelled), list(dm.labelled)
    pick = before_pool[1:3]
    dm.label(pick)
    assert dm.labelled == before_lab + pick
    assert dm.unlabelled == [i for i in before_pool if i not in pick]
    assert not set(dm.labelled) & set(dm.unlabelled)
    with pytest.raises(KeyError, match="not in the unlabelled pool"):
        dm.label(pick[:1])  # already labelled
    with pytest.raises(KeyError):
        dm.label(dm.test[:1])  # test images are never labelled


def test_state_round_trip_restores_every_pool(dm):
    dm.label(dm.unlabelled[:1])
    state = dm.state_dict()
    samples = list(dm.samples.values())
    fresh = ActiveDataModule(samples, {"test": [], "val": [], "initial": [], "pool": []})
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert (fresh.labelled, fresh.unlabelled, fresh.test, fresh.val) == (
        dm.labelled,
        dm.unlabelled,
        dm.test,
        dm.val,
    )
    with pytest.raises(ValueError, match="lacks"):
        fresh.load_state_dict({**state, "labelled": ["nope"]})


def test_train_loader_yields_fixed_number_of_patches_from_labelled_images(dm):
    batches = list(dm.train_dataloader())
    assert sum(x.shape[0] for x, _ in batches) == 6
    x, y = batches[0]
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    assert y.shape == (3, 64, 64) and set(torch.unique(y).tolist()) <= {0, 1}
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_test_loader_gives_whole_images(dm):
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[-2:] == (96, 96)
    assert batch["id"][0] in dm.test


def test_task_masks():
    mask = np.array([[0, 1, 2]], dtype=np.uint8)
    assert task_mask(mask, "myelin").tolist() == [[0, 1, 0]]
    assert task_mask(mask, "axonmyelin").tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="task"):
        task_mask(mask, "axon")
