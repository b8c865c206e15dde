"""Throughput of the COCO box-prompt evaluation (`vnsjax.evaluation.coco.run_coco`), end to end.

    python -m benchmarks.coco_eval --model-type tiny --num-images 8 --batch-size 2
    python -m benchmarks.coco_eval --model-type vit_b --num-images 4 --batch-size 2

Random weights (host-side initialisers), images from `data_pipeline.coco_synthetic` (192-384 px, 3-6 objects,
resized to the model's input size as SAM does). The first pass compiles; the second pass over the same images, with
the same jitted programs, is timed. Reported separately: the full pass (image reading, VNS-scores, encoder, decoder,
host-side mask upsampling, RLE, per-object IoU/BIoU) and the model calls alone (`BoxSegmenter`).
There is no PyTorch counterpart of this whole pipeline; the encoder and decoder against PyTorch are in
benchmarks/sam_cpu.py and benchmarks/vns_decoder.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax

from data_pipeline import coco_synthetic
from vnsjax import build_sam
from vnsjax.evaluation import coco as C


class _Timed:
    """Wraps a segmenter and sums the wall time of its calls (results fetched to the host inside the call)."""

    def __init__(self, segmenter: C.BoxSegmenter):
        self.segmenter, self.seconds, self.mask_threshold = segmenter, 0.0, segmenter.mask_threshold

    def __call__(self, images, boxes):
        t = time.perf_counter()
        out = self.segmenter(images, boxes)
        self.seconds += time.perf_counter() - t
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-type", default="tiny")
    p.add_argument("--variant", default="sam")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ann = coco_synthetic.generate(Path(tmp) / "set", args.num_images, seed=0)
        gt = C.load_annotations(ann)
        boxes = sum(1 for a in gt.dataset["annotations"] if not a["iscrowd"])
        t = time.perf_counter()
        model = build_sam(args.model_type, args.variant)
        build_s = time.perf_counter() - t
        segmenter = _Timed(C.BoxSegmenter(model, batch_size=args.batch_size))
        times = []
        for _ in range(2):
            segmenter.seconds = 0.0
            t = time.perf_counter()
            C.run_coco({"m": segmenter}, gt, Path(tmp) / "set" / "images", batch_size=args.batch_size, progress=False)
            times.append((time.perf_counter() - t, segmenter.seconds))
    (first, _), (full, model_s) = times
    n = args.num_images
    print(
        f"{args.model_type} {args.variant}, {jax.default_backend()}, {n} images, {boxes} boxes, batch {args.batch_size}"
    )
    print(f"model build {build_s:.1f} s; first pass (compile + run) {first:.1f} s")
    print(
        f"timed pass: {full:.2f} s = {n / full:.3f} images/s end to end; model calls {model_s:.2f} s "
        f"({n / model_s:.3f} images/s)"
    )


if __name__ == "__main__":
    main()
