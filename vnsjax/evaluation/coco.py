"""Zero-shot COCO instance segmentation with box prompts, overall and on the VNS-score salient / non-salient splits.

The protocol (docs/evaluation.md, "COCO"):
- prompts: every non-crowd ground-truth box of an image (default), or a detector's boxes in the COCO results
  format above a score threshold; crowd regions are never prompted;
- one mask per box (multimask off), through SAM's own preprocessing (longest side resized to the model's input
  size, padded) and postprocessing (low-res logits -> padded input size -> crop -> original size, threshold 0);
  the mask score is the model's predicted IoU for ground-truth boxes and the detector's score for detections;
- masks are scored with pycocotools' COCOeval (iouType "segm"): AP, AP50, AP75, AP small / medium / large;
  crowd annotations and "ignore" flags are passed to pycocotools unchanged, so it treats them as it always does;
- with ground-truth boxes, also the mean mask IoU and boundary IoU per object (the paper's COCO metrics);
- every non-crowd object gets its VNS-score from (image, object mask); score >= threshold (0.7, the paper's) puts
  it in COCO-NS (non-salient), a smaller score in COCO-S; a NaN score (e.g. no boundary ring) in neither.
  COCO-S / COCO-NS AP: with ground-truth boxes, COCOeval on the annotations restricted to the split's objects
  (crowd regions kept) and the masks prompted by them; with detector boxes, which are not tied to objects, COCOeval
  with the other split's objects ignored the way COCO ignores objects outside an area range.

Images stream through in batches: read and scored by worker threads, encoded several per jitted call, all boxes of
an image decoded in one call, and released; only run-length-encoded masks and per-object numbers are kept.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import jax
import numpy as np
from tqdm import tqdm

from data_pipeline.transforms import resize_bilinear
from vnsjax.evaluation.metrics import boundary_iou, iou
from vnsjax.evaluation.runner import _prefetch
from vnsjax.evaluation.vns_score import vns_score
from vnsjax.modeling.sam import Sam
from vnsjax.predictors.sam_predictor import SamPredictor
from vnsjax.utils.outputs import check_out_dir  # noqa: F401  (re-exported: the COCO command's check)

VNS_THRESHOLD = 0.7  # the paper's COCO-S / COCO-NS threshold (Sec. V-D)
GROUPS = ("all", "S", "NS")
GROUP_LABELS = {"all": "COCO-all", "S": "COCO-S", "NS": "COCO-NS"}
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
SPLIT_FIELDS = ("image_id", "ann_id", "score", "split")

# Reading an image can fail in these ways; anything else is a bug and should stop the run.
_LOAD_ERRORS = (OSError, ValueError, cv2.error)


class CocoInputError(ValueError):
    """A user-supplied file (annotations, detections, split, images) is not what the evaluation expects."""


def _coco_api():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise CocoInputError("the COCO evaluation needs pycocotools: pip install 'vnsjax[coco]'") from e
    return COCO, COCOeval, mask_utils


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress and tables


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CocoInputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CocoInputError(f"{what} {path} is not a readable JSON file: {e}") from None


def load_annotations(path: str | Path):
    """A pycocotools COCO object for an instances file, checked for the fields the evaluation uses."""
    COCO, _, _ = _coco_api()
    data = _read_json(path, "annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise CocoInputError(f"annotation file {path}: expected a COCO instances file with 'images' and 'annotations'")
    for key, fields in (
        ("images", ("id", "file_name", "height", "width")),
        ("annotations", ("id", "image_id", "category_id", "bbox", "segmentation")),
    ):
        for entry in data[key]:
            missing = [f for f in fields if f not in entry]
            if missing:
                raise CocoInputError(f"annotation file {path}: an entry of '{key}' lacks {missing}: {str(entry)[:120]}")
    data.setdefault("categories", [])
    coco = COCO()
    coco.dataset = data
    with _quiet():
        coco.createIndex()
    return coco


@dataclasses.dataclass(frozen=True)
class ImagePrompts:
    """The boxes of one image: xyxy in original pixels, their category, source object (-1: detection), score."""

    boxes: np.ndarray  # (K, 4) float64
    category_ids: np.ndarray  # (K,) int
    ann_ids: np.ndarray  # (K,) int, -1 for detector boxes
    scores: np.ndarray | None  # (K,) detector scores; None: use the model's predicted IoU

    def __len__(self) -> int:
        return len(self.boxes)


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def ground_truth_prompts(coco) -> dict[int, ImagePrompts]:
    """Every non-crowd object's box, per image (images without one get an empty set)."""
    out = {}
    for image_id in coco.getImgIds():
        anns = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        out[image_id] = ImagePrompts(
            np.array([_xyxy(a["bbox"]) for a in anns], np.float64).reshape(-1, 4),
            np.array([a["category_id"] for a in anns], np.int64),
            np.array([a["id"] for a in anns], np.int64),
            None,
        )
    return out


