"""One-command accelerator benchmark: per-chip img/s and MFU, each with a parity line against float32.

    python -m benchmarks.device            # on a GPU / TPU host, <= 5 minutes
    python -m benchmarks.device --smoke    # same code paths, tiny model, CPU, seconds (run by the test suite)

Rows: the SAM ViT-B and ViT-H image encoders at batch 1 and 8, VNS-SAM ViT-L end to end (encoder + NSFM +
decoder, one box per image, batch 8), and the VNS-SAM ViT-L train step (frozen encoder in bf16, global batch
8 per chip on a ("data",) mesh of all local devices). Timed runs are bf16 (float32 accumulation); each row's
parity line is the relative L2 error of its output (embedding, mask logits, loss) against the same computation in
float32 at HIGHEST matmul precision on the same device (plain float32 on a GPU is TF32). Random weights and
inputs: speed does not depend on them. MFU = img/s x analytic FLOPs per image (benchmarks.flops, encoder only, so
end-to-end and training MFU slightly undercount) / the chip's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.flops import encoder_flops, peak_flops
from configs.common import released_recipe
from vnsjax import MODEL_CONFIGS, build_sam
from vnsjax.modeling.sam import eval_view
from vnsjax.predictors.prompts import pack_prompts
from vnsjax.training import sharding
from vnsjax.training.state import cast_encoder, init_train_state
from vnsjax.training.step import jit_train_step

BF16 = jnp.bfloat16


def timed(fn: Callable[[], Any], iters: int) -> tuple[float, float]:
    """(compile + first run, median seconds per call) over `iters` calls after the warm-up."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def rel_err(x: jax.Array, ref: jax.Array) -> float:
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def in_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` jitted with true float32 matmuls: the parity reference on any backend."""
    jitted = jax.jit(fn)

    def run(*args):
        with jax.default_matmul_precision("highest"):
            return jitted(*args)

    return run


class Report:
    def __init__(self, flops: dict[str, float], peak: float | None, n_chips: int):
        self.flops, self.peak, self.n_chips = flops, peak, n_chips

    def row(self, name: str, model_type: str, images: int, first: float, sec: float, parity: str) -> None:
        ips = images / sec / self.n_chips
        mfu = f"{ips * self.flops[model_type] / self.peak:.1%}" if self.peak else "n/a"
        print(f"| {name} | {ips:.2f} | {mfu} | {sec * 1e3:.1f} | {first:.1f} | {parity} |", flush=True)


def encoder_rows(report: Report, model_type: str, batches: tuple[int, ...], iters: int, rng) -> None:
    model = build_sam(model_type)
    graphdef, state = nnx.split(model.image_encoder)
    bf16_state = jax.tree.map(lambda x: x.astype(BF16) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)

    def encode(s, x):
        return nnx.merge(graphdef, s)(x)[0]  # the embedding; the intermediate features are not timed apart

    run_bf16 = jax.jit(encode)
    run_f32 = in_float32(encode)
    size = MODEL_CONFIGS[model_type].img_size
    for b in batches:
        x = jnp.asarray(rng.normal(size=(b * report.n_chips, size, size, 3)), jnp.float32)
        xb = x.astype(BF16)
        first, sec = timed(lambda xb=xb: run_bf16(bf16_state, xb), iters)
        err = rel_err(run_bf16(bf16_state, xb), run_f32(state, x))
        report.row(f"SAM {model_type} encoder, batch {b}", model_type, x.shape[0], first, sec, f"embedding {err:.2e}")


def boxes_for(b: int, size: int, rng) -> np.ndarray:
    lo = rng.uniform(0, size * 0.5, (b, 2))
    return np.concatenate([lo, lo + rng.uniform(size * 0.1, size * 0.5, (b, 2))], axis=1).astype(np.float32)


def vns_end_to_end_row(report: Report, model_type: str, batch: int, iters: int, rng) -> None:
    model = eval_view(build_sam(model_type, "vns"))
    graphdef, state = nnx.split(model)
    bf16_state = cast_encoder(state, BF16)
    size = MODEL_CONFIGS[model_type].img_size
    b = batch * report.n_chips
    images = jnp.asarray(rng.integers(0, 256, (b, size, size, 3)), jnp.uint8)
    prompts, _ = pack_prompts(boxes=boxes_for(b, size, rng), mask_size=model.prompt_encoder.mask_input_size)
    prompts = jax.tree.map(jnp.asarray, prompts)

    def forward(dtype):
        def fn(s, images, prompts):
            m = nnx.merge(graphdef, s)
            return m.decode(m.image_features(images, dtype=dtype), prompts).masks

        return fn

    run_bf16 = jax.jit(forward(BF16))
    first, sec = timed(lambda: run_bf16(bf16_state, images, prompts), iters)
    err = rel_err(run_bf16(bf16_state, images, prompts), in_float32(forward(None))(state, images, prompts))
    report.row(
        f"VNS-SAM {model_type} end to end (1 box/image), batch {batch}",
        model_type,
        b,
        first,
        sec,
        f"mask logits {err:.2e}",
    )


def train_row(report: Report, model_type: str, batch: int, iters: int, rng) -> None:
    from benchmarks.train_step import random_batch

    config = released_recipe(model_type)
    b = batch * report.n_chips
    config.batch_size = b
    mesh = sharding.make_mesh()
    np_batch = random_batch(b, MODEL_CONFIGS[model_type].img_size, rng)

    def run(encoder_dtype: str):
        config.encoder_dtype = encoder_dtype
        state, frozen, setup = init_train_state(config, mesh, steps_per_epoch=1000)
        return state, frozen, jit_train_step(setup), sharding.put_batch(np_batch, sharding.batch_sharding(mesh))

    state, frozen, step, batch_ = run("bfloat16")
    carry = [state]

    def one_step():
        carry[0], out = step(carry[0], frozen, batch_)
        return out["loss"]

    # Parity: the first step's loss (the warm-up call, so before any update), bf16 frozen encoder vs float32.
    t0 = time.perf_counter()
    loss_bf16 = jax.block_until_ready(one_step())
    compile_s = time.perf_counter() - t0
    state32, frozen32, step32, batch32 = run("float32")
    with jax.default_matmul_precision("highest"):
        loss_f32 = step32(state32, frozen32, batch32)[1]["loss"]
    err = rel_err(loss_bf16, loss_f32)
    sec = timed(one_step, iters)[1]
    name = f"VNS-SAM {model_type} train step (frozen encoder bf16), batch {batch}/chip"
    report.row(name, model_type, b, compile_s, sec, f"loss {err:.2e}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, small batches, few iterations (CPU test)")
    ap.add_argument("--iters", type=int, default=0, help="timed calls per row after the warm-up (default 10; 2)")
    args = ap.parse_args(argv)
    if args.smoke:
        encoders, vns, batches, e2e_batch, iters = ("tiny",), "tiny", (1, 2), 2, args.iters or 2
    else:
        encoders, vns, batches, e2e_batch, iters = ("vit_b", "vit_h"), "vit_l", (1, 8), 8, args.iters or 10
    dev = jax.devices()[0]
    n_chips = jax.local_device_count()
    peak = peak_flops(dev.device_kind)
    report = Report({m: encoder_flops(m) for m in (*encoders, vns)}, peak, n_chips if dev.platform != "cpu" else 1)
    peak_text = f"{peak / 1e12:.1f} TFLOP/s dense bf16 (benchmarks/flops.py)" if peak else "unknown: no MFU"
    print(f"{n_chips} x {dev.device_kind} ({dev.platform}), jax {jax.__version__}, peak {peak_text}")
    print("| row | img/s per chip | MFU | ms per call | compile + first call (s) | parity vs float32 (rel. L2) |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for m in encoders:
        encoder_rows(report, m, batches, iters, rng)
    vns_end_to_end_row(report, vns, e2e_batch, iters, rng)
    train_row(report, vns, e2e_batch, iters, rng)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
