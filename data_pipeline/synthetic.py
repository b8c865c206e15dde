"""Synthetic VNS-SEG: small visually non-salient scenes written in the released folder layout.

Three scene kinds, matching the paper's three sources of non-salience:
  camouflage   - object textured like its background (same texture statistics, slightly shifted colour),
                 blended boundary (COD-TR, CAMO, COD10K, NC4K);
  low_contrast - smooth polyp-like blobs on similar tissue-like texture with vignetting and specular highlights
                 (Polyp-TR, Kvasir, ClinicDB, ColonDB, ETIS, CDS2K);
  low_light    - an ordinary scene (blobs and thin structures) darkened and made noisy
                 (DIS-TR-Dark, Thin-TR-Dark, FSS-Dark, DIS-Dark, Thin-Dark, LIS).
Every subset of ``vns_seg.SUBSETS`` gets ``num`` images, so the reader finds them with the same table; training
sources also get their pre-computed edge maps. Usage: ``python -m data_pipeline.synthetic --out DIR --num N --seed S``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

import cv2
import numpy as np

from data_pipeline import edges, vns_seg


@dataclasses.dataclass(frozen=True)
class SceneParams:
    """Scene knobs. ``contrast`` scales the object/background colour difference (None: the kind's default)."""

    num_objects: tuple[int, int] = (1, 2)  # inclusive range
    object_size: tuple[float, float] = (0.15, 0.4)  # object radius as a fraction of min(H, W)
    contrast: float | None = None
    width: tuple[int, int] = (320, 512)
    height: tuple[int, int] = (240, 384)


DEFAULT_CONTRAST = {"camouflage": 0.12, "low_contrast": 0.15, "low_light": 0.6}


def _image_size(rng: np.random.Generator, p: SceneParams) -> tuple[int, int]:
    """(H, W), never square; one image in four is portrait."""
    w = int(rng.integers(p.width[0], p.width[1] + 1))
    h = int(rng.integers(p.height[0], min(p.height[1], w - 16) + 1))
    return (w, h) if rng.random() < 0.25 else (h, w)


def fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: Sequence[int] = (64, 32, 16, 8, 4)) -> np.ndarray:
    """float32 (H, W) in [0, 1]: sum of smoothly upsampled random grids at several cell sizes."""
    out = np.zeros((h, w), np.float32)
    for i, cell in enumerate(octaves):
        grid = rng.random((max(h // cell, 2), max(w // cell, 2)), dtype=np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6**i
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _blob(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """A random smooth star-shaped blob (uint8 0/255) fully inside the image."""
    cy = rng.uniform(radius * 1.3, h - radius * 1.3) if h > 2.6 * radius else h / 2
    cx = rng.uniform(radius * 1.3, w - radius * 1.3) if w > 2.6 * radius else w / 2
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.6, 1.0)
    pts = np.stack([cx + radius * r * np.cos(theta), cy + aspect * radius * r * np.sin(theta)], -1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _thin(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """Thin branching strokes (ThinObject-like) inside a box of half-size ``radius``."""
    mask = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
    for _ in range(int(rng.integers(3, 7))):
        pts = [(cx, cy)]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(6):
            angle += rng.normal(0, 0.5)
            step = radius / 5
            pts.append((np.clip(pts[-1][0] + step * np.cos(angle), 0, w - 1),
                        np.clip(pts[-1][1] + step * np.sin(angle), 0, h - 1)))
        cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, int(rng.integers(2, 5)))
    return mask


def _objects(rng: np.random.Generator, h: int, w: int, p: SceneParams, thin_prob: float = 0.0) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(p.num_objects[0], p.num_objects[1] + 1))):
        radius = rng.uniform(*p.object_size) * min(h, w)
        shape = _thin if rng.random() < thin_prob else _blob
        mask = np.maximum(mask, shape(rng, h, w, radius))
    return mask


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Blending weight in [0, 1] (H, W, 1): a blurred mask gives the blended, hard-to-see boundary."""
    a = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)
    return a[:, :, None]


def _textured(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, spread: float) -> np.ndarray:
    """Colour times a fractal luminance texture with per-channel variation, float32 (H, W, 3) 0..255."""
    lum = fractal_noise(rng, h, w)[:, :, None]
    tint = np.stack([fractal_noise(rng, h, w, (32, 8)) for _ in range(3)], -1) - 0.5
    return colour * (1 - spread + 2 * spread * lum) + 40 * spread * tint


def camouflage(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    contrast = DEFAULT_CONTRAST["camouflage"] if p.contrast is None else p.contrast
    base = rng.uniform([60, 60, 30], [170, 160, 110]).astype(np.float32)  # earthy palette
    shift = rng.normal(0, 1, 3).astype(np.float32)
    shift *= contrast * 255 / max(float(np.linalg.norm(shift)), 1e-6)
    mask = _objects(rng, h, w, p)
    bg = _textured(rng, h, w, base, 0.45)
    obj = _textured(rng, h, w, base + shift, 0.45)
    a = _soft(mask, 2.0)
    return bg * (1 - a) + obj * a, mask


def low_contrast(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    contrast = DEFAULT_CONTRAST["low_contrast"] if p.contrast is None else p.contrast
    tissue = rng.uniform([170, 80, 70], [220, 130, 110]).astype(np.float32)
    img = _textured(rng, h, w, tissue, 0.2)
    vessels = np.abs(fractal_noise(rng, h, w, (24, 12)) - 0.5) < 0.02  # thin dark ridges, tissue-like
    img[vessels] *= 0.85
    mask = _objects(rng, h, w, p)
    # Polyp: a slightly redder dome, shaded by distance from its border.
    dist = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 5)
    dome = (dist / max(float(dist.max()), 1.0))[:, :, None]
    polyp = tissue * np.array([1.0, 1 - contrast, 1 - contrast], np.float32) * (0.9 + 0.25 * dome)
    a = _soft(mask, 4.0)
    img = img * (1 - a) + (0.5 * img + 0.5 * polyp) * a
    for _ in range(int(rng.integers(2, 6))):  # specular highlights
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(1, 4)), (255, 255, 255), -1)
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    return img * np.clip(1.15 - 0.45 * r2, 0.2, 1.0)[:, :, None], mask


def low_light(rng: np.random.Generator, h: int, w: int, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    contrast = DEFAULT_CONTRAST["low_light"] if p.contrast is None else p.contrast
    bg = _textured(rng, h, w, rng.uniform(60, 200, 3).astype(np.float32), 0.4)
    mask = _objects(rng, h, w, p, thin_prob=0.4)
    colour = np.clip(rng.uniform(60, 200, 3) + rng.choice([-1, 1], 3) * contrast * 120, 0, 255).astype(np.float32)
    obj = _textured(rng, h, w, colour, 0.3)
    a = _soft(mask, 1.0)
    img = bg * (1 - a) + obj * a
    # Darken (exposure and gamma), then shot-like and read noise, as in synthetic low-light pipelines.
    dark = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(1.5, 2.5) * rng.uniform(0.12, 0.3)
    dark = dark + rng.normal(0, 1, dark.shape) * (np.sqrt(np.maximum(dark, 0)) * 0.8 + rng.uniform(1.5, 4.0))
    return dark, mask


SCENES = {"camouflage": camouflage, "low_contrast": low_contrast, "low_light": low_light}


def make_scene(kind: str, rng: np.random.Generator,
               params: SceneParams = SceneParams()) -> tuple[np.ndarray, np.ndarray]:
    """One scene: RGB uint8 (H, W, 3) and mask uint8 (H, W) 0/255."""
    h, w = _image_size(rng, params)
    img, mask = SCENES[kind](rng, h, w, params)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _write(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.endswith(".jpg") else []
    if not cv2.imwrite(path, array, params):
        raise OSError(f"cannot write {path}")


def generate(out_dir: str | os.PathLike, num: int = 8, seed: int = 0, *, subsets: str | Sequence[str] = "all",
             params: SceneParams = SceneParams()) -> dict[str, int]:
    """Writes ``num`` images per subset under ``out_dir`` in the VNS-SEG layout; returns counts per subset.

    Each subset draws from its own generator (seed, subset index), so adding subsets does not change the others.
    """
    out_dir = os.fspath(out_dir)
    counts = {}
    for name in vns_seg.resolve_names(subsets):
        spec = vns_seg.SUBSETS[name]
        rng = np.random.default_rng([seed, list(vns_seg.SUBSETS).index(name)])
        for i in range(num):
            image, mask = make_scene(spec.kind, rng, params)
            stem = f"{spec.tfds_config}_{i:05d}"
            _write(os.path.join(out_dir, spec.im_dir, stem + spec.im_ext), image)
            _write(os.path.join(out_dir, spec.gt_dir, stem + spec.gt_ext), mask)
            if spec.edge_dir is not None:
                _write(os.path.join(out_dir, spec.edge_dir, stem + spec.gt_ext), edges.boundary_from_mask(mask))
        counts[name] = num
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output root (the VNS-SEG root the reader expects)")
    parser.add_argument("--num", type=int, default=8, help="images per subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subsets", nargs="+", default=["all"], help="subset names or train/seen/unseen/eval/all")
    parser.add_argument("--objects", type=int, nargs=2, default=(1, 2), metavar=("MIN", "MAX"))
    parser.add_argument("--size", type=float, nargs=2, default=(0.15, 0.4), metavar=("MIN", "MAX"),
                        help="object radius as a fraction of min(H, W)")
    parser.add_argument("--contrast", type=float, default=None, help="object/background contrast (default per kind)")
    args = parser.parse_args(argv)
    params = SceneParams(num_objects=tuple(args.objects), object_size=tuple(args.size), contrast=args.contrast)
    counts = generate(args.out, args.num, args.seed, subsets=args.subsets, params=params)
    print(f"wrote {sum(counts.values())} images to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
