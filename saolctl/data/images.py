"""Decoding image and mask files into RGB PIL images and boolean masks.

Every mode PIL can open becomes 8-bit RGB: grayscale is replicated, alpha is dropped (as
``Image.convert('RGB')`` does, like torchvision and the WSOL reference), CMYK/YCbCr/palette are
converted, and 16-bit or 32-bit integer images are scaled down to 8 bits instead of clipped.
EXIF orientation is not applied to dataset images (the reference's boxes are in the stored pixel frame);
``upright=True`` applies it, for user photos shown as their camera meant them (``localize``).
Truncated files raise: ``ImageFile.LOAD_TRUNCATED_IMAGES`` (global state) is never set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from saolctl.data.errors import DataError

# the one list of image file names saolctl reads: datasets and `localize` inputs alike
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# what a broken file can raise while PIL opens or decodes it
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


def is_image_file(path: str | Path) -> bool:
    """Return True when the file name has an image extension and is not hidden."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float single-channel array to uint8 (16-bit: top 8 bits; floats in [0,1]: x255)."""
    if arr.dtype.kind == "f":
        a = arr.astype(np.float64)
        finite = a[np.isfinite(a)]
        peak = float(finite.max()) if finite.size else 0.0
        if peak <= 1.0:
            a = a * 255.0
        return np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
    a = arr.astype(np.int64)
    if a.max(initial=0) > 255:  # 16-bit data (I;16 or a 16-bit PNG opened as "I")
        return np.clip(a >> 8, 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of a PIL image of any mode."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        gray = _wide_to_uint8(np.asarray(image))
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids PIL's palette-transparency warning
    return image.convert("RGB")


def decode_rgb(path: str | Path, *, upright: bool = False) -> Image.Image:
    """Open and fully decode an image file as 8-bit RGB (turned by its EXIF orientation when ``upright``)."""
    with open(path, "rb") as f:  # the loaded image outlives the file (Image.close() would drop its pixels)
        if os.fstat(f.fileno()).st_size == 0:
            raise EOFError("empty file (0 bytes)")
        image = Image.open(f)
        image.load()
        if upright:
            image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def read_rgb(path: str | Path, *, upright: bool = False) -> Image.Image:
    """Decode an image file as RGB (upright: EXIF orientation applied), raising DataError naming a broken file."""
    try:
        return decode_rgb(path, upright=upright)
    except DECODE_ERRORS as err:
        raise DataError(f"cannot read image {path}: {describe_error(err)}") from err


def describe_error(err: BaseException) -> str:
    """Return a short one-line description of a decoding error."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image file (PIL cannot identify its format)"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def decode_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file as a (H, W) bool array: raw values above 0.5 (any non-zero integer) are True."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr", "PA"):
            image = image.convert("L")  # grayscale, as the reference's cv2.IMREAD_GRAYSCALE
        arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > 0.5  # the reference's test on raw values (integers: any non-zero)
