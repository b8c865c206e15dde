"""Segment images from the command line with a converted SAM / HQ-SAM / VNS-SAM checkpoint.

    python -m vnsjax.predict --checkpoint DIR --input IMG_OR_DIR [--box x0 y0 x1 y1] [--points x,y,label ...]
                             [--multimask] [--out DIR]

Prompts, per image, first match wins: --box/--points on the command line (applied to every image); a
prompt file NAME.json beside the image ({"box": [x0, y0, x1, y1], "points": [[x, y, label], ...]});
otherwise automatic mask generation. Writes OUT/NAME_mask{i}.png (0/255), OUT/NAME_overlay.png (masks
tinted over the image, the prompt drawn: box rectangle, foreground points green, background points red)
and OUT/NAME.json (mode, prompt, scores, mask files). Unreadable images are reported and skipped; the
exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
PROMPT_COLOUR = (30, 144, 255)  # SAM's demo blue for prompted masks


def parse_point(text: str) -> tuple[float, float, int]:
    try:
        x, y, label = text.split(",")
        return float(x), float(y), int(label)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected x,y,label (label 1 foreground, 0 background), got {text!r}") from e


def list_images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    return [path]


def read_prompt_file(image_path: Path) -> dict[str, Any] | None:
    path = image_path.with_suffix(".json")
    if not path.is_file():
        return None
    spec = json.loads(path.read_text())
    return {"box": spec.get("box"), "points": spec.get("points")}


def overlay(
    image: np.ndarray,
    masks: list[np.ndarray],
    colours: list[tuple[int, int, int]],
    *,
    box: list[float] | None = None,
    points: list[list[float]] | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """Masks tinted over the image (in list order, later on top), prompts drawn."""
    out = image.astype(np.float32).copy()
    for mask, colour in zip(masks, colours, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    pil = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(3, round(max(image.shape[:2]) / 100))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=(0, 255, 0), width=max(2, r // 2))
    for x, y, label in points or []:
        fill = (0, 220, 0) if int(label) == 1 else (230, 0, 0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    return pil


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def predict_prompted(predictor, image: np.ndarray, prompt: dict[str, Any], multimask: bool) -> dict[str, Any]:
    predictor.set_image(image)
    points = prompt.get("points")
    coords = labels = None
    if points:
        arr = np.asarray(points, np.float64).reshape(-1, 3)
        coords, labels = arr[:, :2], arr[:, 2].astype(np.int32)
    box = None if prompt.get("box") is None else np.asarray(prompt["box"], np.float64)
    masks, scores, _ = predictor.predict(coords, labels, box, multimask_output=multimask)
    return {"masks": [m.astype(bool) for m in masks], "scores": [float(s) for s in scores]}


def process_image(
    path: Path, out_dir: Path, predictor, amg, cli_prompt: dict[str, Any] | None, multimask: bool
) -> dict[str, Any]:
    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    prompt = cli_prompt or read_prompt_file(path)
    stem = path.stem
    if prompt is not None:
        res = predict_prompted(predictor, image, prompt, multimask)
        order = np.argsort(res["scores"])[::-1]
        files = []
        for rank, i in enumerate(order):
            name = f"{stem}_mask{rank}.png"
            _save_mask(res["masks"][i], out_dir / name)
            files.append(name)
        vis = overlay(
            image, [res["masks"][order[0]]], [PROMPT_COLOUR], box=prompt.get("box"), points=prompt.get("points")
        )
        record = {"mode": "prompt", "prompt": prompt, "scores": [res["scores"][i] for i in order], "masks": files}
    else:
        anns = amg.generate(image)
        rng = np.random.default_rng(0)
        files = []
        for i, ann in enumerate(anns):
            name = f"{stem}_mask{i}.png"
            _save_mask(ann["segmentation"], out_dir / name)
            files.append(name)
        # Largest first so small masks stay visible on top.
        by_area = sorted(range(len(anns)), key=lambda i: -anns[i]["area"])
        colours = [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in anns]
        vis = overlay(image, [anns[i]["segmentation"] for i in by_area], [colours[i] for i in by_area])
        record = {
            "mode": "automatic",
            "scores": [a["predicted_iou"] for a in anns],
            "masks": files,
            "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in anns],
        }
    vis.save(out_dir / f"{stem}_overlay.png")
    record.update(image=str(path), size=list(image.shape[:2]), overlay=f"{stem}_overlay.png")
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vnsjax.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted model directory (python -m convert_weights)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="box prompt, pixels")
    p.add_argument("--points", type=parse_point, nargs="+", metavar="X,Y,LABEL", help="point prompts")
    p.add_argument("--multimask", action="store_true", help="three masks per prompt (SAM / HQ-SAM)")
    p.add_argument("--out", default="predictions", help="output folder")
    p.add_argument("--output", choices=["fused", "sam", "vns"], default="fused", help="VNS-SAM: which mask")
    g = p.add_argument_group("automatic mode (no prompt)")
    g.add_argument("--points-per-side", type=int, default=32)
    g.add_argument("--points-per-batch", type=int, default=64)
    g.add_argument("--pred-iou-thresh", type=float, default=0.88)
    g.add_argument("--stability-score-thresh", type=float, default=0.95)
    g.add_argument("--box-nms-thresh", type=float, default=0.7)
    g.add_argument("--crop-n-layers", type=int, default=0)
    g.add_argument("--min-mask-region-area", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from vnsjax.model_dir import load_model
    from vnsjax.predictors.automatic_mask_generator import SamAutomaticMaskGenerator
    from vnsjax.predictors.sam_predictor import SamPredictor
    from vnsjax.predictors.vns_predictor import VnsPredictor

    inp = Path(args.input)
    if not inp.exists():
        print(f"error: {inp} does not exist", file=sys.stderr)
        return 1
    images = list_images(inp)
    if not images:
        print(f"error: no images ({', '.join(sorted(IMAGE_EXTS))}) in {inp}", file=sys.stderr)
        return 1
    try:
        model = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    predictor = VnsPredictor(model, output=args.output) if model.variant == "vns" else SamPredictor(model)
    # Built lazily: the AMG's jitted post-processing is only needed for images without a prompt.
    amg = None
    cli_prompt = None
    if args.box is not None or args.points:
        cli_prompt = {"box": args.box, "points": [list(p) for p in args.points] if args.points else None}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    failed: list[tuple[str, str]] = []
    done = 0
    for path in tqdm(images, desc=f"{model.variant} {model.config.name}", unit="img"):
        try:
            if amg is None and cli_prompt is None and read_prompt_file(path) is None:
                amg = SamAutomaticMaskGenerator(
                    predictor,
                    points_per_side=args.points_per_side,
                    points_per_batch=args.points_per_batch,
                    pred_iou_thresh=args.pred_iou_thresh,
                    stability_score_thresh=args.stability_score_thresh,
                    box_nms_thresh=args.box_nms_thresh,
                    crop_n_layers=args.crop_n_layers,
                    min_mask_region_area=args.min_mask_region_area,
                )
            process_image(path, out_dir, predictor, amg, cli_prompt, args.multimask)
            done += 1
        except (OSError, ValueError, json.JSONDecodeError) as e:
            # OSError covers PIL's UnidentifiedImageError and truncated files; ValueError bad prompt files.
            tqdm.write(f"failed: {path.name}: {type(e).__name__}: {e}")
            failed.append((path.name, f"{type(e).__name__}: {e}"))
    print(f"{done} of {len(images)} images segmented -> {out_dir}")
    if failed:
        print(f"{len(failed)} failed: {', '.join(name for name, _ in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
