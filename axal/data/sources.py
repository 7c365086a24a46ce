"""Dataset sources: BIDS folders, AxonDeepSeg legacy folders, and the public datasets.

Every loader fails loudly (DataError naming the file) rather than silently skipping data,
because a silently missing mask or subject changes the benchmark without anyone noticing.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from axal.domain import SEG_KINDS

from .io import (
    DataError,
    Sample,
    classes_from_axon_myelin,
    read_image,
    read_mask,
    resample,
)
from .masks import check_binary, check_encoding, check_same_encoding, decode_mask
from .synthetic import make_synthetic

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
_SEG_RE = re.compile(r"^(?P<stem>.+)_seg-(?P<kind>[A-Za-z0-9]+)-manual$")
BIDS_IMAGE_RE = re.compile(r"^(?P<subject>sub-[A-Za-z0-9]+)_(?:.+_)?(?P<modality>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class PublicDataset:
    """Where a public dataset lives: its folder name and its pinned GitHub commit."""

    folder: str
    modality: str
    repo: str
    commit: str
    sha256: str | None = None  # zip checksum; None until pinned (logged on first download)

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/archive/{self.commit}.zip"


DATASETS: dict[str, PublicDataset] = {
    "tem": PublicDataset(
        folder="tem_mouse_corpuscallosum",
        modality="TEM",
        repo="axondeepseg/data_axondeepseg_srf_testing",
        commit="e72182a4e4a986dbffd161bd8d2dcb265bab5502",
    ),
    "sem": PublicDataset(
        folder="sem_rat_spinalcord",
        modality="SEM",
        repo="axondeepseg/data_axondeepseg_sem",
        commit="a4d02a1adec4bde04267baab3770e18f441afd73",
    ),
}
DATASET_NAMES = ("tem", "sem", "folder", "synthetic")


# --------------------------------------------------------------------------- helpers


def _strip_suffix(path: Path) -> str:
    """File name without its image suffix (handles .tiff and .tif alike)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _find_label(label_dir: Path, stem: str, kind: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = label_dir / f"{stem}_seg-{kind}-manual{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _pixel_size_from_json(path: Path) -> float | None:
    """Read `PixelSize` (um; a number or [x, y]) from a BIDS sidecar JSON."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read pixel size JSON {path}: {exc}") from exc
    if not isinstance(meta, dict) or "PixelSize" not in meta:
        return None
    value = meta["PixelSize"]
    values = value if isinstance(value, list) else [value]
    try:
        sizes = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: PixelSize must be a number or a list of numbers, got {value!r}"
        ) from exc
    if not sizes or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise DataError(f"{path}: PixelSize must be positive, got {value!r}")
    if len(set(sizes[:2])) > 1:
        log.warning("%s: anisotropic PixelSize %s; using the mean", path, sizes)
    size = sum(sizes[:2]) / len(sizes[:2])
    units = str(meta.get("PixelSizeUnits", "um")).strip().lower()
    scale = {"um": 1.0, "µm": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "mm": 1e3}
    if units not in scale:
        raise DataError(f"{path}: unknown PixelSizeUnits {units!r} (expected um, nm or mm)")
    return size * scale[units]


def bids_pixel_size(
    image: Path, stem: str, subject: str, modality: str, root: Path
) -> float | None:
    """Pixel size from the most specific sidecar: per image, then per subject, then dataset."""
    candidates = [
        image.parent / f"{stem}.json",
        image.parent / f"{subject}_{modality}.json",
        root / subject / f"{subject}_{modality}.json",
        root / f"{modality}.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            size = _pixel_size_from_json(candidate)
            if size is not None:
                return size
    return None


def _check_same_size(
    image_path: Path, image_shape: tuple, mask_path: Path, mask_shape: tuple
) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise DataError(
            f"image and mask differ in size: {image_path} is {image_shape[1]}x{image_shape[0]} "
            f"(WxH) but {mask_path} is {mask_shape[1]}x{mask_shape[0]}"
        )


# --------------------------------------------------------------------------- BIDS


# What axal writes: predictions and masks (``*_seg-*``), uncertainty maps, annotate's overlays
# and maps; and the folders it writes into (a work folder holds rounds.json or run.lock).
# (``.round-<k>``: a new prediction kept beside a person's edited one)
_OUTPUT_RE = re.compile(r"(_seg-[A-Za-z0-9-]+(\.round-\d+)?|_uncertainty)$|^round-\d+_rank-\d+_")
OUTPUT_MARKERS = ("rounds.json", "run.lock")


def is_axal_output(path: Path, root: Path | None = None) -> bool:
    """True for a file axal wrote (by its name, or by lying in a work folder below ``root``),
    so that no reader takes a prediction, uncertainty map or overlay for an input image."""
    path = Path(path)
    if _OUTPUT_RE.search(_strip_suffix(path)):
        return True
    for parent in path.parents:
        if root is not None and parent == Path(root):
            break
        if any((parent / marker).is_file() for marker in OUTPUT_MARKERS):
            return True
        if root is None:
            break  # without a root, only the file's own folder is checked
    return False


def bids_images(root: Path) -> list[Path]:
    """All raw images under `sub-*/[ses-*/]micr/`, never under derivatives/, never axal's
    own outputs (predictions, uncertainty maps) written beside them."""
    found = []
    for pattern in ("sub-*/micr/*", "sub-*/ses-*/micr/*"):
        for path in root.glob(pattern):
            if (
                path.is_file()
                and path.suffix.lower() in IMAGE_SUFFIXES
                and BIDS_IMAGE_RE.match(_strip_suffix(path))
                and not is_axal_output(path, root)
            ):
                found.append(path)
    return sorted(found)


@dataclass
class _Reading:
    """How to read a dataset's files, and the mask encodings found (file -> encoding)."""

    task: str | None = "myelin"
    mask_encoding: str = "auto"
    bit_depth: int | None = None
    found: dict[str, str] = field(default_factory=dict)

    def image(self, path: Path):
        return read_image(path, bit_depth=self.bit_depth)

    def mask(self, path: Path, raw):
        classes, encoding = decode_mask(raw, path, self.mask_encoding, self.task)
        self.found[str(path)] = encoding
        return classes

    def finish(self) -> None:
        check_same_encoding(self.found)
        if "binary" in self.found.values():
            log.info("one-class (0 / 255) masks: 255 is read as myelin (task=%s)", self.task)


def load_bids(
    root: str | Path,
    modality: str | None = None,
    *,
    task: str | None = "myelin",
    mask_encoding: str = "auto",
    bit_depth: int | None = None,
    unlabelled: bool = False,
) -> list[Sample]:
    """Load a BIDS microscopy dataset (AxonDeepSeg convention) as sorted samples.

    `modality` (e.g. "TEM", "SEM"; case-insensitive) keeps only images with that suffix.
    `task`, `mask_encoding` and `bit_depth` say how masks and images are read
    (:mod:`axal.data.masks`, :func:`axal.data.read_image`).
    `unlabelled`: an image without a mask is a sample with ``mask=None`` (annotation) instead
    of an error (simulation, where a missing mask would silently shrink the benchmark).
    """
    check_encoding(mask_encoding)
    reading = _Reading(task, mask_encoding, bit_depth)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"BIDS dataset folder not found: {root}")
    all_images = bids_images(root)
    stems = {_strip_suffix(p) for p in all_images}

    labels_root = root / "derivatives" / "labels"
    if labels_root.is_dir():
        for label in sorted(labels_root.rglob("*_seg-*-manual.*")):
            if label.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            match = _SEG_RE.match(_strip_suffix(label))
            if match and match["stem"] not in stems:
                raise DataError(
                    f"mask without a matching image: {label} (expected an image named "
                    f"{match['stem']}.png under {root}/sub-*/micr/)"
                )

    samples = []
    for image_path in all_images:
        stem = _strip_suffix(image_path)
        match = BIDS_IMAGE_RE.match(stem)
        assert match is not None  # filtered in bids_images
        if modality is not None and match["modality"].lower() != modality.lower():
            continue
        subject = image_path.parent.parent.name
        if subject.startswith("ses-"):
            subject = image_path.parent.parent.parent.name
        label_dir = labels_root / image_path.parent.relative_to(root)
        samples.append(
            _load_bids_sample(
                root, image_path, stem, subject, match["modality"], label_dir, reading, unlabelled
            )
        )

    if not samples:
        what = f"{modality} images" if modality else "images"
        raise DataError(f"no {what} found in BIDS dataset {root} (expected sub-*/micr/*.png)")
    reading.finish()
    return sorted(samples, key=lambda s: s.id)


