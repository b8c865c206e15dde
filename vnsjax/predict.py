"""Segment images from the command line with a converted SAM / HQ-SAM / VNS-SAM checkpoint.

    python -m vnsjax.predict --checkpoint DIR --input IMG_OR_DIR [--box x0 y0 x1 y1] [--points x,y,label ...]
                             [--multimask] [--out DIR] [--overwrite]

Prompts, per image, first match wins: --box/--points on the command line (applied to every image); a
prompt file NAME.json beside the image ({"box": [x0, y0, x1, y1], "points": [[x, y, label], ...]}, label
1 foreground or 0 background; nothing else); otherwise automatic mask generation. For an input file FILE
(e.g. a.jpg) it writes OUT/FILE_mask{i}.png (0/255), OUT/FILE_overlay.png (masks tinted over the image, the
prompt drawn: box rectangle, foreground points green, background points red) and OUT/FILE.json (mode, prompt,
scores, mask files), and lists what it wrote in OUT/vnsjax-predict.json. Images are read by
data_pipeline.read_image: fully decoded, 16-bit grey scaled by 1/257, float grey in [0, 1] by 255.

OUT may not be the input folder or inside it. A non-empty OUT that this command did not write is refused
unless --overwrite; even then only files this command wrote are replaced. An image that cannot be used (its
file or its prompt file) is named and skipped; the exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from data_pipeline.images import ImageReadError, read_image
from vnsjax.modeling.precision import add_precision_flag, get_precision
from vnsjax.utils.outputs import OutputError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
PROMPT_COLOUR = (30, 144, 255)  # SAM's demo blue for prompted masks
MANIFEST = "vnsjax-predict.json"
PROMPT_KEYS = ("box", "points")


class InputError(ValueError):
    """One image (or its prompt file) cannot be used; it is skipped and counted."""


# ---- inputs ------------------------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_box(box: Any) -> list[float]:
    """[x0, y0, x1, y1]: four finite numbers with x0 <= x1 and y0 <= y1 (ValueError otherwise)."""
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        raise ValueError(f"expected [x0, y0, x1, y1], four finite numbers, got {json.dumps(box)}")
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"expected x0 <= x1 and y0 <= y1, got {box}")
    return [float(v) for v in box]


def check_points(points: Any) -> list[list[float]]:
    """[[x, y, label], ...]: at least one point, finite coordinates, label 1 (foreground) or 0 (background)."""
    if not isinstance(points, list) or not points:
        raise ValueError(f"expected a non-empty list of [x, y, label], got {json.dumps(points)}")
    out = []
    for i, p in enumerate(points):
        if not isinstance(p, list) or len(p) != 3 or not all(_number(v) for v in p):
            raise ValueError(f"point {i}: expected [x, y, label] of finite numbers, got {json.dumps(p)}")
        if p[2] not in (0, 1):
            raise ValueError(f"point {i}: label must be 1 (foreground) or 0 (background), got {p[2]}")
        out.append([float(p[0]), float(p[1]), int(p[2])])
    return out


def read_prompt_file(image_path: Path) -> dict[str, Any] | None:
    """The prompt in NAME.json beside the image, checked against the schema; None if there is no such file."""
    path = image_path.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON prompt file ({e})") from e
    expected = 'expected {"box": [x0, y0, x1, y1]} and/or {"points": [[x, y, label], ...]}'
    if not isinstance(spec, dict):
        raise InputError(f"{path}: {expected}, got {type(spec).__name__} {json.dumps(spec)[:80]}")
    unknown = sorted(set(spec) - set(PROMPT_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))}; {expected}")
    if not spec:
        raise InputError(f"{path}: no prompt; {expected}")
    prompt: dict[str, Any] = {"box": None, "points": None}
    for key, check in (("box", check_box), ("points", check_points)):
        if key in spec:
            try:
                prompt[key] = check(spec[key])
            except ValueError as e:
                raise InputError(f"{path}: field {key!r}: {e}") from e
    return prompt


def list_images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    return [path]


# ---- outputs -----------------------------------------------------------------------------------


class OutputFolder:
    """The output folder and the list of files this command wrote there (MANIFEST), so that a later run replaces
    its own files and nothing else."""

    def __init__(self, path: Path, owned: set[str]):
        self.path = path
        self.owned = owned

    @classmethod
    def open(cls, path: Path, input_path: Path, *, overwrite: bool) -> OutputFolder:
        """Checks `path` before any work; raises OutputError with the reason."""
        out, inp = path.resolve(), input_path.resolve()
        in_dir = inp if inp.is_dir() else inp.parent
        if out == in_dir or (inp.is_dir() and in_dir in out.parents):
            where = "is the input folder" if out == in_dir else f"is inside the input folder {input_path}"
            raise OutputError(f"--out {path} {where}; outputs never go beside or among the inputs, choose another")
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {path} exists and is not a folder")
        owned: set[str] = set()
        manifest = path / MANIFEST
        if manifest.is_file():
            try:
                owned = set(json.loads(manifest.read_text())["files"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise OutputError(f"{manifest}: not a readable list of this command's outputs ({e})") from e
        elif out.is_dir() and any(out.iterdir()) and not overwrite:
            raise OutputError(
                f"--out {path} is not empty and was not written by vnsjax.predict; choose an empty or new folder, "
                "or pass --overwrite (files of the same names that this command did not write are still kept)"
            )
        folder = cls(path, owned)
        try:
            path.mkdir(parents=True, exist_ok=True)
            folder._save_manifest()
        except OSError as e:
            raise OutputError(f"cannot write to --out {path}: {e.strerror or e}") from e
        return folder

    def _save_manifest(self) -> None:
        tmp = self.path / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"written_by": "vnsjax.predict", "files": sorted(self.owned)}, indent=1) + "\n")
        os.replace(tmp, self.path / MANIFEST)

    def write(self, files: dict[str, bytes]) -> None:
        """Writes one image's outputs; none if any would replace a file this command did not write."""
        foreign = [n for n in files if n not in self.owned and (self.path / n).exists()]
        if foreign:
            raise InputError(f"{self.path / foreign[0]} exists and was not written by vnsjax.predict; it is kept")
        # Listed before writing: a file listed but missing after a crash is harmless, the reverse would be refused.
        self.owned.update(files)
        name = MANIFEST
        try:
            self._save_manifest()
            for name, data in files.items():
                (self.path / name).write_bytes(data)
        except OSError as e:
            raise OutputError(f"cannot write {self.path / name}: {e.strerror or e}") from e