def detection_prompts(path: str | Path, coco, score_threshold: float = 0.0) -> dict[int, ImagePrompts]:
    """A detector's boxes (COCO results format: image_id, category_id, bbox xywh, score) with score >= threshold."""
    data = _read_json(path, "detection file")
    if not isinstance(data, list):
        raise CocoInputError(f"detection file {path}: expected a JSON list of COCO results, got {type(data).__name__}")
    known = set(coco.getImgIds())
    per_image: dict[int, list[dict]] = {i: [] for i in known}
    unknown = set()
    for det in data:
        if not isinstance(det, dict) or any(k not in det for k in ("image_id", "category_id", "bbox", "score")):
            raise CocoInputError(
                f"detection file {path}: every entry needs image_id, category_id, bbox, score; got {str(det)[:120]}"
            )
        if len(det["bbox"]) != 4:
            raise CocoInputError(f"detection file {path}: bbox must be [x, y, w, h], got {det['bbox']}")
        if det["image_id"] not in known:
            unknown.add(det["image_id"])
        elif float(det["score"]) >= score_threshold:
            per_image[det["image_id"]].append(det)
    if unknown:
        raise CocoInputError(
            f"detection file {path}: {len(unknown)} image id(s) not in the annotation file, e.g. {sorted(unknown)[:5]}"
        )
    return {
        i: ImagePrompts(
            np.array([_xyxy(d["bbox"]) for d in dets], np.float64).reshape(-1, 4),
            np.array([d["category_id"] for d in dets], np.int64),
            np.full(len(dets), -1, np.int64),
            np.array([float(d["score"]) for d in dets], np.float64),
        )
        for i, dets in per_image.items()
    }


# ------------------------------------------------------------------------------------------------ VNS-score split


def split_of(score: float, threshold: float = VNS_THRESHOLD) -> str:
    """'NS' (non-salient) at score >= threshold, 'S' below, 'invalid' for NaN."""
    if math.isnan(score):
        return "invalid"
    return "NS" if score >= threshold else "S"


