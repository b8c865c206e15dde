"""VNS-score: how visually non-salient an object is, as released (VNS-Train/utils/VNS_score2.py).

score = 0.5 * (1 - C_fb) + 0.5 * blur, where
- C_fb = (colour + texture) / 2, colour = |mean Lab(fg) - mean Lab(local bg)| / 100 on OpenCV's 8-bit Lab,
  texture = |GLCM contrast(fg-only grey) - GLCM contrast(bg-only grey)| / 1000,
- blur = 1 - mean Sobel magnitude over the boundary ring / 255.
Higher = less salient. Values can leave [0, 1] and are NaN for an empty mask or an empty ring.

The released script reads images with cv2.imread, i.e. **BGR**; `channel_order` says what you pass.

CLI (per-image CSV, subset summary, selection by threshold):
    python -m vnsjax.vns_score --images DIR --masks DIR [--threshold 0.8] [--out scores.csv]
    python -m vnsjax.vns_score --data ROOT --subset NAME [--threshold 0.8] [--out scores.csv]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from vnsjax.evaluation.metrics import binarize_gt
from vnsjax.evaluation.report import canonical_subset
from vnsjax.utils.outputs import OutputError, OutputFile

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_MASK_EXTS = (".png", ".bmp", ".jpg", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class VnsTerms:
    """Component terms of the VNS-score (names as in the paper: C_fb and B_blur)."""

    color: float  # Lab mean distance / 100
    texture: float  # |GLCM contrast difference| / 1000
    contrast: float  # C_fb = (color + texture) / 2
    blur: float  # 1 - mean boundary gradient / 255
    score: float  # 0.5 (1 - C_fb) + 0.5 blur

    @property
    def valid(self) -> bool:
        """The released batch script drops NaN scores and scores outside [0, 1]."""
        return not math.isnan(self.score) and 0.0 <= self.score <= 1.0


def _mean(values: np.ndarray) -> np.ndarray | float:
    # NaN instead of NumPy's empty-slice warning; the released code gets NaN here too.
    return values.mean(axis=0) if len(values) else float("nan")


def local_background(mask: np.ndarray, max_kernel_size: int = 15) -> np.ndarray:
    """Band around the object: elliptical dilation minus the mask (`get_local_background_mask`).

    The kernel size is min(max_kernel_size, distances of the first external contour's bounding box to
    the four image borders), at least 1, so objects touching the border get a 1x1 kernel (empty band).
    """
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros(mask.shape, bool)
    h, w = m.shape
    x, y, bw, bh = cv2.boundingRect(contours[0])
    size = max(1, min(max_kernel_size, x, w - (x + bw), y, h - (y + bh)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    # The ellipse always contains its anchor, so the dilation contains the mask and the difference is a band.
    return cv2.dilate(m, kernel, borderType=cv2.BORDER_ISOLATED) > m


def glcm_contrast(gray: np.ndarray) -> float:
    """skimage graycoprops(graycomatrix(gray, [1], [0], 256, symmetric=True, normed=True), 'contrast').

    With one horizontal offset, sum_ij P_ij (i - j)^2 of the symmetric normalised matrix is the mean of
    (a - b)^2 over horizontally adjacent pixel pairs, which avoids building the 256x256 matrix.
    """
    diff = np.diff(gray.astype(np.float64), axis=1)
    return float(_mean((diff * diff).ravel()))


def boundary_ring(mask: np.ndarray, ksize: int = 5) -> np.ndarray:
    """dilate(mask) minus erode(mask) with a ksize elliptical kernel (default OpenCV borders)."""
    m = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize))
    return cv2.dilate(m, kernel) > cv2.erode(m, kernel)


def vns_terms(image: np.ndarray, mask: np.ndarray, *, channel_order: Literal["bgr", "rgb"] = "bgr") -> VnsTerms:
    """VNS-score and its terms for one image (H, W, 3) uint8 and its mask (0-255 uint8 binarised > 128, or bool)."""
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif channel_order == "rgb":
        image = np.ascontiguousarray(image[..., ::-1])
    fg = binarize_gt(mask)
    bg = local_background(fg)
    if not bg.any():
        bg = ~fg

    # The released code masks the image (cv2.bitwise_and) and converts the masked copy; colour
    # conversions are per pixel, so converting once and selecting pixels gives the same values.
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    color = float(np.linalg.norm(_mean(lab[fg]) - _mean(lab[bg]))) / 100.0
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    texture_fg = glcm_contrast(np.where(fg, gray, 0)) if fg.any() else 0.0
    texture = abs(texture_fg - glcm_contrast(np.where(bg, gray, 0))) / 1000.0
    contrast = (color + texture) / 2.0

    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    blur = 1.0 - float(_mean(np.sqrt(gx**2 + gy**2)[boundary_ring(fg)])) / 255.0
    return VnsTerms(color, texture, contrast, blur, 0.5 * (1.0 - contrast) + 0.5 * blur)


def vns_score(image: np.ndarray, mask: np.ndarray, *, channel_order: Literal["bgr", "rgb"] = "bgr") -> float:
    """VNS-score of one image; see `vns_terms`."""
    return vns_terms(image, mask, channel_order=channel_order).score


# ---------------------------------------------------------------- batch / CLI


def pairs_from_dirs(images: str | Path, masks: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs: every image in `images` with a mask of the same stem in `masks`.

    The released script only takes '.jpg' images with '.png' masks; this accepts the usual extensions.
    """
    masks_by_stem = {p.stem: p for p in sorted(Path(masks).iterdir()) if p.suffix.lower() in _MASK_EXTS}
    pairs = []
    for img in sorted(Path(images).iterdir()):
        if img.suffix.lower() in _IMAGE_EXTS and img.stem in masks_by_stem:
            pairs.append((img, masks_by_stem[img.stem]))
    return pairs


