"""vnsjax vs the official PyTorch segment_anything, timed the way users call them, each side in its own process.

    python -m benchmarks.sam_cpu [--model vit_b] [--rounds 3] [--repeats 3]

Times `SamPredictor.set_image` and `SamPredictor.predict(box=...)` end to end (pre- and post-processing
included) on both sides, with the same random weights (tests/torch_ref builds the PyTorch model, vnsjax loads
its state dict). Each side runs in a fresh subprocess, and the rounds alternate PyTorch / vnsjax, so neither
side's thread pool is still spinning while the other is timed and slow drift of a shared machine hits both.
Prints min / median over all rounds, the vnsjax / PyTorch ratio of medians, and a sanity line: PyTorch's prompt
encoder + mask decoder timed alone, which `predict` (the same work plus resizing the masks) must not undercut.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from vnsjax import MODEL_CONFIGS


def timings(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (JAX: compile)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(min, median) seconds of `fn` after a warm-up."""
    t = timings(fn, repeats)
    return min(t), statistics.median(t)


def inputs(model_type: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3:4 uint8 image at the model's input size and one box, the same in both processes."""
    s = MODEL_CONFIGS[model_type].img_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (s * 3 // 4, s, 3), dtype=np.uint8)
    return image, np.array([s * 0.2, s * 0.15, s * 0.6, s * 0.5], np.float32)


def run_torch(model_type: str, repeats: int) -> dict[str, list[float]]:
    import torch
    from segment_anything import SamPredictor

    from tests.torch_ref.sam import build_torch_sam

    ref = build_torch_sam(MODEL_CONFIGS[model_type])
    predictor = SamPredictor(ref)
    image, box = inputs(model_type)
    with torch.inference_mode():
        set_image = timings(lambda: predictor.set_image(image), repeats)
        predict = timings(lambda: predictor.predict(box=box), repeats * 3)
        emb, pe = predictor.features, ref.prompt_encoder.get_dense_pe()
        tb = torch.from_numpy(predictor.transform.apply_boxes(box[None], predictor.original_size))

        def decoder_alone():
            sparse, dense = ref.prompt_encoder(None, tb, None)
            return ref.mask_decoder(emb, pe, sparse, dense, True)

        decoder = timings(decoder_alone, repeats * 3)
    return {"set_image": set_image, "predict": predict, "decoder": decoder, "threads": torch.get_num_threads()}


def run_jax(model_type: str, repeats: int) -> dict[str, list[float]]:
    import jax

    from convert_weights.mapping import load_state_dict
    from tests.torch_ref.sam import build_torch_sam, torch_state_dict
    from vnsjax import SamPredictor, build_sam

    model = build_sam(model_type)
    load_state_dict(model, torch_state_dict(build_torch_sam(MODEL_CONFIGS[model_type])))
    predictor = SamPredictor(model)
    image, box = inputs(model_type)
    # predict returns NumPy arrays (already on the host), so timing the call covers the device work.
    set_image = timings(lambda: (predictor.set_image(image), jax.block_until_ready(predictor.features)), repeats)
    predict = timings(lambda: predictor.predict(box=box), repeats * 3)
    return {"set_image": set_image, "predict": predict}


def child(side: str, model_type: str, repeats: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.sam_cpu", "--child", side, "--model", model_type]
    cmd += ["--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_b", choices=sorted(MODEL_CONFIGS))
    ap.add_argument("--rounds", type=int, default=3, help="alternating PyTorch / vnsjax processes per side")
    ap.add_argument("--repeats", type=int, default=3, help="timed set_image calls per process (predict: 3x)")
    ap.add_argument("--child", choices=("torch", "jax"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run = run_torch if args.child == "torch" else run_jax
        print(json.dumps(run(args.model, args.repeats)))
        return
    results: dict[str, dict[str, list[float]]] = {"torch": {}, "jax": {}}
    threads = 0
    for _ in range(args.rounds):
        for side in ("torch", "jax"):
            r = child(side, args.model, args.repeats)
            threads = r.pop("threads", threads)
            for k, v in r.items():
                results[side].setdefault(k, []).extend(v)
    import jax
    import torch

    print(
        f"{args.model}, {args.rounds} rounds x (PyTorch process, vnsjax process); torch {torch.__version__} "
        f"({threads} threads), jax {jax.__version__}, {os.cpu_count()} CPUs"
    )
    print("| call | PyTorch min / median (s) | vnsjax min / median (s) | vnsjax / PyTorch (median) |")
    print("| --- | --- | --- | --- |")
    for name, key in (("SamPredictor.set_image", "set_image"), ("SamPredictor.predict(box=...)", "predict")):
        t, j = results["torch"][key], results["jax"][key]
        tm, jm = statistics.median(t), statistics.median(j)
        print(f"| {name} | {min(t):.4f} / {tm:.4f} | {min(j):.4f} / {jm:.4f} | {jm / tm:.2f} |")
    dec, pred = statistics.median(results["torch"]["decoder"]), statistics.median(results["torch"]["predict"])
    print(
        f"sanity: PyTorch prompt encoder + mask decoder alone {dec:.4f} s (median), its predict(box) {pred:.4f} s "
        f"({'consistent' if dec <= pred * 1.1 else 'INCONSISTENT: the decoder alone should not be slower'})"
    )


if __name__ == "__main__":
    main()