def object_split_rows(coco, image_id: int, image_bgr: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """VNS-score and split of every non-crowd object of one image (the image as read by cv2, i.e. BGR)."""
    rows = []
    for ann in coco.imgToAnns[image_id]:
        if ann.get("iscrowd", 0):
            continue
        score = vns_score(image_bgr, coco.annToMask(ann).astype(bool), channel_order="bgr")
        rows.append({"image_id": image_id, "ann_id": ann["id"], "score": score, "split": split_of(score, threshold)})
    return rows


def write_split(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """CSV with image_id, ann_id, score (repr precision, 'nan' for NaN), split."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SPLIT_FIELDS)
        writer.writeheader()
        writer.writerows({**r, "score": repr(float(r["score"]))} for r in sorted(rows, key=lambda r: r["ann_id"]))
    return path


def read_split(path: str | Path, coco, image_ids: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
    """A split written by `write_split`, checked against the annotations -> {ann_id: row}.

    Every non-crowd object of `image_ids` (default: all images) needs a row; rows of other images are kept.
    """
    try:
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(SPLIT_FIELDS) <= set(reader.fieldnames):
                raise CocoInputError(f"split file {path}: expected the columns {', '.join(SPLIT_FIELDS)}")
            rows = {}
            for r in reader:
                row = {"image_id": int(r["image_id"]), "ann_id": int(r["ann_id"]), "score": float(r["score"])}
                if r["split"] not in ("S", "NS", "invalid"):
                    raise CocoInputError(f"split file {path}: split must be S, NS or invalid, got {r['split']!r}")
                rows[row["ann_id"]] = row | {"split": r["split"]}
    except FileNotFoundError:
        raise CocoInputError(f"split file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, KeyError, ValueError) as e:
        if isinstance(e, CocoInputError):
            raise
        raise CocoInputError(f"split file {path} is not a readable split CSV: {e}") from None
    objects = {a["id"]: a["image_id"] for a in coco.dataset["annotations"] if not a.get("iscrowd", 0)}
    wanted = set(coco.getImgIds() if image_ids is None else image_ids)
    expected = {a for a, i in objects.items() if i in wanted}
    if missing := expected - rows.keys():
        raise CocoInputError(
            f"split file {path} has no row for {len(missing)} non-crowd object(s) of the annotation file, "
            f"e.g. ann_id {sorted(missing)[:5]} (was it written for another annotation file?)"
        )
    if extra := rows.keys() - objects.keys():
        raise CocoInputError(
            f"split file {path} names {len(extra)} ann_id(s) that are not non-crowd objects here, "
            f"e.g. {sorted(extra)[:5]}"
        )
    return rows


# ------------------------------------------------------------------------------------------------ model call


def postprocess_logits(
    low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int], img_size: int
) -> np.ndarray:
    """(K, h, w) low-res logits -> (K, H, W) as `Sam.postprocess_masks` (to S x S, crop, to the original size).

    On the host (torch-semantics bilinear) so that COCO's many image sizes do not each compile a program; a few
    masks per resize call, as channels, to bound the S x S intermediate.
    """
    out = np.empty((len(low_res), *original_size), np.float32)
    for i in range(0, len(low_res), 16):
        x = np.moveaxis(np.asarray(low_res[i : i + 16], np.float32), 0, -1)
        x = resize_bilinear(x, (img_size, img_size)).reshape(img_size, img_size, -1)
        x = x[: input_size[0], : input_size[1]]
        x = resize_bilinear(x, original_size).reshape(*original_size, -1)
        out[i : i + 16] = np.moveaxis(x, -1, 0)
    return out


class Segmenter(Protocol):
    """What `run_coco` calls: up to `batch_size` RGB images with (K, 4) xyxy boxes each -> (logits, scores) each."""

    mask_threshold: float

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...


class BoxSegmenter:
    """A `Sam` of any variant: a batch of RGB images with their boxes -> per image (logits (K, H, W), scores (K,)).

    Logits are at the original image size (binarise at `mask_threshold`); scores are the predicted IoUs. Through
    `SamPredictor`: the images encoded in one call (`set_images`), every image's boxes decoded in one call
    (`predict_low_res_images`); one encoder program, one decoder program per box-count bucket (powers of two).
    """

    def __init__(
        self,
        model: Sam,
        *,
        batch_size: int = 1,
        hq_token_only: bool = False,
        results_fusion: bool = False,
        precision: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Inference view (NSFM BatchNorm with its running statistics); the caller's model is left as is.
        self.predictor = SamPredictor(
            model, hq_token_only=hq_token_only, results_fusion=results_fusion, precision=precision
        )
        self.batch_size = batch_size
        self.img_size = model.img_size
        self.mask_threshold = model.mask_threshold

    def __call__(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        if not 0 < len(images) <= self.batch_size or len(boxes) != len(images):
            raise ValueError(f"expected 1..{self.batch_size} images with one box array each")
        if any(len(b) == 0 for b in boxes):
            raise ValueError("every image needs at least one box")
        p = self.predictor
        # The last, short batch is padded with copies of its last image (results dropped): one encoder program.
        pad = self.batch_size - len(images)
        p.set_images([*images, *[images[-1]] * pad])
        prompts = [p.transform_prompts(boxes=b, image_index=i) for i, b in enumerate([*boxes, *[boxes[-1]] * pad])]
        low_res, scores = jax.device_get(p.predict_low_res_images(prompts, multimask_output=False))
        out = []
        for i, (image, b) in enumerate(zip(images, boxes, strict=True)):
            logits = postprocess_logits(low_res[i, : len(b), 0], p.input_sizes[i], image.shape[:2], self.img_size)
            out.append((logits, np.asarray(scores[i, : len(b), 0], np.float64)))
        p.reset_image()
        return out


# ------------------------------------------------------------------------------------------------ streaming run


@dataclasses.dataclass
class CocoRun:
    """What a run keeps: COCO results (RLE masks) per model, per-object rows, the split, failed images."""

    results: dict[str, list[dict[str, Any]]]
    objects: list[dict[str, Any]]  # ground-truth-box prompts only: model, image_id, ann_id, iou, biou
    split: dict[int, dict[str, Any]]  # ann_id -> image_id, ann_id, score, split
    image_ids: list[int]  # images evaluated (read and, where they had boxes, segmented)
    failed: list[dict[str, Any]]  # image_id, file_name, error
    prompts: str  # "ground_truth" | "detections"


@dataclasses.dataclass
class _Loaded:
    image_id: int
    file_name: str
    image: np.ndarray | None  # RGB
    split_rows: list[dict[str, Any]]
    error: str = ""


def _load(coco, image_id: int, images_dir: Path, threshold: float | None) -> _Loaded:
    info = coco.imgs[image_id]
    try:
        path = images_dir / info["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {path} as an image")
        if bgr.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{path} is {bgr.shape[0]}x{bgr.shape[1]}, the annotation file says {info['height']}x{info['width']}"
            )
        rows = [] if threshold is None else object_split_rows(coco, image_id, bgr, threshold)
    except _LOAD_ERRORS as e:
        return _Loaded(image_id, info["file_name"], None, [], f"{type(e).__name__}: {e}")
    return _Loaded(image_id, info["file_name"], np.ascontiguousarray(bgr[..., ::-1]), rows)


def _batches(items: Iterator[_Loaded], size: int, on_skip: Callable[[_Loaded], None]) -> Iterator[list[_Loaded]]:
    batch: list[_Loaded] = []
    for item in items:
        if not on_skip(item):
            batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_coco(
    models: Mapping[str, Sam | Segmenter],
    coco,
    images_dir: str | Path,
    *,
    detections: Mapping[int, ImagePrompts] | None = None,
    split: Mapping[int, Mapping[str, Any]] | None = None,
    threshold: float = VNS_THRESHOLD,
    batch_size: int = 1,
    image_ids: Sequence[int] | None = None,
    hq_token_only: bool = False,
    results_fusion: bool = False,
    workers: int = 2,
    progress: bool = True,
    precision: str | None = None,
) -> CocoRun:
    """Streams the images once through every model; see the module docstring for the protocol.

    `models` values are `Sam` models (wrapped in `BoxSegmenter`, run at `precision`; None: the model's own) or
    ready `Segmenter`s taking `batch_size` images.
    `detections` (from `detection_prompts`) replaces the ground-truth boxes; `split` (from `read_split`) replaces the
    VNS-score computation. `image_ids` restricts the run (default: every image of the annotation file).
    """
    _, _, mask_utils = _coco_api()
    segmenters = {
        name: BoxSegmenter(
            m, batch_size=batch_size, hq_token_only=hq_token_only, results_fusion=results_fusion, precision=precision
        )
        if isinstance(m, Sam)
        else m
        for name, m in models.items()
    }
    if not segmenters:
        raise ValueError("no models to evaluate")
    prompts = detections if detections is not None else ground_truth_prompts(coco)
    ids = list(coco.getImgIds() if image_ids is None else image_ids)
    run = CocoRun(
        results={name: [] for name in segmenters},
        objects=[],
        split=dict(split) if split is not None else {},
        image_ids=[],
        failed=[],
        prompts="detections" if detections is not None else "ground_truth",
    )
    jobs = [(coco, i, Path(images_dir), None if split is not None else threshold) for i in ids]

    with tqdm(total=len(ids), unit="img", desc="coco", disable=not progress, file=sys.stderr) as bar:

        def skip(item: _Loaded) -> bool:
            """Records the image; True when there is nothing to segment in it."""
            if item.error:
                run.failed.append({"image_id": item.image_id, "file_name": item.file_name, "error": item.error})
                bar.update(1)
                return True
            run.image_ids.append(item.image_id)
            run.split.update((r["ann_id"], r) for r in item.split_rows)
            if len(prompts[item.image_id]) == 0:
                bar.update(1)
                return True
            return False

        for batch in _batches(_prefetch(_load, jobs, workers), batch_size, skip):
            for name, segmenter in segmenters.items():
                outputs = segmenter([b.image for b in batch], [prompts[b.image_id].boxes for b in batch])
                for item, (logits, scores) in zip(batch, outputs, strict=True):
                    masks = logits > segmenter.mask_threshold
                    _record(run, name, coco, item, prompts[item.image_id], masks, scores, mask_utils)
            bar.update(len(batch))
    return run


def _record(run: CocoRun, model: str, coco, item: _Loaded, p: ImagePrompts, masks, scores, mask_utils) -> None:
    """Keeps the masks as RLE (COCO results format) and, for ground-truth boxes, each object's IoU / BIoU."""
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))
    for k, rle in enumerate(rles):
        run.results[model].append(
            {
                "image_id": item.image_id,
                "category_id": int(p.category_ids[k]),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "score": float(p.scores[k] if p.scores is not None else scores[k]),
                **({"prompt_ann_id": int(p.ann_ids[k])} if p.ann_ids[k] >= 0 else {}),
            }
        )
        if p.ann_ids[k] >= 0:
            gt = coco.annToMask(coco.anns[int(p.ann_ids[k])]).astype(bool)
            run.objects.append(
                {
                    "model": model,
                    "image_id": item.image_id,
                    "ann_id": int(p.ann_ids[k]),
                    "iou": iou(masks[k], gt),
                    "biou": boundary_iou(masks[k], gt),
                }
            )


# ------------------------------------------------------------------------------------------------ scoring


def coco_ap(coco, results: Sequence[Mapping[str, Any]], image_ids: Sequence[int], ignore_ann_ids=frozenset()):
    """COCOeval (segm) stats[0:6] as {AP, AP50, AP75, APs, APm, APl} over `image_ids` (-1 where undefined).

    `ignore_ann_ids`: ground-truth objects that are ignored as COCO ignores objects outside an area range (a mask
    matched to one is neither a true nor a false positive, the object is not a miss).
    """
    _, COCOeval, _ = _coco_api()
    ignore = frozenset(ignore_ann_ids)

    class _Eval(COCOeval):
        def _prepare(self):
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = g["ignore"] or g["id"] in ignore

    with _quiet():
        # loadRes adds ids, areas and boxes to the result dicts it is given: hand it copies.
        dt = coco.loadRes([dict(r) for r in results]) if results else _empty_results(coco)
        ev = _Eval(coco, dt, iouType="segm")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(AP_METRICS, (float(v) for v in ev.stats[:6]), strict=True))


