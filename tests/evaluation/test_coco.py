"""COCO box-prompt evaluation: AP against pycocotools run directly, the VNS-score split, streaming, --out checks."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_pipeline import coco_synthetic
from vnsjax import evaluate as evaluate_cli
from vnsjax.evaluation import coco as C
from vnsjax.evaluation import metrics as M
from vnsjax.evaluation.vns_score import vns_score
from vnsjax.utils import outputs
from vnsjax.utils.outputs import OutputError

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    coco_synthetic.generate(root, NUM_IMAGES, seed=3)
    return root


@pytest.fixture(scope="module")
def gt(coco_set: Path):
    return C.load_annotations(coco_set / "annotations.json")


class BoxFill:
    """A stand-in model: the box itself as the mask, a score drawn from the box (deterministic, varied).

    Box masks overlap the objects partially, so AP is neither 0 nor 1 and its value depends on every step.
    """

    mask_threshold = 0.0

    def __call__(self, images, boxes):
        out = []
        for image, b in zip(images, boxes, strict=True):
            logits = np.full((len(b), *image.shape[:2]), -1.0, np.float32)
            for k, (x0, y0, x1, y1) in enumerate(np.round(b).astype(int)):
                logits[k, y0:y1, x0:x1] = 1.0
            scores = np.random.default_rng(np.round(b).astype(int).ravel().tolist()).random(len(b))
            out.append((logits, scores))
        return out


def direct_ap(annotations: dict | str | Path, results: list[dict], image_ids) -> list[float]:
    """pycocotools as its README runs it: COCO(file), loadRes, COCOeval segm, stats[0:6]."""
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(annotations, dict):
            coco = COCO()
            coco.dataset = annotations
            coco.createIndex()
        else:
            coco = COCO(str(annotations))
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(results))), "segm")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


def _ap_list(entry: dict) -> list[float]:
    return [entry[m] for m in C.AP_METRICS]


@pytest.fixture(scope="module")
def boxfill_run(coco_set: Path, gt, tmp_path_factory: pytest.TempPathFactory):
    run = C.run_coco({"boxfill": BoxFill()}, gt, coco_set / "images", batch_size=2, progress=False)
    summary = C.summarize(run, gt)
    out = tmp_path_factory.mktemp("out") / "results"
    paths = C.write_outputs(run, summary, out, threshold=C.VNS_THRESHOLD)
    return run, summary, paths


def test_generated_set_is_valid_coco(coco_set: Path, gt):
    data = json.loads((coco_set / "annotations.json").read_text())
    kinds = set()
    for ann in data["annotations"]:
        seg = ann["segmentation"]
        kinds.add("polygon" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], str) else "raw_rle")
        mask = gt.annToMask(ann)
        assert mask.sum() == ann["area"] > 0
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))))
    assert kinds == {"polygon", "rle", "raw_rle"}
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowds) >= 1 and all(isinstance(a["segmentation"]["counts"], list) for a in crowds)
    for info in data["images"]:
        image = cv2.imread(str(coco_set / "images" / info["file_name"]))
        assert image.shape[:2] == (info["height"], info["width"])
    with pytest.raises(FileExistsError):
        coco_synthetic.generate(coco_set, 1)  # never writes over an existing set


def test_ap_equals_pycocotools_directly(coco_set: Path, boxfill_run):
    run, summary, paths = boxfill_run
    results = json.loads(paths["segm:boxfill"].read_text())
    assert len(results) == sum(
        1 for a in json.loads((coco_set / "annotations.json").read_text())["annotations"] if not a["iscrowd"]
    )
    expected = direct_ap(coco_set / "annotations.json", results, run.image_ids)
    assert 0 < expected[0] < 1  # a non-trivial AP, so equality means something
    assert _ap_list(summary["models"]["boxfill"]["all"]) == expected
    assert _ap_list(json.loads(paths["json"].read_text())["models"]["boxfill"]["all"]) == expected


def test_split_equals_direct_vns_score(coco_set: Path, gt, boxfill_run):
    _, summary, paths = boxfill_run
    with paths["split"].open() as f:
        rows = {int(r["ann_id"]): r for r in csv.DictReader(f)}
    expected_ids = {a["id"] for a in gt.dataset["annotations"] if not a["iscrowd"]}
    assert set(rows) == expected_ids  # every non-crowd object, no crowd region
    for ann_id, row in rows.items():
        ann = gt.anns[ann_id]
        image = cv2.imread(str(coco_set / "images" / gt.imgs[ann["image_id"]]["file_name"]))
        score = vns_score(image, gt.annToMask(ann).astype(bool), channel_order="bgr")
        assert int(row["image_id"]) == ann["image_id"]
        assert float(row["score"]) == score or (math.isnan(score) and row["score"] == "nan")
        assert row["split"] == ("invalid" if math.isnan(score) else "NS" if score >= 0.7 else "S")
    counts = summary["objects"]
    assert counts["S"] > 0 and counts["NS"] > 0  # the generated set splits both ways
    assert counts["S"] + counts["NS"] + counts["invalid"] == counts["all"] == len(rows)


def test_split_ap_equals_pycocotools_on_the_split(coco_set: Path, boxfill_run):
    """COCO-S / COCO-NS with ground-truth boxes: the annotation file restricted to the split's objects (crowd
    regions kept) and the masks their boxes prompted, evaluated by plain pycocotools."""
    run, summary, paths = boxfill_run
    data = json.loads((coco_set / "annotations.json").read_text())
    results = json.loads(paths["segm:boxfill"].read_text())
    with paths["split"].open() as f:
        split = {int(r["ann_id"]): r["split"] for r in csv.DictReader(f)}
    for group in ("S", "NS"):
        anns = [a for a in data["annotations"] if a["iscrowd"] or split[a["id"]] == group]
        kept = [r for r in results if split[r["prompt_ann_id"]] == group]
        expected = direct_ap(data | {"annotations": anns}, kept, run.image_ids)
        assert _ap_list(summary["models"]["boxfill"][group]) == expected

    # IoU / BIoU per object, recomputed from the written masks.
    per_object = {(r["prompt_ann_id"]): mask_utils.decode(r["segmentation"]).astype(bool) for r in results}
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    for group in ("S", "NS", "all"):
        ids = [i for i, s in split.items() if group == "all" or s == group]
        ious = [M.iou(per_object[i], gt.annToMask(gt.anns[i]).astype(bool)) for i in ids]
        assert summary["models"]["boxfill"][group]["iou"] == pytest.approx(np.mean(ious), rel=1e-12)


def test_split_file_is_reused(coco_set: Path, gt, boxfill_run, monkeypatch: pytest.MonkeyPatch):
    run, summary, paths = boxfill_run
    split = C.read_split(paths["split"], gt)

    def no_scoring(*args, **kwargs):
        raise AssertionError("VNS-scores were computed although a split was given")

    monkeypatch.setattr(C, "object_split_rows", no_scoring)
    again = C.run_coco({"boxfill": BoxFill()}, gt, coco_set / "images", split=split, batch_size=3, progress=False)
    assert again.results == run.results
    reused = C.summarize(again, gt)
    assert reused["models"] == summary["models"]


def test_detector_boxes(coco_set: Path, gt, tmp_path: Path):
    rng = np.random.default_rng(0)
    dets = []
    for ann in gt.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 2, 4)
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "score": float(rng.random()),
                "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
            }
        )
        dets.append({"image_id": ann["image_id"], "category_id": 1, "score": 0.05, "bbox": [0, 0, 20, 20]})
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    prompts = C.detection_prompts(path, gt, score_threshold=0.1)
    assert sum(len(p) for p in prompts.values()) == sum(d["score"] >= 0.1 for d in dets)

    run = C.run_coco({"boxfill": BoxFill()}, gt, coco_set / "images", detections=prompts, progress=False)
    summary = C.summarize(run, gt)
    assert summary["prompts"] == "detections" and not run.objects  # no per-object IoU without object identity
    # The mask keeps the detector's score, and pycocotools directly gives the same AP.
    kept = sorted(float(d["score"]) for d in dets if d["score"] >= 0.1)
    assert sorted(r["score"] for r in run.results["boxfill"]) == kept
    assert _ap_list(summary["models"]["boxfill"]["all"]) == direct_ap(
        coco_set / "annotations.json", run.results["boxfill"], run.image_ids
    )
    for group in ("S", "NS"):
        assert -1 < summary["models"]["boxfill"][group]["AP"] <= 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**dets[0], "image_id": 999999}]))
    with pytest.raises(C.CocoInputError, match="999999"):
        C.detection_prompts(bad, gt)


def test_corrupt_image_is_named_counted_and_excluded(coco_set: Path, tmp_path: Path):
    root = tmp_path / "set"
    shutil.copytree(coco_set, root)
    gt = C.load_annotations(root / "annotations.json")
    bad = gt.imgs[2]["file_name"]
    (root / "images" / bad).write_bytes(b"not an image")
    run = C.run_coco({"boxfill": BoxFill()}, gt, root / "images", batch_size=2, progress=False)
    assert [f["file_name"] for f in run.failed] == [bad] and "cannot read" in run.failed[0]["error"]
    assert 2 not in run.image_ids and len(run.image_ids) == NUM_IMAGES - 1
    summary = C.summarize(run, gt)
    assert summary["images"] == {"evaluated": NUM_IMAGES - 1, "failed": 1}
    assert _ap_list(summary["models"]["boxfill"]["all"]) == direct_ap(
        root / "annotations.json", run.results["boxfill"], run.image_ids
    )


def test_out_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    names = list(C.output_names(["m"]).values())
    file_out = tmp_path / "file"
    file_out.write_text("mine")
    with pytest.raises(OutputError, match="not a directory"):
        C.check_out_dir(file_out, names)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        C.check_out_dir(foreign, names)
    own = tmp_path / "own"
    own.mkdir()
    (own / "coco_results.md").write_text("earlier run")
    assert C.check_out_dir(own, names) == own  # an earlier run's outputs may be replaced
    assert C.check_out_dir(tmp_path / "new" / "deeper", names) == tmp_path / "new" / "deeper"
    monkeypatch.setattr(outputs.os, "access", lambda *a: False)  # running as root, chmod cannot make a folder read-only
    with pytest.raises(OutputError, match="not writable"):
        C.check_out_dir(tmp_path / "new", names)
    monkeypatch.undo()

    # The CLI refuses before reading anything else (the checkpoint does not even exist).
    rc = evaluate_cli.main(
        ["--coco", "x.json", "--images", str(tmp_path), "--checkpoint", "nope", "--out", str(foreign)]
    )
    assert rc == 1
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_bad_inputs_are_named(coco_set: Path, gt, tmp_path: Path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(C.CocoInputError, match="broken.json"):
        C.load_annotations(broken)
    with pytest.raises(C.CocoInputError, match="does not exist"):
        C.load_annotations(tmp_path / "missing.json")
    split = tmp_path / "split.csv"
    split.write_text("image_id,ann_id,score,split\n1,1,0.5,S\n")
    with pytest.raises(C.CocoInputError, match="no row for"):
        C.read_split(split, gt)


# ------------------------------------------------------------------------------------------------ with models


@pytest.mark.slow
def test_box_segmenter_matches_sam_predictor(coco_set: Path, gt):
    """Two images per jitted call, all boxes of an image in one decoder call (3 -> bucket 4, 5 -> 8), host-side
    postprocessing: the same logits and scores as SamPredictor.predict_batch image by image."""
    from tests.evaluation.test_evaluate import _random_model
    from vnsjax.predictors.sam_predictor import SamPredictor

    model = _random_model("tiny", "sam", seed=0)
    images, boxes = [], []
    for image_id, k in ((1, 3), (2, 5)):
        image = cv2.imread(str(coco_set / "images" / gt.imgs[image_id]["file_name"]))[..., ::-1]
        rng = np.random.default_rng(image_id)
        xy = rng.uniform(0, 0.5, (k, 2)) * image.shape[1::-1]
        images.append(np.ascontiguousarray(image))
        boxes.append(np.concatenate([xy, xy + rng.uniform(10, 100, (k, 2))], axis=1))
    outputs = C.BoxSegmenter(model, batch_size=2)(images, boxes)
    predictor = SamPredictor(model)
    for image, b, (logits, scores) in zip(images, boxes, outputs, strict=True):
        predictor.set_image(image)
        ref, ref_scores, _ = predictor.predict_batch(boxes=b, multimask_output=False, return_logits=True)
        # Batched vs single-image XLA programs and cv2 vs jax bilinear: float32 rounding at the logits' scale.
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(logits, ref[:, 0], atol=1e-4 * scale, rtol=0)
        np.testing.assert_allclose(scores, ref_scores[:, 0], atol=1e-4 * float(np.abs(ref_scores).max()), rtol=0)


@pytest.mark.slow
def test_cli_two_checkpoints_side_by_side(coco_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from tests.evaluation.test_evaluate import _random_model
    from vnsjax.model_dir import save_model

    root = tmp_path / "set"
    shutil.copytree(coco_set, root)
    data = json.loads((root / "annotations.json").read_text())
    bad = data["images"][-1]["file_name"]
    (root / "images" / bad).write_bytes(b"\x89PNG broken")
    sam = save_model(_random_model("tiny", "sam", seed=0), tmp_path / "ckpt" / "sam_tiny")
    vns = save_model(_random_model("tiny", "vns", seed=1), tmp_path / "ckpt" / "vns_tiny")
    out = tmp_path / "out"
    argv = [
        "--coco",
        str(root / "annotations.json"),
        "--images",
        str(root / "images"),
        "--checkpoint",
        str(sam),
        "--checkpoint",
        str(vns),
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert evaluate_cli.main(argv) == 1  # one image failed: reported, and the exit status says so
    err = capsys.readouterr().err
    assert "1 image(s) failed" in err and bad in err

    summary = json.loads((out / "coco_results.json").read_text())
    assert list(summary["models"]) == ["sam_tiny", "vns_tiny"]
    assert summary["images"] == {"evaluated": NUM_IMAGES - 1, "failed": 1}
    assert summary["precision"] == "highest"  # the --precision default, recorded
    evaluated = [i["id"] for i in data["images"] if i["file_name"] != bad]
    for name in ("sam_tiny", "vns_tiny"):
        results = json.loads((out / f"segm_{name}.json").read_text())
        assert _ap_list(summary["models"][name]["all"]) == direct_ap(root / "annotations.json", results, evaluated)
        assert 0 <= summary["models"][name]["all"]["iou"] <= 1
    table = (out / "coco_results.md").read_text()
    assert "| sam_tiny |" in table and "| vns_tiny |" in table and "COCO-NS AP" in table and "COCO-S IoU" in table
