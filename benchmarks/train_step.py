"""Train-step throughput and peak memory of any training recipe (default: VNS-SAM, frozen base, METI + NSFM).

  python -m benchmarks.train_step --config configs/demo.py --steps 10
  python -m benchmarks.train_step --config configs/vit_b.py --batch 2 --steps 2 [--encoder-dtype bfloat16]
  python -m benchmarks.train_step --config configs/sam_finetune.py:encoder_decoder,vit_b --batch 2 --steps 1 --remat 0
  python -m benchmarks.train_step --config configs/sam_finetune.py:encoder_decoder,vit_h --batch 4 --memory-analysis

--memory-analysis compiles the step for abstract inputs (nothing is initialised, so ViT-H fits a small host) and
prints XLA's memory analysis of the compiled program for one device: arguments (parameters, Adam state, frozen
base, batch), outputs, temporaries, and their peak estimate (arguments + outputs - aliased + temporaries).

Random inputs shaped as `data_pipeline.TRAIN_BATCH_SPEC` (no data pipeline: it is benchmarked by
benchmarks/data_pipeline.py); the trainer's own `init_train_state` and jitted, donated `train_step` on a ("data",)
mesh of all devices. Reports compile time, images/s over the timed steps, and peak memory (device memory stats
where the backend has them, else the process's max RSS).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipeline import TRAIN_BATCH_SPEC
from data_pipeline.pipeline import OUTPUT_SIZE
from data_pipeline.prompts import PROMPT_BOX, PROMPT_MASK, PROMPT_POINTS
from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.training import optim, sharding
from vnsjax.training import state as ts
from vnsjax.training.state import init_train_state
from vnsjax.training.step import jit_train_step, train_step


def load_config(path: str):
    path, _, arg = path.partition(":")
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def random_batch(b: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A batch of TRAIN_BATCH_SPEC's keys and dtypes at the model's input `size`, every prompt type exercised."""
    batch = {}
    for key, (shape, dtype) in TRAIN_BATCH_SPEC.items():
        shape = (b, *(size if d == OUTPUT_SIZE else d for d in shape))
        batch[key] = rng.integers(0, 256, shape).astype(dtype)
    batch["mask"] = batch["edge"] = (rng.random((b, size, size)) > 0.5).astype(np.float32)
    batch["box"] = np.tile(np.array([[size * 0.2, size * 0.2, size * 0.7, size * 0.8]], np.float32), (b, 1))
    batch["points"] = rng.uniform(0, size, batch["points"].shape).astype(np.float32)
    batch["point_labels"] = np.ones_like(batch["point_labels"])
    batch["mask_input"] = np.zeros_like(batch["mask_input"])
    batch["prompt_type"] = np.array([PROMPT_BOX, PROMPT_POINTS, PROMPT_MASK] * b, np.int32)[:b]
    return batch


def memory_analysis(config, batch_size: int):
    """XLA's memory analysis of the train step compiled for abstract inputs of `config` at `batch_size` per device."""
    model = nnx.eval_shape(
        lambda: ts.build_model(config.model_type, 0, variant=config.variant, adapter_ratio=config.encoder_adapter_ratio)
    )
    model.image_encoder.remat = config.remat
    split = ts.split_model(model, config.trainable)
    tx, schedule = optim.make_optimizer(config, 1000)
    state = ts.TrainState(
        split.trainable,
        split.batch_stats,
        jax.eval_shape(tx.init, split.trainable),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
    )
    recipe = ts.make_recipe(config, split.trainable)
    setup = ts.TrainSetup(split.train_graphdef, split.eval_graphdef, tx, schedule, jnp.dtype(config.encoder_dtype),
                          None, None, recipe)  # fmt: skip
    size = MODEL_CONFIGS[config.model_type].img_size
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), random_batch(batch_size, size, np.random.default_rng(0))
    )
    step = jax.jit(functools.partial(train_step, setup=setup), donate_argnums=(0,))
    return step.lower(state, split.frozen, batch).compile().memory_analysis()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.py")
    ap.add_argument("--batch", type=int, default=0, help="global batch (0: the config's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--encoder-dtype", default="")
    ap.add_argument("--remat", type=int, choices=(0, 1), default=None, help="override config.remat")
    ap.add_argument("--memory-analysis", action="store_true", help="compile only; XLA's memory analysis")
    args = ap.parse_args()
    config = load_config(args.config)
    config.batch_size = args.batch or config.batch_size
    config.encoder_dtype = args.encoder_dtype or config.encoder_dtype
    if args.remat is not None:
        config.remat = bool(args.remat)
    b = config.batch_size
    if args.memory_analysis:
        t0 = time.perf_counter()
        m = memory_analysis(config, b)
        gib = lambda n: n / 2**30  # noqa: E731
        peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
        print(
            f"{config.model_type} {config.variant} trainable={config.trainable} remat={config.remat} batch {b} per "
            f"device on {jax.devices()[0].platform}: arguments {gib(m.argument_size_in_bytes):.2f} GiB, outputs "
            f"{gib(m.output_size_in_bytes):.2f} GiB (aliased {gib(m.alias_size_in_bytes):.2f}), temporaries "
            f"{gib(m.temp_size_in_bytes):.2f} GiB, peak estimate {gib(peak):.2f} GiB "
            f"(compiled in {time.perf_counter() - t0:.0f} s)"
        )
        return

    mesh = sharding.make_mesh()
    state, frozen, setup = init_train_state(config, mesh, steps_per_epoch=1000)
    train_step = jit_train_step(setup)
    size = MODEL_CONFIGS[config.model_type].img_size
    batch = sharding.put_batch(random_batch(b, size, np.random.default_rng(0)), sharding.batch_sharding(mesh))

    t0 = time.perf_counter()
    state, out = train_step(state, frozen, batch)
    out["loss"].block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, out = train_step(state, frozen, batch)
    out["loss"].block_until_ready()
    dt = (time.perf_counter() - t0) / args.steps
    mem = jax.devices()[0].memory_stats() or {}
    peak = mem.get("peak_bytes_in_use")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    peak_text = f"device {peak / 2**30:.2f} GiB" if peak else f"max RSS {rss:.2f} GiB"
    print(
        f"{config.model_type} {config.variant} trainable={config.trainable} remat={config.remat} "
        f"batch {b} encoder {setup.encoder_dtype.name} on {jax.device_count()} x "
        f"{jax.devices()[0].platform}: first step (compile + run) {compile_s:.1f} s, {dt:.2f} s/step, "
        f"{b / dt:.2f} images/s, peak {peak_text}, loss {float(out['loss']):.4f}"
    )


if __name__ == "__main__":
    main()
