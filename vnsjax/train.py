"""VNS-SAM training: frozen SAM base, METI + NSFM trained with the released recipe (docs/released-code.md#training).

  python -m vnsjax.train --config configs/demo.py --workdir workdir/demo
  python -m vnsjax.train --config configs/vit_l.py --workdir workdir/vit_l \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG --config.batch_size=8

Multi-host: start the same command on every host with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I (or nothing, where jax.distributed.initialize() detects the cluster by itself).

`train()` reads top to bottom: config -> mesh -> data -> init or restore the TrainState -> the jitted step -> the
loop (log, stop on a non-finite step, save, evaluate). Outputs in WORKDIR: checkpoints/, model/ (the fine-tuned
model for predict / evaluate / export), metrics.jsonl (one JSON object per step), eval.jsonl, tb/ (TensorBoard),
config.json.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections as mlc

from data_pipeline import pipeline, vns_seg
from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.evaluation import runner
from vnsjax.model_dir import ModelDirError, load_model, save_model
from vnsjax.modeling.image_encoder import get_attention
from vnsjax.modeling.sam import Sam
from vnsjax.training import sharding
from vnsjax.training.checkpoints import TrainCheckpoints
from vnsjax.training.config_check import ConfigError, override_error, resume_changes, validate_config
from vnsjax.training.logs import Logs
from vnsjax.training.state import eval_model, init_train_state
from vnsjax.training.step import jit_train_step


def train(config: mlc.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains (or resumes) into `workdir` -> {"step", "train": the last step's metrics, "eval": the last evaluation}.

    Raises FloatingPointError on the first step with a non-finite loss or gradient (that step is not applied; the
    checkpoints before it are kept).
    """
    # --- Config ---------------------------------------------------------------------------------------------------
    validate_config(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    previous = json.loads((workdir / "config.json").read_text()) if (workdir / "config.json").is_file() else None
    ckpts = TrainCheckpoints(
        workdir / "checkpoints", keep=config.keep_checkpoints, save_every_steps=config.checkpoint_every_steps
    )
    data_dir = prepare_data(config, workdir)
    local_batch, steps_per_epoch, total_steps = step_counts(config, data_dir)
    changes = {}
    if ckpts.latest_step is not None:
        try:
            changes = resume_changes(previous, config, ckpts.latest_step, total_steps)
        except ConfigError:
            ckpts.close()
            raise
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")

    # --- Mesh -----------------------------------------------------------------------------------------------------
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)

    # --- Init or restore the train state --------------------------------------------------------------------------
    state, frozen, setup = init_train_state(config, mesh, steps_per_epoch)
    data_iter = pipeline.make_train_iterator(
        data_dir,
        batch_size=local_batch,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_workers=config.num_workers,
        subsets=config.train_subsets,
        image_size=MODEL_CONFIGS[config.model_type].img_size,
        skip_bad=config.skip_bad,
        jitter_scale=tuple(config.jitter_scale),
    )
    if ckpts.latest_step is not None:
        state = ckpts.restore(ckpts.latest_step, state, data_iter)
        print(f"Resumed from {workdir / 'checkpoints'} at step {ckpts.latest_step}", flush=True)
        if changes and jax.process_index() == 0:
            print(f"allow_config_change: resuming with {changes} ([checkpoint, now])", flush=True)
            with (workdir / "config_changes.jsonl").open("a") as f:
                f.write(json.dumps({"step": ckpts.latest_step, "changes": changes}) + "\n")
    start = int(sharding.to_host(state.step))

    # --- Step -----------------------------------------------------------------------------------------------------
    train_step = jit_train_step(setup)

    # --- Loop: step, log, stop on non-finite, save, evaluate ------------------------------------------------------
    logs = Logs(workdir, total_steps=total_steps, start=start, progress_bar=config.progress_bar)
    logs.start(start, step_numerics(config, eval_model(setup, state, frozen), setup.encoder_dtype))
    metrics: dict[str, float] = {}
    evaluation: dict[str, float] = {}
    try:
        tick = time.perf_counter()
        for step in range(start + 1, total_steps + 1):
            state, out = train_step(state, frozen, sharding.put_batch(next(data_iter), batch_sharding))
            metrics = {k: float(sharding.to_host(v)) for k, v in out.items()}  # one host sync a step
            now = time.perf_counter()
            metrics["images_per_s"] = config.batch_size / max(now - tick, 1e-9)
            tick = now
            logs.train(step, metrics)
            if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
                raise FloatingPointError(
                    f"non-finite loss {metrics['loss']} / gradient norm {metrics['grad_norm']} at step {step}; the "
                    f"step was not applied. The last good checkpoint is step {ckpts.latest_step} in "
                    f"{workdir / 'checkpoints'}"
                )
            if ckpts.should_save(step, total_steps):
                ckpts.save(step, state, data_iter)
            every = config.eval_every_steps
            if config.eval_num_images and (step == total_steps or (every > 0 and step % every == 0)):
                evaluation = evaluate(eval_model(setup, state, frozen), config, data_dir)
                logs.eval(step, evaluation)
                tick = time.perf_counter()
        # The step the weights are at: below `start` only when a smaller num_train_steps was accepted on resume.
        total_steps = max(total_steps, start)
        base_eval = compare_with_base(config, data_dir, evaluation, workdir) if evaluation else {}
        if jax.process_count() == 1:
            # A model directory like the converter's, so predict / evaluate / export take the fine-tuned model.
            save_model(
                eval_model(setup, state, frozen),
                workdir / "model",
                source={"kind": "vnsjax.train", "step": total_steps, "sam_checkpoint": config.sam_checkpoint},
            )
    finally:
        logs.close()
        ckpts.close()
    return {"step": total_steps, "train": metrics, "eval": evaluation, "base_eval": base_eval}