def _png(image: Image.Image | np.ndarray) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# ---- segmentation ------------------------------------------------------------------------------


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


def segment(path: Path, image: np.ndarray, predictor, amg, prompt: dict[str, Any] | None, multimask: bool):
    """One image's outputs {file name: bytes}: masks, overlay and the JSON record (the last one)."""
    name = path.name  # with the extension: a.jpg and a.png get distinct outputs
    files: dict[str, bytes] = {}
    if prompt is not None:
        res = predict_prompted(predictor, image, prompt, multimask)
        order = np.argsort(res["scores"])[::-1]
        for rank, i in enumerate(order):
            files[f"{name}_mask{rank}.png"] = _png(res["masks"][i].astype(np.uint8) * 255)
        vis = overlay(
            image, [res["masks"][order[0]]], [PROMPT_COLOUR], box=prompt.get("box"), points=prompt.get("points")
        )
        record = {"mode": "prompt", "prompt": prompt, "scores": [res["scores"][i] for i in order]}
    else:
        anns = amg.generate(image)
        rng = np.random.default_rng(0)
        for i, ann in enumerate(anns):
            files[f"{name}_mask{i}.png"] = _png(ann["segmentation"].astype(np.uint8) * 255)
        # Largest first so small masks stay visible on top.
        by_area = sorted(range(len(anns)), key=lambda i: -anns[i]["area"])
        colours = [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in anns]
        vis = overlay(image, [anns[i]["segmentation"] for i in by_area], [colours[i] for i in by_area])
        record = {
            "mode": "automatic",
            "scores": [a["predicted_iou"] for a in anns],
            "annotations": [{k: v for k, v in a.items() if k != "segmentation"} for a in anns],
        }
    record.update(
        masks=list(files),
        image=str(path),
        size=list(image.shape[:2]),
        overlay=f"{name}_overlay.png",
        precision=get_precision(predictor.model),
    )
    files[f"{name}_overlay.png"] = _png(vis)
    try:
        files[f"{name}.json"] = (json.dumps(record, indent=2, allow_nan=False) + "\n").encode()
    except ValueError as e:
        raise InputError(f"{path}: the model returned a non-finite score (are its weights damaged?)") from e
    return files


