"""Work and memory without a device: XLA's own counts for the compiled programs, nothing big allocated.

    python -m benchmarks.cost [--flops vit_b vit_l vit_h] [--memory vit_h] [--devices 8]

1. FLOPs: the image encoder (batch 1, 1024^2, float32) is lowered from abstract shapes (jax.ShapeDtypeStruct,
   nnx.eval_shape) and compiled for this host; `compiled.cost_analysis()["flops"]` is compared with the analytic
   count in benchmarks.flops. A ratio near 1 means XLA runs no work beyond the model's matmuls; well above 1
   would mean wasted work (e.g. attention computed on padding it does not need, or duplicated einsums).
   XLA counts the body of a loop once: the CPU's chunked global attention (a lax.map over heads and query
   blocks) then shows up as almost nothing, so the table also gives the analytic count without the global
   blocks' QK/AV products; run with VNSJAX_ATTENTION=xla (where available) to count one fused attention.
2. Memory: in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=N (a simulated N-device CPU
   mesh), `compiled.memory_analysis()` of the VNS-SAM train step at global batch 2N (frozen encoder bf16,
   data-parallel, as vnsjax.train shards it) and of the image encoder at batch N in bf16 (one image per device).
   Per-device bytes are argument + output + temporaries - aliased (donated) buffers, as XLA's CPU backend plans
   them; a GPU/TPU compiler fuses differently, so treat them as an estimate of the accelerator's footprint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks.flops import encoder_flops
from vnsjax import MODEL_CONFIGS, build_sam

GIB = 2**30


def abstract(model_fn):
    graphdef, state = nnx.split(nnx.eval_shape(model_fn))
    return graphdef, state


def encoder_program(model_type: str, batch: int, dtype, sharding=None):
    graphdef, state = abstract(lambda: build_sam(model_type).image_encoder)
    spec = lambda x: jax.ShapeDtypeStruct(  # noqa: E731
        x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype, sharding=sharding and sharding(P())
    )
    state = jax.tree.map(spec, state)
    size = MODEL_CONFIGS[model_type].img_size
    x = jax.ShapeDtypeStruct((batch, size, size, 3), dtype, sharding=sharding and sharding(P("data")))
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)[0]).lower(state, x)


def flops_row(model_type: str) -> None:
    t0 = time.perf_counter()
    compiled = encoder_program(model_type, 1, jnp.float32).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla, analytic = float(cost["flops"]), encoder_flops(model_type)
    outside = encoder_flops(model_type, global_attention=False)
    print(
        f"| {model_type} | {xla / 1e12:.3f} | {analytic / 1e12:.3f} | {xla / analytic:.3f} | "
        f"{outside / 1e12:.3f} | {xla / outside:.3f} | "
        f"{time.perf_counter() - t0:.0f} |",
        flush=True,
    )


def per_device_bytes(compiled) -> float:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def train_program(model_type: str, global_batch: int):
    """The trainer's jitted step (frozen encoder bf16) lowered for a global batch; the state is built for real
    (the trainer has no abstract initialiser), the batch only as shapes."""
    from benchmarks.train_step import random_batch
    from configs.common import released_recipe
    from vnsjax.training import sharding
    from vnsjax.training.state import init_train_state
    from vnsjax.training.step import jit_train_step

    config = released_recipe(model_type)
    config.batch_size, config.encoder_dtype = global_batch, "bfloat16"
    mesh = sharding.make_mesh()
    state, frozen, setup = init_train_state(config, mesh, steps_per_epoch=1000)
    host = random_batch(1, MODEL_CONFIGS[model_type].img_size, np.random.default_rng(0))
    split = sharding.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((global_batch, *v.shape[1:]), v.dtype, sharding=split) for k, v in host.items()}
    return jit_train_step(setup).lower(state, frozen, batch)


def memory_child(model_types: list[str]) -> None:
    from vnsjax.training import sharding as shard

    n = jax.device_count()
    mesh = shard.make_mesh()
    sharding = lambda spec: NamedSharding(mesh, spec)  # noqa: E731
    for m in model_types:
        t0 = time.perf_counter()
        enc = per_device_bytes(encoder_program(m, n, jnp.bfloat16, sharding).compile())
        print(
            json.dumps(
                {
                    "model": m,
                    "program": f"encoder bf16, global batch {n}",
                    "gib": enc / GIB,
                    "compile_s": time.perf_counter() - t0,
                }
            ),
            flush=True,
        )
        t0 = time.perf_counter()
        train = per_device_bytes(train_program(m, 2 * n).compile())
        print(
            json.dumps(
                {
                    "model": m,
                    "program": f"VNS-SAM train step, global batch {2 * n}",
                    "gib": train / GIB,
                    "compile_s": time.perf_counter() - t0,
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flops", nargs="*", default=["vit_b", "vit_l", "vit_h"], help="encoders to count")
    ap.add_argument("--memory", nargs="*", default=["vit_h"], help="models for the simulated-mesh memory rows")
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices for the memory rows")
    ap.add_argument("--memory-child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    if args.flops:
        print(
            "| encoder (batch 1, 1024^2) | XLA cost_analysis (TFLOP) | analytic (TFLOP) | ratio "
            "| analytic without global QK/AV (TFLOP) | ratio | compile (s) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
        for m in args.flops:
            flops_row(m)
    if args.memory:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, "-m", "benchmarks.cost", "--memory-child", *args.memory]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        print(f"\n| model | program ({args.devices} simulated CPU devices) | per-device memory (GiB) | compile (s) |")
        print("| --- | --- | --- | --- |", flush=True)
        for line in proc.stdout:
            r = json.loads(line)
            print(f"| {r['model']} | {r['program']} | {r['gib']:.2f} | {r['compile_s']:.0f} |", flush=True)
        if proc.wait():
            sys.exit(f"memory analysis failed (exit {proc.returncode})")


if __name__ == "__main__":
    main()