def _empty_results(coco):
    COCO, _, _ = _coco_api()
    dt = COCO()
    dt.dataset = {
        "images": list(coco.dataset["images"]),
        "categories": copy.deepcopy(coco.dataset["categories"]),
        "annotations": [],
    }
    dt.createIndex()
    return dt


def restrict(coco, keep_ann_ids: set[int]):
    """The annotation file with only the given non-crowd objects (crowd regions kept): a split as its own dataset."""
    COCO, _, _ = _coco_api()
    sub = COCO()
    sub.dataset = dict(coco.dataset)
    sub.dataset["annotations"] = [
        a for a in coco.dataset["annotations"] if a.get("iscrowd", 0) or a["id"] in keep_ann_ids
    ]
    with _quiet():
        sub.createIndex()
    return sub


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


def summarize(run: CocoRun, coco) -> dict[str, Any]:
    """Per model and group (all / S / NS): the six AP numbers, and with ground-truth boxes the mean IoU / BIoU."""
    evaluated = set(run.image_ids)
    members = {
        g: {a for a, r in run.split.items() if r["split"] == g and r["image_id"] in evaluated}
        for g in ("S", "NS", "invalid")
    }
    counts = {"all": sum(len(v) for v in members.values()), **{g: len(v) for g, v in members.items()}}
    restricted = {g: restrict(coco, members[g]) for g in ("S", "NS")} if run.prompts == "ground_truth" else {}
    models = {}
    for name, results in run.results.items():
        entry = {"all": coco_ap(coco, results, run.image_ids)}
        for g, other in (("S", "NS"), ("NS", "S")):
            if run.prompts == "ground_truth":
                kept = [r for r in results if r["prompt_ann_id"] in members[g]]
                entry[g] = coco_ap(restricted[g], kept, run.image_ids)
            else:
                entry[g] = coco_ap(coco, results, run.image_ids, members[other] | members["invalid"])
        if run.prompts == "ground_truth":
            rows = [r for r in run.objects if r["model"] == name]
            for g in GROUPS:
                sel = [r for r in rows if g == "all" or run.split[r["ann_id"]]["split"] == g]
                entry[g] |= {"iou": _mean([r["iou"] for r in sel]), "biou": _mean([r["biou"] for r in sel])}
                entry[g]["biou_nan"] = sum(math.isnan(r["biou"]) for r in sel)
        models[name] = entry
    return {
        "prompts": run.prompts,
        "images": {"evaluated": len(run.image_ids), "failed": len(run.failed)},
        "objects": counts,
        "models": models,
        "failed": run.failed,
    }


