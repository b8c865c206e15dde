"""Latency of the web demo's model calls: a new image (encoder) and one click (decoder), per model.

    python -m benchmarks.demo_latency [--model-type tiny vit_b] [--repeats 3]

Times the page's own calls (vnsjax.demo.models.DemoModel: SamPredictor / VnsPredictor set_image and predict)
after the demo's warm-up, so no compile is counted. Random weights: the timings do not depend on the values.
The image is a 640x480 synthetic scene; the click is one foreground point, single-mask output (the page's default);
the click time includes resizing the masks to 640x480 and the copy back to NumPy.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
from PIL import Image

from data_pipeline.synthetic import make_scene
from vnsjax.build_sam import build_sam
from vnsjax.demo.models import DemoModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-type", nargs="+", default=["tiny", "vit_b"])
    p.add_argument("--variants", nargs="+", default=["sam", "vns"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clicks", type=int, default=10)
    args = p.parse_args()

    scene, _ = make_scene("camouflage", np.random.default_rng(0))
    image = np.asarray(Image.fromarray(scene).resize((640, 480), Image.BILINEAR))
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
    print("| model | new image: encoder (ms, min / median) | one click: decoder (ms, min / median) | load avg |")
    print("| --- | --- | --- | --- |")
    for model_type in args.model_type:
        for variant in args.variants:
            m = DemoModel.from_model(f"{variant} {model_type}", build_sam(model_type, variant))
            m.warmup()
            m.set_image("size", image)  # compiles the resize to this image size (not timed)
            enc = [m.set_image(f"new{i}", image) for i in range(args.repeats)]
            rng = np.random.default_rng(0)
            clicks = []
            for _ in range(args.clicks):
                point = rng.uniform([0, 0], [640, 480])[None]
                clicks.append(m.predict(point, np.array([1], np.int32), None, multimask=False)[2])
            print(
                f"| {m.name} | {min(enc):.0f} / {np.median(enc):.0f} | {min(clicks):.0f} / {np.median(clicks):.0f} "
                f"| {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
