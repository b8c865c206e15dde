"""VNS-SAM training: frozen SAM base, METI + NSFM trained with the released recipe (docs/released-code.md#training).

  python -m vnsjax.train --config configs/demo.py --workdir workdir/demo
  python -m vnsjax.train --config configs/vit_l.py --workdir workdir/vit_l \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG --config.batch_size=8

Multi-host: start the same command on every host with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I (or nothing, where jax.distributed.initialize() detects the cluster by itself).

One loop, in order: data and shapes -> mesh and shardings -> model split and optimizer init (or restore from
WORKDIR/checkpoints) -> one jitted, donated train step per batch. Outputs in WORKDIR: checkpoints/, metrics.jsonl
(one JSON object per step), eval.jsonl, tb/ (TensorBoard), config.json.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from data_pipeline import pipeline, transforms, vns_seg
from data_pipeline import prompts as data_prompts
from vnsjax.evaluation import metrics as seg_metrics
from vnsjax.model_dir import save_model
from vnsjax.modeling.mask_decoder import DecoderOutput
from vnsjax.modeling.sam import Features, Prompts, Sam
from vnsjax.predictors.prompts import bucket, pack_prompts
from vnsjax.training import state as ts
from vnsjax.training.checkpoints import TrainCheckpoints
from vnsjax.training.losses import vns_total_loss
from vnsjax.training.step import training_prompts

# ------------------------------------------------------------------------------------------------------------------
# Model computations (pure functions of a merged model; jitted by the loop)
# ------------------------------------------------------------------------------------------------------------------


def vns_forward(model: Sam, features: Features, p: Prompts) -> DecoderOutput:
    # hq_token_only: SAM's own mask/IoU heads have no loss in the released training, so they are skipped.
    return model.decode(features, p, multimask_output=False, hq_token_only=True)


def loss_and_terms(model: Sam, batch: dict[str, jax.Array], dtype: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    e = model.config.image_embedding_size
    features = model.image_features(batch["image"], dtype=dtype, frozen_encoder=True)
    out = vns_forward(model, features, training_prompts(batch, (4 * e, 4 * e)))
    # Ablation decoders lack some outputs (None): their loss terms are left out. `masks` is the prediction.
    maps = [out.edge, out.interm_mask, out.interm_edge, out.masks]
    return vns_total_loss(*(None if m is None else m[:, 0] for m in maps), batch["mask"], batch["edge"])


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule, dtype: Any):
    """The pure train step over (trainable, batch_stats, opt_state, frozen) states; jit it with donation."""

    def train_step(trainable, batch_stats, opt_state, frozen, batch, step, nan_step):
        def loss_fn(trainable, batch_stats, frozen):
            # copy=True: fresh Variables created at the grad trace level, where BatchNorm may update them.
            model = nnx.merge(graphdef, trainable, batch_stats, frozen, copy=True)
            loss, terms = loss_and_terms(model, batch, dtype)
            # BatchNorm in train mode updated its running statistics during the forward pass.
            return loss, (terms, nnx.state(model, nnx.BatchStat))

        (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, batch_stats, frozen)
        # Debug hook (config.debug_nan_step) as a runtime argument: the compiled program is the same without it.
        loss = jnp.where(step + 1 == nan_step, jnp.nan, loss)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        scalars = {"loss": loss, **terms, "lr": schedule(step), "grad_norm": optax.tree.norm(grads)}
        return trainable, new_stats, opt_state, scalars

    return train_step


# ------------------------------------------------------------------------------------------------------------------
# Data
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


def load_eval_set(data_dir: str, subsets: str, num: int, size: int) -> list[dict[str, np.ndarray]]:
    """First `num` images of each subset: image resized to size^2 (released eval resize), box from it, GT mask."""
    out = []
    for name in vns_seg.resolve_names(subsets):
        source = vns_seg.VnsSegSource(data_dir, name, with_boundary=False)
        for i in range(len(source) if num < 0 else min(num, len(source))):
            record = source[i]
            mask = pipeline._plane(record["mask"])
            image, mask_resized = transforms.eval_resize(np.asarray(record["image"]), mask, size)
            out.append({"image": image, "box": data_prompts.box_from_mask(mask_resized), "mask": mask})
    return out


# ------------------------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------------------------


class Logs:
    """metrics.jsonl + TensorBoard on process 0; nothing elsewhere."""

    def __init__(self, workdir: Path):
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tb"))
            self._jsonl = (workdir / "metrics.jsonl").open("a")
            self._eval = (workdir / "eval.jsonl").open("a")

    def step(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(f"train/{k}", v, step)

    def evaluation(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._eval.write(json.dumps({"step": step, **scalars}) + "\n")
        self._eval.flush()
        for k, v in scalars.items():
            self._tb.add_scalar(f"eval/{k}", v, step)

    def close(self) -> None:
        if self.active:
            self._tb.close()
            self._jsonl.close()
            self._eval.close()


# ------------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------------


def train(config: mlc.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains (or resumes) into `workdir`; returns the last step's metrics and the evaluation, for tests."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")

    # --- Data and shapes --------------------------------------------------------------------------------------
    data_dir = prepare_data(config, workdir)
    num_train = len(vns_seg.VnsSegSource(data_dir, config.train_subsets))
    if config.batch_size % jax.device_count() or config.batch_size % jax.process_count():
        raise ValueError(f"batch_size {config.batch_size} must divide by {jax.device_count()} devices")
    local_batch = config.batch_size // jax.process_count()
    steps_per_epoch = config.steps_per_epoch if config.steps_per_epoch > 0 else num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{num_train} training images are fewer than one batch of {config.batch_size}")
    total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    encoder_dtype = jnp.dtype(config.encoder_dtype)

    # --- Mesh and shardings -------------------------------------------------------------------------------------
    mesh = ts.make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))  # every batch array is split on its leading axis

    # --- Model, optimizer, state (or restore) ------------------------------------------------------------------
    model = ts.build_model(config.model_type, config.seed, config.sam_checkpoint, config.variant)
    img_size, embed = model.img_size, model.config.image_embedding_size
    split = ts.split_model(model)
    del model  # from here on the model exists only as (graphdef, states), merged inside the jitted functions
    frozen = ts.put(
        ts.cast_encoder(split.frozen, encoder_dtype),
        ts.state_shardings(
            split.frozen, mesh, shard_encoder=config.shard_encoder, min_size=config.shard_encoder_min_size
        ),
    )
    trainable = ts.put(split.trainable, ts.state_shardings(split.trainable, mesh))
    batch_stats = ts.put(split.batch_stats, ts.state_shardings(split.batch_stats, mesh))
    tx, schedule = ts.make_optimizer(config, steps_per_epoch)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(trainable)
    rng = ts.put(jax.random.key_data(jax.random.key(config.seed)), replicated)

    data_iter = pipeline.make_train_iterator(
        data_dir,
        batch_size=local_batch,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_workers=config.num_workers,
        subsets=config.train_subsets,
        image_size=img_size,
    )
    ckpts = TrainCheckpoints(
        workdir / "checkpoints", keep=config.keep_checkpoints, save_every_steps=config.checkpoint_every_steps
    )
    start = 0
    if ckpts.latest_step is not None:
        start = ckpts.latest_step
        state = ckpts.restore(start, _ckpt_state(trainable, batch_stats, opt_state, start, rng), data_iter)
        trainable, batch_stats, opt_state, rng = (state[k] for k in ("trainable", "batch_stats", "opt_state", "rng"))
        print(f"Resumed from {workdir / 'checkpoints'} at step {start}", flush=True)

    # --- The jitted steps ---------------------------------------------------------------------------------------
    graphdef, eval_graphdef = split.train_graphdef, split.eval_graphdef

    train_step = make_train_step(graphdef, tx, schedule, encoder_dtype)

    # Shardings of inputs come from the committed arguments; outputs are pinned so the donated buffers are reused.
    p_train_step = jax.jit(
        train_step, donate_argnums=(0, 1, 2), out_shardings=(replicated, replicated, replicated, replicated)
    )

    @jax.jit
    def eval_step(trainable, batch_stats, frozen, images, prompts):
        model = nnx.merge(eval_graphdef, trainable, batch_stats, frozen)
        features = model.image_features(images, dtype=encoder_dtype, frozen_encoder=True)
        return vns_forward(model, features, prompts).masks[:, 0]

    eval_set = []
    if config.eval_num_images:
        eval_set = load_eval_set(data_dir, config.eval_subsets, config.eval_num_images, img_size)

    def evaluate() -> dict[str, float]:
        """Box prompt, fused mask bilinearly upsampled to the original size; mean IoU and boundary IoU."""
        ious, bious, chunk = [], [], bucket(max(config.batch_size, 1))  # pack_prompts pads to a power of two
        for i in range(0, len(eval_set), chunk):
            items = eval_set[i : i + chunk]
            pad = items + [items[-1]] * (chunk - len(items))  # static shapes: one compile
            images = ts.put(np.stack([x["image"] for x in pad]), replicated)
            prompts, _ = pack_prompts(boxes=np.stack([x["box"] for x in pad]), mask_size=(4 * embed, 4 * embed))
            prompts = ts.put(prompts, jax.tree.map(lambda _: replicated, prompts))
            logits = ts.to_host(eval_step(trainable, batch_stats, frozen, images, prompts))
            for item, lg in zip(items, logits, strict=False):
                full = transforms.resize_bilinear(lg, item["mask"].shape)
                ious.append(seg_metrics.iou(full, item["mask"]))
                bious.append(seg_metrics.boundary_iou(full, item["mask"]))
        return {"iou": float(np.mean(ious)), "biou": float(np.nanmean(bious)), "num_images": len(ious)}

    # --- Train ---------------------------------------------------------------------------------------------------
    logs = Logs(workdir)
    bar = None
    if config.progress_bar and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=start, desc="train", dynamic_ncols=True)
    scalars: dict[str, float] = {}
    nan_step = jnp.asarray(config.debug_nan_step, jnp.int32)
    evaluation: dict[str, float] = {}
    try:
        tick = time.perf_counter()
        for step in range(start, total_steps):
            local = next(data_iter)
            batch = {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v)) for k, v in local.items()}
            trainable, batch_stats, opt_state, out = p_train_step(
                trainable, batch_stats, opt_state, frozen, batch, jnp.asarray(step, jnp.int32), nan_step
            )
            scalars = {k: float(ts.to_host(v)) for k, v in out.items()}  # one host sync a step: logs + NaN guard
            done = step + 1
            now = time.perf_counter()
            scalars["images_per_s"] = config.batch_size / max(now - tick, 1e-9)
            tick = now
            logs.step(done, scalars)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k != "grad_norm"}, refresh=False)
            if not math.isfinite(scalars["loss"]):
                raise FloatingPointError(
                    f"non-finite loss {scalars['loss']} at step {done}; the last good checkpoint is step "
                    f"{ckpts.latest_step} in {workdir / 'checkpoints'}"
                )
            if ckpts.should_save(done, total_steps):
                ckpts.save(done, _ckpt_state(trainable, batch_stats, opt_state, done, rng), data_iter)
            eval_due = done == total_steps or (config.eval_every_steps > 0 and done % config.eval_every_steps == 0)
            if eval_set and eval_due:
                evaluation = evaluate()
                logs.evaluation(done, evaluation)
                if bar is not None:
                    bar.write(f"step {done}: eval IoU {evaluation['iou']:.4f} BIoU {evaluation['biou']:.4f}")
                tick = time.perf_counter()
            if done == config.debug_kill_after_step:
                logs.close()
                os.kill(os.getpid(), signal.SIGKILL)  # simulates preemption (tests resume)
        if jax.process_count() == 1:
            # A model directory like the converter's, so predict / evaluate / export take the fine-tuned model.
            save_model(
                nnx.merge(eval_graphdef, trainable, batch_stats, frozen),
                workdir / "model",
                source={"kind": "vnsjax.train", "step": total_steps, "sam_checkpoint": config.sam_checkpoint},
            )
    finally:
        if bar is not None:
            bar.close()
        logs.close()
        ckpts.close()
    return {
        "step": total_steps,
        "train": scalars,
        "eval": evaluation,
        "trainable": trainable,
        "batch_stats": batch_stats,
        "opt_state": opt_state,
        "frozen": frozen,
    }


def _ckpt_state(trainable, batch_stats, opt_state, step: int, rng) -> dict[str, Any]:
    # rng: the run's base key; nothing in the current model is stochastic (prompts are drawn by the data pipeline,
    # whose state is saved separately), but it is saved so a stochastic extension resumes exactly.
    return {
        "trainable": trainable,
        "batch_stats": batch_stats,
        "opt_state": opt_state,
        "step": np.asarray(step, np.int64),
        "rng": rng,
    }


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
    train(flags_.config, flags_.workdir)


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
    from absl import app

    _define_flags()
    app.run(main)