def _load_bids_sample(
    root: Path,
    image_path: Path,
    stem: str,
    subject: str,
    modality: str,
    label_dir: Path,
    reading: _Reading,
    unlabelled: bool = False,
) -> Sample:
    image = reading.image(image_path)
    axonmyelin = _find_label(label_dir, stem, "axonmyelin")
    no_label = not any(_find_label(label_dir, stem, k) for k in SEG_KINDS)
    if unlabelled and no_label:
        mask = None
    elif axonmyelin is not None:
        raw = read_mask(axonmyelin)
        _check_same_size(image_path, image.shape, axonmyelin, raw.shape)
        mask = reading.mask(axonmyelin, raw)
    else:
        axon = _find_label(label_dir, stem, "axon")
        myelin = _find_label(label_dir, stem, "myelin")
        if axon is None or myelin is None:
            raise DataError(
                f"image has no mask: {image_path}. "
                f"Add {label_dir / (stem + '_seg-axonmyelin-manual.png')}"
                f" (0 background, 127 myelin, 255 axon) or both {stem}_seg-axon-manual.png and "
                f"{stem}_seg-myelin-manual.png in {label_dir}, or remove the image"
            )
        axon_raw, myelin_raw = read_mask(axon), read_mask(myelin)
        _check_same_size(image_path, image.shape, axon, axon_raw.shape)
        _check_same_size(image_path, image.shape, myelin, myelin_raw.shape)
        check_binary(axon_raw, axon)
        check_binary(myelin_raw, myelin)
        mask = classes_from_axon_myelin(axon_raw, myelin_raw)
    pixel_size = bids_pixel_size(image_path, stem, subject, modality, root)
    return Sample(stem, subject, image, mask, pixel_size, str(image_path))


