"""python -m convert_weights --checkpoint sam_vit_l_0b3195.pth --output DIR [--model-type auto|vit_b|vit_l|vit_h]

Also takes HQ-SAM checkpoints (sam_hq_vit_*.pth), merged VNS-SAM files (sam_hq_epoch_N.pth) and
decoder-only VNS-SAM files (epoch_N.pth, with --sam-checkpoint for the SAM base).

DIR must be new, empty, or an earlier output of this tool (then its vnsjax.json and state/ are replaced);
--overwrite allows a non-empty folder, into which only vnsjax.json and state/ are written.
"""

from __future__ import annotations

import argparse
import logging
import sys

from convert_weights.convert import convert_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert_weights", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="PyTorch .pth file")
    p.add_argument("--output", required=True, help="directory to write the converted model to")
    p.add_argument(
        "--model-type",
        default="auto",
        choices=["auto", "vit_b", "vit_l", "vit_h", "tiny", "custom"],
        help="auto: any known type; custom: also accept an encoder geometry that is no known type",
    )
    p.add_argument("--sam-checkpoint", default=None, help="SAM base for a decoder-only VNS-SAM epoch_N.pth")
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty folder (only vnsjax.json and state/)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        info = convert_file(
            args.checkpoint,
            args.output,
            model_type=args.model_type,
            sam_checkpoint=args.sam_checkpoint,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"converted {info['checkpoint']} ({info['variant']}, {info['model_type']}, {info['num_tensors']} tensors, "
        f"0 unmapped, 0 missing) -> {args.output}"
    )
    if "frozen_decoder_max_abs_diff" in info:
        print(f"frozen SAM-decoder copy vs SAM base: max |diff| = {info['frozen_decoder_max_abs_diff']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
