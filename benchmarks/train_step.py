"""Train-step throughput and peak memory of VNS-SAM training (frozen base, METI + NSFM trained).

  python benchmarks/train_step.py --config configs/demo.py --steps 10
  python benchmarks/train_step.py --config configs/vit_b.py --batch 2 --steps 2 [--encoder-dtype bfloat16]

Random inputs with the training batch's shapes (no data pipeline: it is benchmarked by
benchmarks/data_pipeline.py); the same jitted, donated step as vnsjax.train on a ("data",) mesh of all devices.
Reports compile time, images/s over the timed steps, and peak memory (device memory stats where the backend has
them, else the process's max RSS).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Run as a script, this folder is sys.path[0] and its data_pipeline.py would shadow the data_pipeline package.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from data_pipeline import prompts as data_prompts  # noqa: E402
from vnsjax.build_sam import MODEL_CONFIGS  # noqa: E402
from vnsjax.train import make_train_step  # noqa: E402
from vnsjax.training import state as ts  # noqa: E402


def load_config(path: str):
    path, _, arg = path.partition(":")
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def random_batch(b: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = data_prompts.NUM_POINTS
    mask = (rng.random((b, size, size)) > 0.5).astype(np.float32)
    return {
        "image": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
        "mask": mask,
        "edge": mask,
        "box": np.tile(np.array([[size * 0.2, size * 0.2, size * 0.7, size * 0.8]], np.float32), (b, 1)),
        "points": rng.uniform(0, size, (b, k, 2)).astype(np.float32),
        "point_labels": np.ones((b, k), np.int32),
        "mask_input": np.zeros((b, 256, 256), np.float32),
        "prompt_type": np.arange(b, dtype=np.int32) % 3,  # box, points and mask prompts all exercised
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.py")
    ap.add_argument("--batch", type=int, default=0, help="global batch (0: the config's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--encoder-dtype", default="")
    args = ap.parse_args()
    config = load_config(args.config)
    b = args.batch or config.batch_size
    dtype = jnp.dtype(args.encoder_dtype or config.encoder_dtype)

    mesh = ts.make_mesh()
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    split = ts.split_model(ts.build_model(config.model_type, config.seed))
    size = MODEL_CONFIGS[config.model_type].img_size
    frozen = ts.put(ts.cast_encoder(split.frozen, dtype), ts.state_shardings(split.frozen, mesh))
    trainable = ts.put(split.trainable, ts.state_shardings(split.trainable, mesh))
    stats = ts.put(split.batch_stats, ts.state_shardings(split.batch_stats, mesh))
    tx, schedule = ts.make_optimizer(config, steps_per_epoch=1000)
    opt_state = jax.jit(tx.init, out_shardings=repl)(trainable)
    step = make_train_step(split.train_graphdef, tx, schedule, dtype)
    p_step = jax.jit(step, donate_argnums=(0, 1, 2), out_shardings=(repl, repl, repl, repl))
    no_nan = jnp.asarray(-1, jnp.int32)
    batch = {k: jax.device_put(v, data) for k, v in random_batch(b, size, np.random.default_rng(0)).items()}

    t0 = time.perf_counter()
    trainable, stats, opt_state, out = p_step(trainable, stats, opt_state, frozen, batch, jnp.int32(0), no_nan)
    out["loss"].block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        trainable, stats, opt_state, out = p_step(trainable, stats, opt_state, frozen, batch, jnp.int32(i + 1), no_nan)
    out["loss"].block_until_ready()
    dt = (time.perf_counter() - t0) / args.steps
    mem = jax.devices()[0].memory_stats() or {}
    peak = mem.get("peak_bytes_in_use")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    peak_text = f"device {peak / 2**30:.2f} GiB" if peak else f"max RSS {rss:.2f} GiB"
    print(
        f"{config.model_type} batch {b} encoder {dtype.name} on {jax.device_count()} x {jax.devices()[0].platform}: "
        f"first step (compile + run) {compile_s:.1f} s, {dt:.2f} s/step, {b / dt:.2f} images/s, "
        f"peak {peak_text}, loss {float(out['loss']):.4f}"
    )


if __name__ == "__main__":
    main()