# ---- command line ------------------------------------------------------------------------------


def parse_point(text: str) -> list[float]:
    try:
        x, y, label = (float(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected x,y,label (label 1 foreground, 0 background), got {text!r}") from e
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"point coordinates must be finite numbers, got {text!r}")
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be 1 (foreground) or 0 (background), got {text!r}")
    return [x, y, int(label)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vnsjax.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted model directory (python -m convert_weights)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="box prompt, pixels")
    p.add_argument("--points", type=parse_point, nargs="+", metavar="X,Y,LABEL", help="point prompts")
    p.add_argument("--multimask", action="store_true", help="three masks per prompt (SAM / HQ-SAM)")
    p.add_argument("--out", default="predictions", help="output folder (new, empty, or an earlier output)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder (only our files replaced)")
    p.add_argument("--output", choices=["fused", "sam", "vns"], default=None, help="VNS-SAM: which mask (fused)")
    add_precision_flag(p)
    g = p.add_argument_group("automatic mode (no prompt)")
    g.add_argument("--points-per-side", type=int, default=32)
    g.add_argument("--points-per-batch", type=int, default=64)
    g.add_argument("--pred-iou-thresh", type=float, default=0.88)
    g.add_argument("--stability-score-thresh", type=float, default=0.95)
    g.add_argument("--box-nms-thresh", type=float, default=0.7)
    g.add_argument("--crop-n-layers", type=int, default=0)
    g.add_argument("--min-mask-region-area", type=int, default=0)
    return p


def check_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Values argparse's types cannot rule out; parser.error prints one line and exits with status 2."""
    if args.box is not None:
        try:
            check_box(args.box)
        except ValueError as e:
            p.error(f"--box: {e}")
    for flag in ("points_per_side", "points_per_batch"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for flag in ("crop_n_layers", "min_mask_region_area"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    for flag in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        v = getattr(args, flag)
        if not 0.0 <= v <= 1.0:  # also false for NaN
            p.error(f"--{flag.replace('_', '-')} must be in [0, 1], got {v}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)
    from vnsjax.build_sam import get_decoder_class
    from vnsjax.model_dir import read_meta
    from vnsjax.modeling.vns_decoder import VnsDecoder

    inp = Path(args.input)
    if not inp.exists():
        print(f"error: --input {inp} does not exist", file=sys.stderr)
        return 1
    images = list_images(inp)
    if not images:
        print(f"error: no images ({', '.join(sorted(IMAGE_EXTS))}) in {inp}", file=sys.stderr)
        return 1
    try:
        variant = read_meta(args.checkpoint)["variant"]
        if args.output is not None and not issubclass(get_decoder_class(variant), VnsDecoder):
            raise ValueError(f"--output chooses among VNS-SAM's masks; {args.checkpoint} is a {variant} model")
        out = OutputFolder.open(Path(args.out), inp, overwrite=args.overwrite)
    except (OSError, ValueError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return run(args, images, out)


def run(args: argparse.Namespace, images: list[Path], out: OutputFolder) -> int:
    from tqdm import tqdm

    from vnsjax.model_dir import load_model
    from vnsjax.predictors.automatic_mask_generator import SamAutomaticMaskGenerator
    from vnsjax.predictors.sam_predictor import SamPredictor
    from vnsjax.predictors.vns_predictor import VnsPredictor

    try:
        model = load_model(args.checkpoint, precision=args.precision)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    predictor = SamPredictor(model) if args.output is None else VnsPredictor(model, output=args.output)
    amg = None  # built on the first image without a prompt: its jitted post-processing is only needed then
    cli_prompt = None
    if args.box is not None or args.points:
        cli_prompt = {"box": args.box, "points": args.points}

    failed: list[str] = []
    done = 0
    for path in tqdm(images, desc=f"{model.variant} {model.config.name}", unit="img"):
        try:
            prompt = cli_prompt or read_prompt_file(path)
            image = read_image(path)
            if amg is None and prompt is None:
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
            out.write(segment(path, image, predictor, amg, prompt, args.multimask))
            done += 1
        except (InputError, ImageReadError) as e:
            tqdm.write(f"failed: {e}", file=sys.stderr)
            failed.append(path.name)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            failed.extend(p.name for p in images[done + len(failed) :])
            break
    print(f"{done} of {len(images)} images segmented; {len(failed)} failed -> {out.path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
