"""Data package: readers, dataset sources, synthetic data and subject-wise splits."""

from axal.domain import AXON, BACKGROUND, MYELIN

from .io import (
    DataError,
    Sample,
    classes_from_axon_myelin,
    classes_from_axonmyelin,
    read_image,
    read_mask,
    resample,
)
from .masks import MASK_ENCODINGS, check_foreground, decode_mask, detect_encoding
from .sources import DATASETS, load_bids, load_dataset, load_folder, locate_dataset
from .splits import split_by_subject, test_folds
from .synthetic import make_synthetic

__all__ = [
    "AXON",
    "BACKGROUND",
    "DATASETS",
    "MASK_ENCODINGS",
    "MYELIN",
    "DataError",
    "Sample",
    "classes_from_axon_myelin",
    "check_foreground",
    "classes_from_axonmyelin",
    "decode_mask",
    "detect_encoding",
    "load_bids",
    "load_dataset",
    "load_folder",
    "locate_dataset",
    "make_synthetic",
    "read_image",
    "read_mask",
    "resample",
    "split_by_subject",
    "test_folds",
]