def step_numerics(config: mlc.ConfigDict, model: Sam, encoder_dtype: Any) -> dict[str, str]:
    """How the training step computes, for the logs: precision, encoder attention implementation, backend."""
    return {
        "precision": config.precision,
        "encoder_dtype": str(encoder_dtype),
        "attention": get_attention(model, encoder_dtype),
        "backend": jax.default_backend(),
    }


# ------------------------------------------------------------------------------------------------------------------
# Data and evaluation
# ------------------------------------------------------------------------------------------------------------------


def prepare_data(config: mlc.ConfigDict, workdir: Path) -> str:
    """config.data_dir, or synthetic VNS-SEG generated once into WORKDIR/data (by process 0)."""
    if config.data_dir:
        return config.data_dir
    from data_pipeline import synthetic

    root = workdir / "data"
    marker = root / "DONE"
    if jax.process_index() == 0 and not marker.exists():
        names = vns_seg.resolve_names(config.train_subsets) + vns_seg.resolve_names(config.eval_subsets)
        synthetic.generate(root, num=max(config.synthetic_images, 1), seed=config.seed, subsets=names)
        marker.write_text("ok\n")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("synthetic data")
    return str(root)


def step_counts(config: mlc.ConfigDict, data_dir: str) -> tuple[int, int, int]:
    """(per-process batch, steps per epoch, total steps) from the config and the training set's size."""
    local_batch = config.batch_size // jax.process_count()
    num_train = len(vns_seg.VnsSegSource(data_dir, config.train_subsets, skip_bad=config.skip_bad))
    per_epoch = pipeline.steps_per_epoch(num_train, batch_size=local_batch, shard_count=jax.process_count())
    steps_per_epoch = config.steps_per_epoch if config.steps_per_epoch > 0 else per_epoch
    if steps_per_epoch < 1:
        raise ConfigError(f"config.batch_size = {config.batch_size}: more than the {num_train} training images")
    total = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    return local_batch, steps_per_epoch, total


def evaluate(model: Sam, config: mlc.ConfigDict, data_dir: str) -> dict[str, float]:
    """The runner of `python -m vnsjax.evaluate` (box prompts, fused mask at the original size) on the first
    `config.eval_num_images` images of each of `config.eval_subsets` -> mean of every metric, and the image count."""
    summary, _ = runner.evaluate(
        {"train": model},
        data_dir,
        config.eval_subsets,
        "box",
        batch_size=config.batch_size,
        progress=False,
        max_images=config.eval_num_images,
    )
    scores = summary["models"]["train"]
    num_images = sum(entry["count"] for entry in scores["subsets"].values())
    return {m: scores["all"][m] for m in summary["metrics"]} | {"num_images": num_images}


def compare_with_base(
    config: mlc.ConfigDict, data_dir: str, evaluation: dict[str, float], workdir: Path
) -> dict[str, float]:
    """The frozen base (`config.sam_checkpoint`) on the final evaluation's images and prompts -> its metrics.

    Prints both held-out IoUs on one line and writes WORKDIR/comparison.json; nothing without a base.
    """
    if not config.sam_checkpoint:
        return {}
    base = evaluate(load_model(config.sam_checkpoint), config, data_dir)
    delta = evaluation["iou"] - base["iou"]
    if jax.process_index() == 0:
        print(
            f"Held-out IoU on {config.eval_subsets} ({evaluation['num_images']} images, box prompts): "
            f"base {base['iou']:.3f} -> {config.variant} {evaluation['iou']:.3f} ({delta:+.3f})",
            flush=True,
        )
        report = {"subsets": config.eval_subsets, "base": config.sam_checkpoint, "base_eval": base, "eval": evaluation}
        (workdir / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
    return base


# ------------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
    from absl import flags, logging

    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    flags_ = flags.FLAGS
    if flags_.coordinator_address:
        # Before any backend starts. Only the CPU backend reads it (GPU/TPU hosts use their own collectives).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=flags_.coordinator_address,
            num_processes=flags_.num_processes,
            process_id=flags_.process_id,
        )
    try:
        train(flags_.config, flags_.workdir)
    except (ConfigError, ModelDirError, vns_seg.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "Training config file, e.g. configs/vit_l.py or configs/demo.py:smoke", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "Output directory; an existing run there is resumed.")
    flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0 (jax.distributed).")
    flags.DEFINE_integer("num_processes", 1, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_id", 0, "Multi-host: this process's index.")
    flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
    from absl import app, flags

    _define_flags()
    try:  # an unknown --config.KEY fails here, in ml_collections, with three chained tracebacks
        argv = flags.FLAGS(sys.argv)
    except Exception as e:
        print(f"error: {override_error(sys.argv, e, flags.FLAGS['config'].parser.parse)}", file=sys.stderr)
        sys.exit(2)
    app.run(main, flags_parser=lambda _: argv)  # parsed above; a second parse redefines the override flags
