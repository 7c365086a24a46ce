"""Seeded subject-wise splits: images of one subject never straddle test/val and training,
otherwise near-duplicate tissue leaks into the test set and inflates the scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .io import DataError, Sample

TEST_SETTING, VAL_SETTING, INITIAL_SETTING = (
    "dataset.test_subjects",
    "dataset.val_subjects",
    "al.initial",
)


def _n_subjects(value: float, setting: str, n_total: int, minimum: int) -> int:
    """Resolve a count (int) or a fraction of subjects (float in (0, 1)) to a subject count."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{setting} must be an integer or a fraction in (0, 1), got {value!r}")
    if isinstance(value, (float, np.floating)):
        if 0.0 < value < 1.0:
            return max(minimum, 1, round(value * n_total))
        if not float(value).is_integer():
            raise DataError(f"{setting}={value} must be an integer or a fraction in (0, 1)")
        value = int(value)
    value = int(value)
    if value < minimum:
        raise DataError(f"{setting}={value} must be >= {minimum}")
    return value


def test_folds(subjects: Sequence[str], k_test: int, fold_seed: int = 0) -> list[list[str]]:
    """A seeded partition of the subjects into K = n // k_test test folds (sizes differ by <= 1).

    The partition depends on ``fold_seed`` only, so seed s tests fold ``s % K``: any K
    consecutive seeds test every subject exactly once, and which mice are tested stops being a
    hidden variable of a strategy comparison.
    """
    subjects = sorted(subjects)
    n_folds = max(1, len(subjects) // max(1, k_test))
    order = [subjects[i] for i in np.random.default_rng(fold_seed).permutation(len(subjects))]
    return [sorted(part) for part in np.array_split(np.array(order, dtype=object), n_folds)]


def split_by_subject(
    samples: Sequence[Sample],
    n_test: float,
    n_val: float,
    n_initial: int,
    seed: int,
    folds: bool = False,
    fold_seed: int = 0,
) -> dict[str, list[str]]:
    """Split sample ids into test / val (whole subjects) and initial / pool (training images).

    `n_test` / `n_val`: numbers of subjects (int) or fractions of subjects (float in (0, 1)).
    Test subjects are drawn first (with ``folds``: fold ``seed % K`` of :func:`test_folds`, else
    at random), then val subjects from the rest, then `n_initial` training images at random;
    everything else is the unlabelled pool. Deterministic for a seed.
    """
    if not samples:
        raise DataError("cannot split an empty dataset")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"duplicate sample ids: {dupes[:5]}")
    subjects = sorted({s.subject for s in samples})
    n_sub = len(subjects)
    k_test = _n_subjects(n_test, TEST_SETTING, n_sub, minimum=1)
    k_val = _n_subjects(n_val, VAL_SETTING, n_sub, minimum=0)
    if k_test >= n_sub:
        raise DataError(
            f"{TEST_SETTING}={n_test} leaves no subject for training (dataset has {n_sub} subjects)"
        )
    if k_test + k_val >= n_sub:
        raise DataError(
            f"{VAL_SETTING}={n_val} leaves no subject for training (dataset has {n_sub} subjects, "
            f"{k_test} used for test)"
        )
    if isinstance(n_initial, bool) or not isinstance(n_initial, (int, np.integer)) or n_initial < 1:
        raise DataError(f"{INITIAL_SETTING} must be an integer >= 1, got {n_initial!r}")

    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(n_sub)]
    if folds:
        all_folds = test_folds(subjects, k_test, fold_seed)
        test_subjects = set(all_folds[int(seed) % len(all_folds)])
        rest = [s for s in order if s not in test_subjects]
        val_subjects = set(rest[:k_val])
    else:
        test_subjects, val_subjects = set(order[:k_test]), set(order[k_test : k_test + k_val])
    test = sorted(s.id for s in samples if s.subject in test_subjects)
    val = sorted(s.id for s in samples if s.subject in val_subjects)
    train = sorted(s.id for s in samples if s.subject not in test_subjects | val_subjects)
    if n_initial > len(train):
        raise DataError(
            f"{INITIAL_SETTING}={n_initial} but only {len(train)} training images remain after "
            f"test/val ({k_test} test and {k_val} val subjects of {n_sub})"
        )
    chosen = rng.choice(len(train), size=int(n_initial), replace=False)
    initial = sorted(train[i] for i in chosen)
    picked = set(initial)
    pool = [i for i in train if i not in picked]
    return {"test": test, "val": val, "initial": initial, "pool": pool}