def _fmt(value: float | None, scale: float, decimals: int) -> str:
    if value is None or math.isnan(value) or value < 0:  # COCOeval's -1: no object in that range
        return "–"
    return f"{value * scale:.{decimals}f}"


def format_markdown(summary: Mapping[str, Any], *, threshold: float | None = VNS_THRESHOLD) -> str:
    """The paper's layout (a row per model; COCO-all, COCO-S, COCO-NS column groups): IoU / BIoU, then AP."""
    tables = []
    models = summary["models"]
    if summary["prompts"] == "ground_truth":
        header = ["Model"] + [f"{GROUP_LABELS[g]} {m}" if m == "IoU" else m for g in GROUPS for m in ("IoU", "BIoU")]
        rows = [[name] + [_fmt(e[g][m], 1, 3) for g in GROUPS for m in ("iou", "biou")] for name, e in models.items()]
        tables.append((header, rows))
    header = ["Model"] + [f"{GROUP_LABELS[g]} {m}" if m == "AP" else m for g in GROUPS for m in AP_METRICS]
    rows = [[name] + [_fmt(e[g][m], 100, 1) for g in GROUPS for m in AP_METRICS] for name, e in models.items()]
    tables.append((header, rows))

    lines = []
    for header, rows in tables:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    n = summary["objects"]
    prompt = "ground-truth boxes" if summary["prompts"] == "ground_truth" else "detector boxes"
    rule = f"VNS-score >= {threshold}" if threshold is not None else "the given split file"
    notes = [
        f"Box prompts: {prompt}. Mask AP from pycocotools COCOeval (segm), x100; IoU / BIoU: mean over objects.",
        f"Objects: {n['all']} (COCO-NS, {rule}: {n['NS']}; COCO-S: {n['S']}; no valid VNS-score: {n['invalid']}).",
        f"Images evaluated: {summary['images']['evaluated']}; failed (excluded): {summary['images']['failed']}.",
    ]
    return "\n".join(lines) + "\n".join(f"{i + 1}. {t}" for i, t in enumerate(notes)) + "\n"


