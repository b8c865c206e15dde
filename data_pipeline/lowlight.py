"""Physically based low-light synthesis: a normally exposed sRGB photo -> the same scene shot in the dark.

The camera pipeline is run backwards to linear light, the scene is made darker and noisier there, where light and
sensor noise actually add up, and the pipeline is run forwards again (parameter ranges and reasons: docs/data.md):
  1. inverse tone curve   (the smoothstep S-curve that cameras apply for contrast),
  2. inverse sRGB gamma   (display encoding -> linear intensity),
  3. colour cast          (per-channel gains: warm street light / cool moonlight),
  4. exposure reduction   (fewer photons: linear intensity times k < 1),
  5. sensor noise         (Poisson shot noise + Gaussian read noise, Var = shot * signal + read),
  6. sRGB gamma, tone curve and 8-bit quantisation, as the camera would produce the dark photo.

Folder use (rebuilds *-Dark sets from the originals; masks are unchanged, copy them yourself):
    python -m data_pipeline.lowlight --input DIR --output DIR [--seed S] [--ext .jpg]
Each file gets its own generator seeded by (seed, file name), so a result does not depend on the other files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import zlib
from collections.abc import Sequence

import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class LowLightParams:
    """One draw of the degradation. ``shot`` and ``read`` are in linear units of a [0, 1] signal."""

    exposure: float  # linear intensity scale
    gains: tuple[float, float, float]  # RGB colour cast, applied in linear light
    shot: float  # Poisson gain: shot-noise variance per unit of signal
    read: float  # read-noise variance


@dataclasses.dataclass(frozen=True)
class LowLightRanges:
    """Where ``sample_params`` draws from (log-uniform for the scale-like quantities)."""

    exposure: tuple[float, float] = (0.03, 0.4)
    cast: float = 0.25  # log red / blue gain spread around green (x0.78 .. x1.28)
    shot: tuple[float, float] = (1e-4, 1.2e-2)


def sample_params(rng: np.random.Generator, ranges: LowLightRanges = LowLightRanges()) -> LowLightParams:
    """Draws exposure, cast and noise levels.

    Read noise follows shot noise through the log-linear relation fitted to real sensors by Brooks et al.
    ("Unprocessing images for learned raw denoising", 2019): log read = 2.18 log shot + 1.2 + N(0, 0.26).
    """
    exposure = float(np.exp(rng.uniform(*np.log(ranges.exposure))))
    warmth = rng.uniform(-ranges.cast, ranges.cast)  # one axis from cool to warm, plus a small independent tint
    tint = rng.uniform(-ranges.cast / 4, ranges.cast / 4)
    gains = (float(np.exp(warmth + tint)), 1.0, float(np.exp(-warmth + tint)))
    log_shot = rng.uniform(*np.log(ranges.shot))
    read = float(np.exp(2.18 * log_shot + 1.2 + rng.normal(0.0, 0.26)))
    return LowLightParams(exposure, gains, float(np.exp(log_shot)), read)


def tone_curve(x: np.ndarray) -> np.ndarray:
    """Global S-curve 3x^2 - 2x^3 (smoothstep), the generic camera tone map used in unprocessing work."""
    return x * x * (3.0 - 2.0 * x)


def inverse_tone_curve(y: np.ndarray) -> np.ndarray:
    """Closed-form inverse of ``tone_curve`` on [0, 1]."""
    y = np.clip(y, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding (linear toe below 0.04045, power 2.4 above)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding, the inverse of ``srgb_to_linear``."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def poisson_gaussian(signal: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor reading of a linear ``signal``: shot * Poisson(signal / shot) + N(0, read); Var = shot * signal + read.

    ``signal / shot`` is the photo-electron count, so the shot noise is exactly Poisson, not a Gaussian fit.
    """
    electrons = rng.poisson(np.maximum(signal, 0.0) / shot)
    return (shot * electrons + rng.normal(0.0, np.sqrt(read), signal.shape)).astype(np.float32)


def darken(image: np.ndarray, rng: np.random.Generator, params: LowLightParams | None = None) -> np.ndarray:
    """Low-light version of an RGB image (uint8, or float in 0..255), as uint8 (H, W, 3).

    ``params`` None draws them from ``sample_params(rng)``; the noise always comes from ``rng``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"darken expects an RGB image (H, W, 3), got shape {image.shape}")
    p = sample_params(rng) if params is None else params
    linear = srgb_to_linear(inverse_tone_curve(image.astype(np.float32) / 255.0))
    signal = linear * (p.exposure * np.asarray(p.gains, np.float32))
    sensed = np.clip(poisson_gaussian(signal, p.shot, p.read, rng), 0.0, 1.0)
    out = tone_curve(linear_to_srgb(sensed)) * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- folder CLI


def _file_rng(seed: int, name: str) -> np.random.Generator:
    # crc32 rather than hash(): Python salts str hashes per process, which would break reproducibility.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def process_folder(
    input_dir: str, output_dir: str, seed: int = 0, exts: Sequence[str] = IMAGE_EXTS
) -> tuple[int, list[str]]:
    """Darkens every image of ``input_dir`` (top level, by extension) into ``output_dir`` under the same name.

    Returns (written, bad) where ``bad`` holds "file: reason" for images that could not be read or written.
    Raises ``ValueError`` before writing anything if the output folder is the input folder or inside it, or if
    any output file already exists.
    """
    if not os.path.isdir(input_dir):
        raise ValueError(f"--input {input_dir} is not a folder")
    if _inside(output_dir, input_dir):
        raise ValueError(f"--output {output_dir} is inside --input {input_dir}; choose a separate folder")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    names = sorted(
        n for n in os.listdir(input_dir) if n.lower().endswith(exts) and os.path.isfile(os.path.join(input_dir, n))
    )
    if not names:
        raise ValueError(f"--input {input_dir} has no images ({', '.join(exts)})")
    existing = [n for n in names if os.path.exists(os.path.join(output_dir, n))]
    if existing:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise ValueError(f"{len(existing)} files already exist in --output {output_dir} ({shown}); nothing was written")
    os.makedirs(output_dir, exist_ok=True)
    written, bad = 0, []
    for name in names:
        src = os.path.join(input_dir, name)
        bgr = cv2.imread(src, cv2.IMREAD_COLOR)  # grey is replicated, alpha dropped, 16 bit scaled to 8 bit
        if bgr is None:
            bad.append(f"{src}: not a readable image")
            continue
        dark = darken(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), _file_rng(seed, name))
        dst = os.path.join(output_dir, name)
        quality = [cv2.IMWRITE_JPEG_QUALITY, 95] if name.lower().endswith((".jpg", ".jpeg")) else []
        if not cv2.imwrite(dst, cv2.cvtColor(dark, cv2.COLOR_RGB2BGR), quality):
            bad.append(f"{dst}: cannot write")
            continue
        written += 1
    return written, bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.lowlight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of normally exposed images")
    parser.add_argument("--output", required=True, help="new folder for the dark images (must not hold them yet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ext",
        nargs="+",
        default=list(IMAGE_EXTS),
        help="image extensions to process (e.g. --ext .jpg when masks share the folder)",
    )
    args = parser.parse_args(argv)
    try:
        written, bad = process_folder(args.input, args.output, args.seed, args.ext)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {written} low-light images to {args.output}")
    if bad:
        print(f"skipped {len(bad)} bad files:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
