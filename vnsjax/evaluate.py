"""VNS-SEG evaluation of converted SAM / HQ-SAM / VNS-SAM models, several side by side.

    python -m vnsjax.evaluate --checkpoint DIR [--checkpoint DIR2 ...] --data ROOT [--subsets eval]
        [--prompt box|noise_box|point] [--points 10] [--seed 42] [--batch-size 4] [--out results/]

The protocol and the runner live in `vnsjax.evaluation.runner`; this module is its command line. An image that
cannot be used is recorded as failed with the reason, counted in the table footnote and listed on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data_pipeline import prompts
from vnsjax.evaluation.report import format_markdown, write_reports
from vnsjax.evaluation.runner import PROMPT_MODES, evaluate
from vnsjax.model_dir import load_model


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
    p.add_argument("--data", required=True, metavar="ROOT", help="VNS-SEG root (released folder layout)")
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
    p.add_argument("--out", default="results", help="directory for results.md, results.json, results_per_image.csv")
    p.add_argument("--stem", default="results", help="file name stem of the three reports")
    args = p.parse_args(argv)

    try:
        models = {name: load_model(d) for name, d in zip(_model_names(args.checkpoint), args.checkpoint, strict=True)}
    except (FileNotFoundError, ValueError) as e:
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


if __name__ == "__main__":
    sys.exit(main())
