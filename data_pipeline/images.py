"""Reading image files: one decoder (PIL) and one set of pixel rules for every reader of the project.

An image is decoded completely before it is used, so a truncated file is an error rather than an image with a grey
or black bottom. Pixel rules of ``read_image`` (the result is always uint8 (H, W, 3) RGB):

- 8-bit RGB as is; grey is replicated to 3 channels; an alpha channel is dropped; palette, CMYK and other 8-bit
  modes are converted to RGB by PIL; 1-bit images become 0/255; 16-bit RGB PNGs arrive from PIL as 8-bit RGB
  (the high byte of each value);
- 16-bit grey (PNG ``I;16``, TIFF) is scaled linearly, 0..65535 -> 0..255 (``round(v / 257)``);
- float grey (TIFF ``F``) must hold values in [0, 1] and is scaled by 255 (``round(v * 255)``); NaN, inf, or values
  outside [0, 1] are refused, as the scale of such an image cannot be known;
- 32-bit integer grey (``I``) is refused for the same reason, except when the file is a PNG (whose only 32-bit
  grey reading is 16-bit data, scaled as above);
- more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89 million; a small file can declare far more, a
  "decompression bomb") is refused before decoding.
Every refusal is an ``ImageReadError`` naming the file. ``read_grey`` reads masks and edge maps by the same rules.
"""

from __future__ import annotations

import os
import re
import warnings

import cv2
import numpy as np
from PIL import Image, ImageFile


class ImageReadError(ValueError):
    """An image file that cannot be used: unreadable, truncated, too large or of an unsupported pixel type."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path``, fully decoded (a truncated or damaged file raises ``ImageReadError``)."""
    path = os.fspath(path)
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        # Decompression bombs: PIL only warns between MAX_IMAGE_PIXELS and twice that; both are refused here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            ImageFile.LOAD_TRUNCATED_IMAGES = False  # would fill a truncated image's missing part silently
            im = Image.open(path)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        declared = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageReadError(
            f"{path}: refused: it declares {declared[1] if declared else 'too many'} pixels, over the "
            f"{Image.MAX_IMAGE_PIXELS}-pixel limit (a decompression bomb?); raise PIL.Image.MAX_IMAGE_PIXELS if the "
            "image is genuine"
        ) from e
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for damaged files
        what = "truncated" if "truncated" in str(e).lower() else "not a readable image"
        raise ImageReadError(f"{path}: {what} ({type(e).__name__}: {e})") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    return im


def to_uint8_rgb(im: Image.Image, path: str | os.PathLike = "image") -> np.ndarray:
    """A decoded PIL image as uint8 (H, W, 3) RGB by the rules in the module docstring."""
    mode = im.mode
    if mode.startswith("I;16") or (mode == "I" and getattr(im, "format", None) == "PNG"):
        arr = np.asarray(im).astype(np.float64)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise ImageReadError(f"{path}: mode {mode} values outside 0..65535")
        grey = np.round(arr / 257.0).astype(np.uint8)
    elif mode == "F":
        arr = np.asarray(im, np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not np.isfinite(arr).all() or lo < 0 or hi > 1:
            raise ImageReadError(
                f"{path}: float image with values in [{lo:.4g}, {hi:.4g}]; only floats in [0, 1] are read "
                "(scaled by 255). Save it as 8-bit, or scale it to [0, 1]"
            )
        grey = np.round(arr * 255.0).astype(np.uint8)
    elif mode in ("I", "I;32", "I;32B"):
        raise ImageReadError(f"{path}: 32-bit integer image (mode {mode}) of unknown value range; save it as 8-bit")
    else:
        if mode in ("LA", "La"):
            im = im.getchannel("L")
        elif mode == "1":
            im = im.convert("L")  # 0/255, not 0/1
        elif mode not in ("RGB", "L"):
            im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
        arr = np.asarray(im)
        if arr.ndim == 3:
            return np.ascontiguousarray(arr[:, :, :3])
        grey = arr
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image file at ``path`` as uint8 (H, W, 3) RGB, fully decoded and checked; see the module docstring."""
    with open_image(path) as im:
        return to_uint8_rgb(im, path)


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """The file at ``path`` as uint8 (H, W) grey: grey files as stored, others by ``read_image``'s rules and then
    ``cv2.cvtColor``'s RGB -> grey weights (``cv2.imread(..., IMREAD_GRAYSCALE)`` converts inside the decoder and
    can differ from this by 1 on colour files)."""
    with open_image(path) as im:
        if im.mode == "L":
            return np.asarray(im)
        return cv2.cvtColor(to_uint8_rgb(im, path), cv2.COLOR_RGB2GRAY)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, after decoding it completely (so truncation is caught too)."""
    with open_image(path) as im:
        return im.size[1], im.size[0]