# --------------------------------------------------------------------------- legacy folder


def _read_subjects_tsv(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if rows and not {"case", "subject"} <= set(rows[0]):
        raise DataError(
            f"{path} needs tab-separated columns 'case' and 'subject', got {list(rows[0])}"
        )
    mapping = {}
    for row in rows:
        case, subject = (row.get("case") or "").strip(), (row.get("subject") or "").strip()
        if not case or not subject:
            raise DataError(f"{path}: empty case or subject in row {row}")
        mapping[case] = subject
    return mapping


def find_named(folder: Path, name: str) -> Path | None:
    """``folder/name`` with the first image suffix that exists (.png, .tif, .tiff)."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load_folder(
    root: str | Path,
    *,
    task: str | None = "myelin",
    mask_encoding: str = "auto",
    bit_depth: int | None = None,
    unlabelled: bool = False,
) -> list[Sample]:
    """Load the AxonDeepSeg legacy layout `<root>/<case>/{image,mask}.png` as sorted samples.

    `task`, `mask_encoding` and `bit_depth`: as for :func:`load_bids`. `unlabelled`: a case
    without a mask is a sample with ``mask=None`` instead of an error.
    """
    check_encoding(mask_encoding)
    reading = _Reading(task, mask_encoding, bit_depth)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.root folder not found: {root}")
    tsv = root / "subjects.tsv"
    subjects = _read_subjects_tsv(tsv) if tsv.is_file() else {}
    samples = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((case_dir / marker).is_file() for marker in OUTPUT_MARKERS):
            continue  # an axal work folder (annotate's predictions, overlays), not a case
        image_path = find_named(case_dir, "image")
        mask_path = find_named(case_dir, "mask")
        if image_path is None:
            if mask_path is not None:
                raise DataError(
                    f"mask without an image: {mask_path} (expected {case_dir}/image.png)"
                )
            continue
        if mask_path is None and not unlabelled:
            raise DataError(f"image has no mask: {image_path} (expected {case_dir}/mask.png)")
        image = reading.image(image_path)
        mask = None
        if mask_path is not None:
            raw = read_mask(mask_path)
            _check_same_size(image_path, image.shape, mask_path, raw.shape)
            mask = reading.mask(mask_path, raw)
        pixel_size = None
        size_file = case_dir / "pixel_size_in_micrometer.txt"
        if size_file.is_file():
            text = size_file.read_text().strip()
            try:
                pixel_size = float(text)
            except ValueError as exc:
                raise DataError(
                    f"{size_file} must hold one number (um per pixel), got {text!r}"
                ) from exc
            if not math.isfinite(pixel_size) or pixel_size <= 0:
                raise DataError(f"{size_file} must hold a positive pixel size, got {text!r}")
        subject = subjects.get(case_dir.name, case_dir.name)
        samples.append(
            Sample(
                case_dir.name,
                subject,
                image,
                mask,
                pixel_size,
                str(image_path),
            )
        )
    if not samples:
        raise DataError(f"no cases found in {root} (expected <case>/image.png and <case>/mask.png)")
    reading.finish()
    # a partial or stale table would silently change the subject-wise split
    unknown = sorted(set(subjects) - {s.id for s in samples})
    if unknown:
        raise DataError(
            f"{tsv} lists cases with no image: {', '.join(unknown)} (expected "
            f"{root}/<case>/image.png): add their images or remove their rows"
        )
    missing = sorted(s.id for s in samples if s.id not in subjects)
    if subjects and missing:
        raise DataError(
            f"{tsv} names no subject for {len(missing)} cases ({', '.join(missing[:5])}): "
            "a case left out would be split as its own subject; add a row for each"
        )
    return samples


# --------------------------------------------------------------------------- public datasets


def is_bids(path: Path) -> bool:
    """True if `path` holds BIDS microscopy images (`sub-*/[ses-*/]micr/`)."""
    return path.is_dir() and bool(bids_images(path))


def _is_dataset_dir(path: Path, modality: str) -> bool:
    """True if `path` looks like a BIDS dataset holding images of `modality`."""
    return path.is_dir() and any(
        _strip_suffix(p).lower().endswith("_" + modality.lower()) for p in bids_images(path)
    )


def _dataset_spec(name: str) -> PublicDataset:
    key = str(name).lower()
    if key not in DATASETS:
        raise DataError(
            f"dataset.name={name!r} is not a public dataset; choose one of {sorted(DATASETS)}"
        )
    return DATASETS[key]


def locate_dataset(name: str, root: str | None = None) -> Path:
    """Find a public dataset: explicit root, then $AXAL_DATA, then a cached pinned download."""
    spec = _dataset_spec(name)
    if root is not None:
        base = Path(root).expanduser()
        for candidate in (base, base / spec.folder):
            if _is_dataset_dir(candidate, spec.modality):
                return candidate
        raise DataError(
            f"dataset.root={root} does not hold the {name} dataset: "
            f"expected {spec.modality} images "
            f"at {base}/sub-*/micr/ or {base / spec.folder}/sub-*/micr/"
        )
    env = os.environ.get("AXAL_DATA")
    if env:
        base = Path(env).expanduser()
        for candidate in (base / spec.folder, base):
            if _is_dataset_dir(candidate, spec.modality):
                return candidate
        log.info("AXAL_DATA=%s holds no %s; trying the download cache", env, spec.folder)
    return _download(spec)


def _download(spec: PublicDataset) -> Path:
    """Fetch the pinned GitHub archive into pooch's cache (once) and return the dataset folder."""
    import pooch

    cache = Path(pooch.os_cache("axal"))
    fname = f"{spec.folder}-{spec.commit}.zip"
    try:
        files = pooch.retrieve(
            spec.url,
            known_hash=spec.sha256,
            fname=fname,
            path=cache,
            processor=pooch.Unzip(extract_dir=f"{spec.folder}-{spec.commit}"),
            progressbar=False,
        )
    except Exception as exc:  # network, HTTP, checksum and unzip errors all mean the same here
        raise DataError(
            f"the {spec.folder} dataset could not be downloaded from {spec.url} ({exc}). "
            f"Set dataset.root=/path/to/{spec.folder} or AXAL_DATA=/path/holding/{spec.folder}"
        ) from exc
    if spec.sha256 is None and (cache / fname).is_file():
        log.info(
            "sha256 of %s: %s (pin it in axal.data.sources.DATASETS)",
            fname,
            pooch.file_hash(str(cache / fname)),
        )
    descriptions = sorted(
        (Path(f) for f in files if Path(f).name == "dataset_description.json"),
        key=lambda p: len(p.parts),
    )
    if not descriptions:
        raise DataError(f"downloaded archive {cache / fname} has no dataset_description.json")
    return descriptions[0].parent


def load_dataset(
    name: str,
    root: str | None = None,
    pixel_size: float | None = None,
    n_images: int = 12,
    size: int = 128,
    n_subjects: int = 6,
    seed: int = 0,
    task: str | None = "myelin",
    mask_encoding: str = "auto",
    bit_depth: int | None = None,
    unlabelled: bool = False,
) -> list[Sample]:
    """Load a dataset by config name ("tem", "sem", "folder", "synthetic"), sorted by id.

    With `pixel_size`, samples with a known pixel size are resampled to it. `task`,
    `mask_encoding` and `bit_depth` say how files are read (see :func:`load_bids`). A `folder`
    is read as BIDS when it holds `sub-*/micr/` images, else in the legacy layout.
    `unlabelled`: images without masks are kept with ``mask=None`` (for annotation).
    """
    key = str(name).lower()
    reading = {"task": task, "mask_encoding": mask_encoding, "bit_depth": bit_depth}
    if key == "synthetic":
        samples = make_synthetic(n_images=n_images, size=size, n_subjects=n_subjects, seed=seed)
    elif key == "folder":
        if root is None:
            raise DataError("dataset.name=folder needs dataset.root=/path/to/folder/of/cases")
        load = load_bids if is_bids(Path(root).expanduser()) else load_folder
        samples = load(root, **reading, unlabelled=unlabelled)
    elif key in DATASETS:
        samples = load_bids(locate_dataset(key, root), modality=DATASETS[key].modality, **reading)
    else:
        raise DataError(f"dataset.name={name!r} is unknown; choose one of {list(DATASET_NAMES)}")
    if pixel_size is not None:
        missing = [s.id for s in samples if s.pixel_size is None]
        if missing:
            log.warning(
                "no pixel size for %d samples (e.g. %s); not resampled", len(missing), missing[0]
            )
        samples = [resample(s, pixel_size) for s in samples]
    return sorted(samples, key=lambda s: s.id)
