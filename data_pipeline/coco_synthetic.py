"""A small COCO-format instance segmentation set: synthetic scenes for testing the COCO evaluation end to end.

Each image is a textured background with several non-overlapping objects of three categories. Half of the objects
(on average) are drawn *salient* (own flat colour, sharp edge) and the rest *non-salient* (the background's texture
with a slightly shifted colour and a blurred edge), so that the VNS-score splits the objects into both groups.
Annotations exercise what real COCO files contain: polygons (category "polygon"), compressed RLE ("blob"),
uncompressed RLE for the crowd region (one ``iscrowd`` group of small dots in every third image), "area" and "bbox"
from the rasterised annotation, and the standard ``images`` / ``categories`` tables.

    python -m data_pipeline.coco_synthetic --out DIR [--num-images 8] [--seed 0]

writes DIR/images/NNNNNN.png and DIR/annotations.json. Needs pycocotools (``pip install vnsjax[coco]``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data_pipeline.synthetic import fractal_noise

CATEGORIES = ({"id": 1, "name": "polygon"}, {"id": 2, "name": "blob"}, {"id": 3, "name": "dots"})
IMAGE_DIR = "images"
ANNOTATIONS = "annotations.json"


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise SystemExit("the COCO tools need pycocotools: pip install 'vnsjax[coco]'") from e
    return mask_utils


def _polygon(rng: np.random.Generator, cy: float, cx: float, radius: float) -> np.ndarray:
    """A star-shaped polygon (k, 2) xy with 5-9 vertices."""
    k = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = radius * rng.uniform(0.55, 1.0, k)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _blob(rng: np.random.Generator, h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A smooth random blob (bool) around (cy, cx): an ellipse bent by low-frequency noise."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ry, rx = radius * rng.uniform(0.6, 1.0, 2)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    wobble = 0.35 * (fractal_noise(rng, h, w, octaves=(32, 16)) - 0.5)
    return (u * u + v * v) < (1.0 + wobble) ** 2


def _place(rng: np.random.Generator, h: int, w: int, taken: np.ndarray, radius: float) -> tuple[float, float] | None:
    """A centre whose disc (plus a margin) is inside the image and free; None after 50 tries."""
    margin = int(radius * 1.3) + 2
    if 2 * margin >= min(h, w):
        return None
    for _ in range(50):
        cy, cx = rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)
        y0, y1, x0, x1 = int(cy - margin), int(cy + margin), int(cx - margin), int(cx + margin)
        if not taken[y0:y1, x0:x1].any():
            taken[y0:y1, x0:x1] = True
            return cy, cx
    return None


def _paint(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, background: np.ndarray, salient: bool
) -> None:
    """Draws one object into `image` (float32 RGB) where `mask`."""
    h, w = mask.shape
    if salient:
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        # Far from the background colour, flat, sharp edge.
        while np.abs(colour - background).sum() < 200:
            colour = rng.uniform(0, 255, 3).astype(np.float32)
        layer = np.broadcast_to(colour, image.shape)
        alpha = mask.astype(np.float32)
    else:
        # Background texture statistics, colour shifted by a few levels, edge blurred over several pixels.
        layer = (
            background + rng.uniform(-12, 12, 3).astype(np.float32) + 40 * (fractal_noise(rng, h, w)[..., None] - 0.5)
        )
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 3.0)
    image[:] = image * (1 - alpha[..., None]) + layer * alpha[..., None]


def make_image(rng: np.random.Generator, image_id: int, first_ann_id: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One RGB uint8 scene and its annotations (ids from `first_ann_id`, image_id filled in)."""
    mask_utils = _mask_utils()
    h, w = int(rng.integers(192, 385)), int(rng.integers(192, 385))
    background = rng.uniform(40, 215, 3).astype(np.float32)
    image = background + 60 * (fractal_noise(rng, h, w)[..., None] - 0.5)
    taken = np.zeros((h, w), bool)
    anns: list[dict[str, Any]] = []

    def add(segmentation: Any, category: int, iscrowd: int) -> None:
        rle = segmentation
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
        elif isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, h, w)
        anns.append(
            {
                "id": first_ann_id + len(anns),
                "image_id": image_id,
                "category_id": category,
                "segmentation": segmentation,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": iscrowd,
            }
        )

    # Sizes from ~8 px to ~90 px radius: COCO's small (< 32^2), medium and large area ranges all occur.
    for _ in range(int(rng.integers(3, 7))):
        radius = float(np.exp(rng.uniform(np.log(8), np.log(min(h, w) * 0.35))))
        centre = _place(rng, h, w, taken, radius)
        if centre is None:
            continue
        salient = bool(rng.random() < 0.5)
        if rng.random() < 0.5:
            poly = _polygon(rng, *centre, radius)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            _paint(rng, image, mask.astype(bool), background, salient)
            add([poly.ravel().round(2).tolist()], 1, 0)
        else:
            mask = _blob(rng, h, w, *centre, radius)
            _paint(rng, image, mask, background, salient)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            add({"size": rle["size"], "counts": rle["counts"].decode("ascii")}, 2, 0)

    if image_id % 3 == 1:
        # A crowd: many small dots annotated as one region, uncompressed RLE as in COCO's crowd annotations.
        crowd = np.zeros((h, w), np.uint8)
        for _ in range(12):
            centre = _place(rng, h, w, taken, 4.0)
            if centre is not None:
                cv2.circle(crowd, (int(centre[1]), int(centre[0])), 3, 1, -1)
        if crowd.any():
            _paint(rng, image, crowd.astype(bool), background, True)
            add({"size": [h, w], "counts": _uncompressed_counts(crowd)}, 3, 1)
    return np.clip(image, 0, 255).astype(np.uint8), anns


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with a (possibly empty) run of 0s."""
    flat = np.asarray(mask, np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0, *counts]


def generate(out_dir: str | os.PathLike, num_images: int = 8, seed: int = 0) -> Path:
    """Writes `num_images` scenes and their COCO annotation file under `out_dir`; returns the annotation path."""
    out = Path(out_dir)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if (out / ANNOTATIONS).exists() or (out / IMAGE_DIR).exists():
        raise FileExistsError(f"{out} already holds {ANNOTATIONS} or {IMAGE_DIR}/; choose an empty --out")
    (out / IMAGE_DIR).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        image_id = i + 1  # COCO ids start at 1 by convention; 0 would also be valid
        image, anns = make_image(rng, image_id, len(annotations) + 1)
        name = f"{image_id:06d}.png"  # lossless, so VNS-scores computed from the files equal those of the arrays
        if not cv2.imwrite(str(out / IMAGE_DIR / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {out / IMAGE_DIR / name}")
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        annotations += anns
    dataset = {
        "info": {"description": f"vnsjax synthetic COCO set, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c, supercategory="shape") for c in CATEGORIES],
    }
    path = out / ANNOTATIONS
    path.write_text(json.dumps(dataset))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.coco_synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output directory (new or without images/ and annotations.json)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = generate(args.out, args.num_images, args.seed)
    except (FileExistsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    print(f"wrote {len(data['images'])} images, {len(data['annotations'])} annotations to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
