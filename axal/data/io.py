"""Reading EM images and masks robustly, and the `Sample` record shared by the package.

Real datasets mix PNG modes (L, LA, RGB, P, 16-bit) and anti-aliased masks; everything is
normalised here so the rest of the code only sees float32 images in [0, 1] and class masks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from axal.domain import AXON, MYELIN
from axal.errors import AxalError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
# PIL refuses images beyond 2 x MAX_IMAGE_PIXELS (179 Mpx by default) as "decompression
# bombs": a 20,000 x 20,000 SEM mosaic is 400 Mpx. A lab's own images are trusted up to this.
MAX_IMAGE_PIXELS = 1_000_000_000


class DataError(AxalError, ValueError):
    """Bad input data or data setting; the message names the offending file or setting."""


@dataclass
class Sample:
    """One image and its labels, already normalised (see module docstring)."""

    id: str
    subject: str
    image: np.ndarray  # float32, HxW, [0, 1]
    mask: np.ndarray | None  # uint8, HxW, 0 background / 1 myelin / 2 axon; None: unlabelled
    pixel_size: float | None  # micrometres per pixel
    path: str


def _read_array(path: Path) -> np.ndarray:
    """Decode a file into a numpy array, turning every decoder failure into a DataError."""
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        if (Image.MAX_IMAGE_PIXELS or 0) < MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "1":
                return np.asarray(im.convert("L"))
            if mode in ("P", "PA"):
                return np.asarray(im.convert("RGBA"))
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                return np.asarray(im.convert("RGB"))
            if mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)  # normalises byte order
            return np.asarray(im)
    except DataError:
        raise
    except Exception as exc:  # PIL/tifffile raise many types for corrupt files
        raise DataError(f"cannot read image file {path}: {exc}") from exc


def _grey_array(arr: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """The plane(s) grey is made of (planar TIFF moved, alpha dropped), and whether it is RGB."""
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] > 4:
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF (C, H, W)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        return arr[..., 0], False  # grey or grey + alpha
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return arr, True
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D grey or colour image, got shape {arr.shape}")
    return arr, False


def _grey_rows(arr: np.ndarray, rgb: bool, y0: int, y1: int) -> np.ndarray:
    """Rows ``y0:y1`` as float64 grey; colour by ITU-R 601 luminance, as PIL's convert("L")."""
    if rgb:
        return arr[y0:y1, :, :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return arr[y0:y1].astype(np.float64)


def _to_grey(arr: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """Collapse channels to one grey plane (alpha ignored); also return its full-scale value."""
    plane, rgb = _grey_array(arr, path)
    return _grey_rows(plane, rgb, 0, plane.shape[0]), _full_scale(plane, path)


def _full_scale(arr: np.ndarray, path: Path) -> float:
    """Value that maps to 1.0: the dtype maximum, so 16-bit data is not mistaken for 8-bit."""
    if arr.dtype == bool:
        return 1.0
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.signedinteger):
        # PIL mode "I" (32-bit) holds 16-bit PNGs in older Pillow versions
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return 65535.0
        return float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise DataError(f"{path}: image contains NaN or infinite values")
        return max(1.0, hi)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def _integer_depth(arr: np.ndarray) -> int | None:
    """Bits of an integer image's dtype (16 for uint16 and for PIL's 32-bit "I" holding 16-bit)."""
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        return None
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and 0 <= arr.min() <= arr.max():
        return 16 if arr.max() <= 65535 else arr.dtype.itemsize * 8
    return arr.dtype.itemsize * 8


class ImageRows:
    """An image file decoded once and normalised as :func:`read_image` does, a band of rows at
    a time (``axal.streaming`` row source): the decoded array (1 byte per pixel for 8-bit
    grey) is all that is image-sized; ``read()`` is the whole float32 image."""

    def __init__(self, path: str | Path, bit_depth: int | None = None) -> None:
        self.path = path = Path(path)
        raw = _read_array(path)
        self.plane, self.rgb = _grey_array(raw, path)
        self.shape = (int(self.plane.shape[0]), int(self.plane.shape[1]))
        self.scale = _full_scale(self.plane, path)
        depth = _integer_depth(raw)
        del raw
        empty = self.plane.size == 0
        if depth is not None and depth > 8 and not empty:
            top = self._extreme(max)
            if bit_depth is not None:
                bits = _check_bit_depth(bit_depth)
                self.scale = float(2**bits - 1)
                if top > self.scale:
                    raise DataError(
                        f"{path}: values up to {top:.0f} do not fit dataset.bit_depth={bits} "
                        f"(at most {self.scale:.0f}); set dataset.bit_depth to the data's bit "
                        "depth"
                    )
            elif depth == 16 and top < 65536 / 16:
                bits = max(8, int(top).bit_length())
                self.scale = float(2**bits - 1)
                log.warning(
                    "%s: 16-bit image with values up to %.0f uses less than 1/16 of its range; "
                    "reading it as %d-bit data (divided by %.0f). Set dataset.bit_depth to scale "
                    "every image of the dataset alike",
                    path,
                    top,
                    bits,
                    self.scale,
                )
        self.stretch: tuple[float, float] | None = None
        if not empty:
            lo = self._extreme(min) / self.scale
            if lo < 0:  # signed or negative float data: stretch to [0, 1]
                self.stretch = (lo, self._extreme(max) / self.scale)

    def _extreme(self, which) -> float:
        """The grey plane's max or min, without a float copy of the image."""
        if not self.rgb:
            return float(self.plane.max() if which is max else self.plane.min())
        step = _BAND_PIXELS // max(1, self.shape[1])
        bands = range(0, self.shape[0], max(1, step))
        parts = [_grey_rows(self.plane, True, y, y + step) for y in bands]
        return float(which(p.max() if which is max else p.min() for p in parts))

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` as float32 in [0, 1]."""
        out = _grey_rows(self.plane, self.rgb, y0, y1) / self.scale
        if self.stretch is not None:
            lo, hi = self.stretch
            out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def read(self) -> np.ndarray:
        """The whole image, float32 HxW in [0, 1], computed band by band."""
        h, w = self.shape
        out = np.empty((h, w), dtype=np.float32)
        step = max(1, _BAND_PIXELS // max(1, w))
        for y in range(0, h, step):
            out[y : y + step] = self.rows(y, y + step)
        return out


_BAND_PIXELS = 1 << 22  # pixels per band of float64 temporaries (32 MB)


def read_image(path: str | Path, bit_depth: int | None = None) -> np.ndarray:
    """Read an EM image as float32 HxW grey in [0, 1], whatever its file mode.

    8-bit images are divided by 255. Images of more than 8 bits are divided by
    ``2**bit_depth - 1`` (``dataset.bit_depth``, e.g. 12 for 12-bit data in 16-bit files), else
    by their type's maximum; a 16-bit image that uses less than 1/16 of its range (12-bit or
    less) would load almost black, so it is divided by the range found instead, with a warning.
    Computed in bands (:class:`ImageRows`): no float64 copy of a large image is ever made.
    """
    return ImageRows(path, bit_depth).read()


def _check_bit_depth(bit_depth: int) -> int:
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, (int, np.integer)):
        raise DataError(f"dataset.bit_depth must be an integer (e.g. 12), got {bit_depth!r}")
    if not 8 <= int(bit_depth) <= 32:
        raise DataError(f"dataset.bit_depth={bit_depth} must be between 8 and 32")
    return int(bit_depth)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label file as uint8 HxW raw grey values (0..255), whatever its file mode.

    A mask of more than 8 bits is scaled to 0..255 by its type's maximum, unless all its
    values already fit 0..255 (then they are kept: class indices 0/1/2 stay 0/1/2).
    """
    path = Path(path)
    arr = _read_array(path)
    grey, scale = _to_grey(arr, path)
    depth = _integer_depth(arr)
    small = depth is not None and depth > 8 and grey.size and grey.max() <= 255
    if scale != 255.0 and not small:
        grey = grey * (255.0 / scale)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def classes_from_axonmyelin(raw: np.ndarray) -> np.ndarray:
    """Map axonmyelin grey values to classes by the nearest of 0 / 127 / 255.

    Nearest-value mapping (not equality) because some real masks are anti-aliased
    (e.g. 128, 130, 233) and equality would silently drop those pixels to background.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise DataError(f"axonmyelin mask must be 2-D, got shape {raw.shape}")
    out = np.zeros(raw.shape, dtype=np.uint8)
    out[raw >= 64] = MYELIN  # midpoint of 0 and 127 is 63.5
    out[raw >= 192] = AXON  # midpoint of 127 and 255 is 191
    return out


def classes_from_axon_myelin(axon_raw: np.ndarray, myelin_raw: np.ndarray) -> np.ndarray:
    """Combine separate binary (0/255) axon and myelin masks; axon wins where both are set."""
    if axon_raw.shape != myelin_raw.shape:
        raise DataError(
            f"axon and myelin masks differ in shape: {axon_raw.shape} vs {myelin_raw.shape}"
        )
    out = np.zeros(axon_raw.shape, dtype=np.uint8)
    out[myelin_raw >= 128] = MYELIN
    out[axon_raw >= 128] = AXON
    return out


# A pixel size that scales an image by more than this (either way), or past this many pixels,
# is a mistake (nanometres written as micrometres), not a scale: refused before any memory goes.
MAX_RESAMPLE_FACTOR = 50.0
MAX_RESAMPLED_PIXELS = 200_000_000  # 0.8 GB as float32


# Images larger than this (before or after) are resampled band by band (``axal.streaming``):
# equal to PIL's whole-image resize to float rounding (1e-6), without its float copies.
BANDED_RESAMPLE_PIXELS = 4096 * 4096


def resampled_size(
    size: tuple[int, int], pixel_size: float, target: float, name: str | Path
) -> tuple[int, int]:
    """(H, W) of an image of ``size`` at ``pixel_size`` um resampled to ``target`` um/px; a
    :class:`DataError` naming the file and both sizes beyond a plausible factor or size."""
    factor = pixel_size / target
    h, w = size
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    if not 1 / MAX_RESAMPLE_FACTOR <= factor <= MAX_RESAMPLE_FACTOR or (
        new_h * new_w > max(MAX_RESAMPLED_PIXELS, h * w)
    ):
        raise DataError(
            f"{name}: its pixel size {pixel_size:g} um "
            f"would resample it by {factor:.3g}x ({w}x{h} -> {new_w}x{new_h} px) to the "
            f"model's {target:g} um/px; more than {MAX_RESAMPLE_FACTOR:g}x either way is taken "
            "for a mistake (nanometres written as micrometres?): correct its pixel size "
            "(pixel_size_in_micrometer.txt or the sidecar JSON)"
        )
    return new_h, new_w


def resample(sample: Sample, pixel_size: float) -> Sample:
    """Rescale a sample to a target pixel size so datasets of different scales can be mixed.

    Image: antialiased bilinear (area-like when shrinking); mask: nearest, so classes stay exact.
    A factor beyond :data:`MAX_RESAMPLE_FACTOR` or a result beyond :data:`MAX_RESAMPLED_PIXELS`
    is a :class:`DataError` naming the file and both pixel sizes.
    """
    try:
        target = float(pixel_size)
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset.pixel_size must be a number, got {pixel_size!r}") from exc
    if not math.isfinite(target) or target <= 0:
        raise DataError(
            f"dataset.pixel_size must be > 0 (micrometres per pixel), got {pixel_size!r}"
        )
    if sample.pixel_size is None or math.isclose(sample.pixel_size, target, rel_tol=1e-9):
        return sample
    h, w = sample.image.shape
    new_h, new_w = resampled_size(
        (h, w), sample.pixel_size, target, sample.path or sample.id or "an image"
    )
    if (new_h, new_w) == (h, w):
        return replace(sample, pixel_size=target)
    if max(h * w, new_h * new_w) > BANDED_RESAMPLE_PIXELS:  # no float copy of a large image
        from axal.streaming import ArrayRows, ResampledRows, band_rows

        rows = ResampledRows(ArrayRows(sample.image), (new_h, new_w))
        image = np.empty((new_h, new_w), dtype=np.float32)
        step = band_rows(max(w, new_w))
        for y in range(0, new_h, step):
            image[y : y + step] = rows.rows(y, min(new_h, y + step))
    else:
        img = Image.fromarray(np.ascontiguousarray(sample.image, dtype=np.float32))
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        image = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    mask = None
    if sample.mask is not None:
        msk = Image.fromarray(np.ascontiguousarray(sample.mask, dtype=np.uint8))
        msk = msk.resize((new_w, new_h), Image.Resampling.NEAREST)
        mask = np.asarray(msk, dtype=np.uint8).copy()
    return replace(sample, image=image, mask=mask, pixel_size=target)
