"""Evaluation of converted SAM / HQ-SAM / VNS-SAM models, several side by side: VNS-SEG or COCO.

    python -m vnsjax.evaluate --checkpoint DIR [--checkpoint DIR2 ...] --data ROOT [--subsets eval]
        [--prompt box|noise_box|point] [--points 10] [--seed 42] [--batch-size 4] [--out results/]
    python -m vnsjax.evaluate --checkpoint DIR [--checkpoint DIR2 ...] --coco ANNOTATIONS.json --images DIR
        [--boxes DETECTIONS.json [--box-score-thr 0.0]] [--split vns_split.csv | --vns-threshold 0.7]
        [--batch-size 4] [--out results_coco/]

The protocols and runners live in `vnsjax.evaluation.runner` (VNS-SEG) and `vnsjax.evaluation.coco` (COCO box
prompts, mask AP overall and on the VNS-score splits); this module is their command line. An image that cannot be
used is recorded as failed with the reason, counted in the table footnote and listed on stderr; in the COCO mode
a failed image also makes the exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data_pipeline import prompts
from vnsjax.evaluation import coco
from vnsjax.evaluation.report import format_markdown, write_reports
from vnsjax.evaluation.runner import PROMPT_MODES, evaluate
from vnsjax.model_dir import load_model
from vnsjax.modeling.precision import add_precision_flag
from vnsjax.utils.outputs import OutputError, check_out_dir


def _model_names(directories: Sequence[str]) -> list[str]:
    """Table names: the directory's base name, or more of its path where two would clash."""
    paths = [Path(d).absolute() for d in directories]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    raise ValueError(f"the same checkpoint is given twice: {list(directories)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vnsjax.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="DIR",
        help="converted model directory (python -m convert_weights); repeat to compare models",
    )
    p.add_argument("--data", metavar="ROOT", help="VNS-SEG root (released folder layout)")
    p.add_argument("--coco", metavar="ANNOTATIONS.json", help="COCO instances file: evaluate on COCO instead")
    p.add_argument(
        "--subsets",
        nargs="+",
        default=["eval"],
        help="subset names or groups seen / unseen / eval (default: eval = the 10 test subsets)",
    )
    p.add_argument("--prompt", choices=PROMPT_MODES, default="box")
    p.add_argument("--points", type=int, default=prompts.NUM_POINTS, help="positive points for --prompt point")
    p.add_argument("--seed", type=int, default=42, help="prompt sampling seed (the release seeds 42)")
    p.add_argument("--batch-size", type=int, default=1, help="images per jitted call (the last batch is padded)")
    p.add_argument(
        "--results-fusion",
        action="store_true",
        help="VNS-SAM: fused mask + SAM mask logits (MyTrain.py --results_fusion)",
    )
    p.add_argument("--hq-token-only", action="store_true", help="HQ-SAM: HQ mask only instead of HQ + SAM mask")
    p.add_argument("--workers", type=int, default=2, help="image-reading threads")
    add_precision_flag(p)
    p.add_argument("--out", default=None, help="output directory (default: results, or results_coco with --coco)")
    p.add_argument("--stem", default="results", help="file name stem of the three VNS-SEG reports")
    c = p.add_argument_group("COCO (with --coco)")
    c.add_argument("--images", metavar="DIR", help="the images the annotation file names (e.g. val2017/)")
    c.add_argument("--boxes", metavar="DETECTIONS.json", help="detector boxes (COCO results) instead of the GT boxes")
    c.add_argument("--box-score-thr", type=float, default=0.0, help="keep detector boxes with score >= this")
    c.add_argument("--split", metavar="CSV", help="reuse a vns_split.csv instead of computing VNS-scores")
    c.add_argument(
        "--vns-threshold", type=float, default=None, help=f"COCO-NS: VNS-score >= this ({coco.VNS_THRESHOLD})"
    )
    c.add_argument("--max-images", type=int, default=None, help="only the first N images (by id) of the file")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if (args.data is None) == (args.coco is None):
        p.error("give either --data (VNS-SEG) or --coco (COCO)")
    if args.coco is not None:
        if args.images is None:
            p.error("--coco needs --images DIR")
        if args.split is not None and args.vns_threshold is not None:
            p.error("--split already decides the split; --vns-threshold only applies when computing it")
        return coco_main(args)
    if args.out is None:
        args.out = "results"
    try:
        check_out_dir(args.out, [f"{args.stem}{suffix}" for suffix in (".md", ".json", "_per_image.csv")])
        names = _model_names(args.checkpoint)
        models = {name: load_model(d, precision=args.precision) for name, d in zip(names, args.checkpoint, strict=True)}
    except (OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, m in models.items():
        print(f"{name}: {m.variant} {m.config.name} (input {m.config.img_size}x{m.config.img_size})", file=sys.stderr)
    summary, records = evaluate(
        models,
        args.data,
        args.subsets,
        args.prompt,
        num_points=args.points,
        seed=args.seed,
        batch_size=args.batch_size,
        results_fusion=args.results_fusion,
        hq_token_only=args.hq_token_only,
        workers=args.workers,
    )
    summary["precision"] = args.precision
    paths = write_reports(summary, records, args.out, stem=args.stem)
    print(format_markdown(summary))
    if summary["absent_subsets"]:
        print(f"absent subsets (not under {args.data}): {', '.join(summary['absent_subsets'])}", file=sys.stderr)
    if summary["failed"]:
        print(f"{len(summary['failed'])} image(s) failed and are excluded from the means:", file=sys.stderr)
        for f in summary["failed"]:
            print(f"  {f['subset']}/{f['file']}: {f['error']}", file=sys.stderr)
    print("wrote " + ", ".join(str(v) for v in paths.values()), file=sys.stderr)
    return 0


def coco_main(args: argparse.Namespace) -> int:
    """The COCO mode: every input and --out checked before the first image is read."""
    out = "results_coco" if args.out is None else args.out
    # None: the split comes from --split (its file decides, no threshold applies).
    threshold = None if args.split else coco.VNS_THRESHOLD if args.vns_threshold is None else args.vns_threshold
    try:
        names = _model_names(args.checkpoint)
        coco.check_out_dir(out, list(coco.output_names(names).values()))
        if not Path(args.images).is_dir():
            raise coco.CocoInputError(f"--images {args.images} is not a directory")
        gt = coco.load_annotations(args.coco)
        detections = coco.detection_prompts(args.boxes, gt, args.box_score_thr) if args.boxes else None
        if args.max_images is not None and args.max_images < 1:
            raise coco.CocoInputError(f"--max-images must be >= 1, got {args.max_images}")
        image_ids = sorted(gt.getImgIds())[: args.max_images]
        split = coco.read_split(args.split, gt, image_ids) if args.split else None
        models = {name: load_model(d, precision=args.precision) for name, d in zip(names, args.checkpoint, strict=True)}
    except (coco.CocoInputError, OutputError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, m in models.items():
        print(f"{name}: {m.variant} {m.config.name} (input {m.config.img_size}x{m.config.img_size})", file=sys.stderr)
    run = coco.run_coco(
        models,
        gt,
        args.images,
        detections=detections,
        split=split,
        threshold=coco.VNS_THRESHOLD if threshold is None else threshold,
        batch_size=args.batch_size,
        image_ids=image_ids,
        hq_token_only=args.hq_token_only,
        results_fusion=args.results_fusion,
        workers=args.workers,
        progress=not args.no_progress,
    )
    summary = coco.summarize(run, gt) | {"precision": args.precision}
    paths = coco.write_outputs(run, summary, out, threshold=threshold)
    print(coco.format_markdown(summary, threshold=threshold))
    if run.failed:
        print(f"{len(run.failed)} image(s) failed and are excluded from the evaluation:", file=sys.stderr)
        for f in run.failed:
            print(f"  {f['file_name']} (id {f['image_id']}): {f['error']}", file=sys.stderr)
    print("wrote " + ", ".join(str(v) for v in paths.values()), file=sys.stderr)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
