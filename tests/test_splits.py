"""Subject-wise splits: no leakage, determinism, counts, and errors that name the setting."""

from __future__ import annotations

import numpy as np
import pytest

from axal.data import DataError, Sample, split_by_subject


def _samples(n_subjects: int, per_subject: int) -> list[Sample]:
    tiny = np.zeros((2, 2), dtype=np.float32)
    return [
        Sample(f"img-{s}-{k}", f"sub-{s}", tiny, tiny.astype(np.uint8), None, "")
        for s in range(n_subjects)
        for k in range(per_subject)
    ]


def _subjects(samples, ids):
    by_id = {s.id: s.subject for s in samples}
    return {by_id[i] for i in ids}


def test_partition_and_no_subject_leak():
    samples = _samples(8, 3)
    for seed in range(10):
        split = split_by_subject(samples, n_test=2, n_val=1, n_initial=4, seed=seed)
        assert set(split) == {"test", "val", "initial", "pool"}
        ids = [i for part in split.values() for i in part]
        assert sorted(ids) == sorted(s.id for s in samples)  # disjoint and complete
        assert all(part == sorted(part) for part in split.values())
        test, val = _subjects(samples, split["test"]), _subjects(samples, split["val"])
        train = _subjects(samples, split["initial"] + split["pool"])
        assert len(test) == 2 and len(val) == 1
        assert not test & (val | train) and not val & train
        assert len(split["test"]) == 6 and len(split["initial"]) == 4 and len(split["pool"]) == 11


def test_deterministic_for_seed():
    samples = _samples(6, 4)
    a = split_by_subject(samples, 1, 1, 3, seed=7)
    assert a == split_by_subject(list(reversed(samples)), 1, 1, 3, seed=7)
    others = [split_by_subject(samples, 1, 1, 3, seed=s) for s in range(8)]
    assert len({tuple(o["test"]) + tuple(o["initial"]) for o in others}) > 1


def test_fractions_of_subjects():
    samples = _samples(8, 2)
    split = split_by_subject(samples, n_test=0.25, n_val=0.125, n_initial=2, seed=0)
    assert len(_subjects(samples, split["test"])) == 2
    assert len(_subjects(samples, split["val"])) == 1
    assert split_by_subject(samples, 1, 0, 2, seed=0)["val"] == []


def test_request_that_does_not_fit_names_the_setting():
    samples = _samples(4, 3)
    with pytest.raises(
        DataError,
        match=r"dataset.test_subjects=5 leaves no subject for training "
        r"\(dataset has 4 subjects\)",
    ):
        split_by_subject(samples, 5, 0, 1, seed=0)
    with pytest.raises(DataError, match="dataset.test_subjects=4"):
        split_by_subject(samples, 4, 0, 1, seed=0)
    with pytest.raises(DataError, match="dataset.val_subjects=2"):
        split_by_subject(samples, 2, 2, 1, seed=0)
    with pytest.raises(DataError, match="al.initial=30 but only 6 training images remain"):
        split_by_subject(samples, 1, 1, 30, seed=0)
    with pytest.raises(DataError, match="dataset.test_subjects"):
        split_by_subject(samples, 0, 1, 1, seed=0)
    with pytest.raises(DataError, match="dataset.test_subjects"):
        split_by_subject(samples, 1.5, 1, 1, seed=0)
    with pytest.raises(DataError, match="al.initial"):
        split_by_subject(samples, 1, 1, 0, seed=0)
    with pytest.raises(DataError, match="duplicate"):
        split_by_subject(samples + samples[:1], 1, 1, 1, seed=0)


def test_any_k_consecutive_seeds_test_every_subject_exactly_once():
    samples = _samples(10, 2)
    k = 5  # 10 subjects, 2 test subjects per seed
    for first in (0, 3):
        counts: dict[str, int] = {}
        for seed in range(first, first + k):
            split = split_by_subject(samples, n_test=2, n_val=1, n_initial=2, seed=seed, folds=True)
            for subject in _subjects(samples, split["test"]):
                counts[subject] = counts.get(subject, 0) + 1
            train = _subjects(samples, split["initial"] + split["pool"])
            assert not train & _subjects(samples, split["test"] + split["val"])
        assert counts == {f"sub-{s}": 1 for s in range(10)}
    # the folds are fixed by fold_seed, not by the seed: seed 5 tests what seed 0 tested
    a = split_by_subject(samples, n_test=2, n_val=0, n_initial=2, seed=0, folds=True)
    b = split_by_subject(samples, n_test=2, n_val=0, n_initial=2, seed=5, folds=True)
    assert a["test"] == b["test"] and a["initial"] != b["initial"]


def _subjects_of_bids(root) -> list[Sample]:
    """One tiny stand-in sample per real image, named and grouped as in the dataset: only the
    file names and subject folders are read, never the pixels."""
    from axal.data.sources import bids_images

    tiny = np.zeros((2, 2), dtype=np.float32)
    return [
        Sample(p.stem, p.parent.parent.name, tiny, tiny.astype(np.uint8), None, "")
        for p in bids_images(root)
    ]


def _loso_counts(samples, seeds) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seed in seeds:
        split = split_by_subject(samples, n_test=1, n_val=0, n_initial=1, seed=seed, folds=True)
        tested = _subjects(samples, split["test"])
        assert len(tested) == 1  # one held-out subject per seed
        train = _subjects(samples, split["initial"] + split["pool"])
        assert not tested & train
        for subject in tested:
            counts[subject] = counts.get(subject, 0) + 1
    return counts


@pytest.mark.parametrize(
    "source, n_subjects",
    [("synthetic", 6), ("tem_mouse_corpuscallosum", 10), ("sem_rat_spinalcord", 8)],
)
def test_leave_one_subject_out_tests_each_subject_once_per_k_consecutive_seeds(source, n_subjects):
    """dataset.test_subjects=1 (with dataset.folds=true) is leave-one-subject-out: K = the
    number of subjects folds, and any K consecutive seeds test every subject exactly once, so a
    study of 2K seeds tests each subject twice (TEM: 10 mice, SEM: 8 rats)."""
    from tests.conftest import REAL_DATA

    if source == "synthetic":
        samples = _samples(n_subjects, 2)
    else:
        if REAL_DATA is None:
            pytest.skip("real data not found (AXAL_DATA)")
        samples = _subjects_of_bids(REAL_DATA / source)
    subjects = {s.subject for s in samples}
    assert len(subjects) == n_subjects
    for first in (0, 3, n_subjects):
        counts = _loso_counts(samples, range(first, first + n_subjects))
        assert counts == {s: 1 for s in subjects}
    # 2 seeds per subject: seeds 0..2K-1 test every subject exactly twice
    assert _loso_counts(samples, range(2 * n_subjects)) == {s: 2 for s in subjects}