# ------------------------------------------------------------------------------------------------ output folder


def output_names(model_names: Sequence[str]) -> dict[str, str]:
    """The files a run writes into --out: report, summary, split, per-object CSV, one results file per model."""
    names = {
        "markdown": "coco_results.md",
        "json": "coco_results.json",
        "split": "vns_split.csv",
        "objects": "coco_per_object.csv",
    }
    return names | {f"segm:{m}": f"segm_{m.replace('/', '_')}.json" for m in model_names}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write_outputs(
    run: CocoRun, summary: Mapping[str, Any], out_dir: str | Path, *, threshold: float | None
) -> dict[str, Path]:
    """Writes the report, the JSON summary, the split CSV, the per-object CSV and every model's COCO results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(list(run.results))
    paths = {k: out / v for k, v in names.items()}
    paths["markdown"].write_text(format_markdown(summary, threshold=threshold))
    paths["json"].write_text(json.dumps(_json_safe({**summary, "vns_threshold": threshold}), indent=2) + "\n")
    write_split(list(run.split.values()), paths["split"])
    if run.objects:
        with paths["objects"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["model", "image_id", "ann_id", "split", "score", "iou", "biou"])
            writer.writeheader()
            for r in run.objects:
                s = run.split.get(r["ann_id"], {})
                writer.writerow({**r, "split": s.get("split", ""), "score": s.get("score", "")})
    else:
        del paths["objects"]
    for name, results in run.results.items():
        paths[f"segm:{name}"].write_text(json.dumps(results))
    return paths