def pairs_from_dataset(root: str | Path, subset: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) pairs of a VNS-SEG subset found by `data_pipeline.vns_seg.scan`, and one message per image
    without a mask. Pixels are checked when `score_files` reads them, so each file is decoded once."""
    try:
        from data_pipeline import vns_seg
    except ImportError as e:
        raise SystemExit(f"--data/--subset need data_pipeline.vns_seg ({e}); use --images DIR --masks DIR") from e
    try:
        found = vns_seg.scan(root, [canonical_subset(subset)], skip_bad=True, check_sizes=False)
    except KeyError as e:
        raise SystemExit(str(e)) from e
    if found.absent:
        raise SystemExit(f"subset {subset} not found under {root}")
    return [(Path(ex.image_path), Path(ex.mask_path)) for ex in found.examples], found.skipped


def score_files(pairs: Iterable[tuple[Path, Path]]) -> tuple[list[dict[str, object]], list[str]]:
    """(one row per scored image, one message per skipped pair).

    Files are fully decoded (`data_pipeline.images`: for 8-bit images and grey masks the pixels of cv2.imread), so a
    truncated or unreadable image or mask, or a mask of another size, is skipped and named instead of being scored.
    """
    from data_pipeline.images import ImageReadError, read_grey, read_image

    rows, failed = [], []
    for img_path, mask_path in pairs:
        try:
            image, mask = read_image(img_path), read_grey(mask_path)
            if image.shape[:2] != mask.shape:
                raise ImageReadError(f"{mask_path}: mask is {mask.shape}, image {img_path} is {image.shape[:2]}")
        except ImageReadError as e:
            failed.append(str(e))
            continue
        terms = vns_terms(image, mask, channel_order="rgb")
        rows.append({"file": img_path.name, **dataclasses.asdict(terms), "valid": terms.valid})
    return rows, failed


def summarize_scores(
    rows: Sequence[dict[str, object]], threshold: float | None = None, failed: int = 0
) -> dict[str, float | int]:
    """Mean / std over valid scores (NaN and out-of-[0,1] dropped as released) and the selection count.

    `failed` counts the pairs that could not be read (not in `rows`). Selection keeps valid images with
    score <= threshold (the released selection keeps `<=` although its printout says '>='): a high VNS-score
    means non-salient, so this keeps the *more salient* images.
    """
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    valid = np.array([bool(r["valid"]) for r in rows], dtype=bool)
    kept = scores[valid]
    summary: dict[str, float | int] = {
        "count": int(valid.sum()),
        "total": len(rows),
        "failed": failed,
        "nan": int(np.isnan(scores).sum()),
        "out_of_range": int((~np.isnan(scores) & ~valid).sum()),
        "mean": float(kept.mean()) if len(kept) else float("nan"),
        "std": float(kept.std()) if len(kept) else float("nan"),
    }
    if threshold is not None:
        summary["threshold"] = threshold
        summary["selected"] = int((kept <= threshold).sum())
    return summary


def _is_score_csv(path: Path) -> bool:
    """An earlier --out of this command (its header), which may be replaced."""
    try:
        with open(path, newline="") as f:
            return f.readline().rstrip("\r\n").split(",")[0] == "file"
    except (OSError, UnicodeDecodeError):
        return False


def main(argv: Sequence[str] | None = None) -> dict[str, float | int]:
    parser = argparse.ArgumentParser(prog="python -m vnsjax.vns_score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="VNS-SEG root (with --subset, read through data_pipeline.vns_seg)")
    parser.add_argument("--subset", help="subset name, e.g. CAMO")
    parser.add_argument("--images", help="image folder (alternative to --data/--subset)")
    parser.add_argument("--masks", help="mask folder, same file stems as the images")
    parser.add_argument("--threshold", type=float, help="select valid images with score <= T (released rule)")
    parser.add_argument("--out", help="per-image CSV path")
    args = parser.parse_args(argv)
    for flag in ("images", "masks", "data"):
        if getattr(args, flag) and not Path(getattr(args, flag)).is_dir():
            parser.error(f"--{flag} {getattr(args, flag)} is not a folder")
    if args.threshold is not None and not math.isfinite(args.threshold):
        parser.error(f"--threshold must be a finite number, got {args.threshold}")
    try:
        out = OutputFile(args.out, "a vns_score CSV", _is_score_csv) if args.out else None
    except OutputError as e:
        parser.exit(1, f"error: {e}\n")
    unpaired: list[str] = []
    if args.images and args.masks:
        pairs = pairs_from_dirs(args.images, args.masks)
    elif args.data and args.subset:
        pairs, unpaired = pairs_from_dataset(args.data, args.subset)
    else:
        parser.error("give --images and --masks, or --data and --subset")

    rows, failed = score_files(pairs)
    failed = unpaired + failed
    summary = summarize_scores(rows, args.threshold, failed=len(failed))
    if args.threshold is not None:
        for r in rows:
            r["selected"] = bool(r["valid"]) and float(r["score"]) <= args.threshold
    if out is not None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
        try:
            out.write(text.getvalue().encode())
        except OutputError as e:
            parser.exit(1, f"error: {e}\n")
    name = args.subset or args.images
    print(
        f"{name}: {summary['count']}/{summary['total']} valid, mean {summary['mean']:.4f}, std {summary['std']:.4f}, "
        f"NaN {summary['nan']}, out of [0,1] {summary['out_of_range']}, unreadable (skipped) {summary['failed']}"
    )
    if args.threshold is not None:
        print(f"selected (score <= {args.threshold}): {summary['selected']}")
    if failed:
        print(f"skipped {len(failed)} unreadable file(s):\n  " + "\n  ".join(failed), file=sys.stderr)
    return summary


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:])["failed"] else 0)
