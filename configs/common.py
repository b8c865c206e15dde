"""The released VNS-SAM training recipe (docs/released-code.md#training) as an ml_collections.ConfigDict.

Shared by configs/vit_{b,l,h}.py and configs/demo.py; each file only sets what differs.
"""

from __future__ import annotations

import ml_collections as mlc


def released_recipe(model_type: str) -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.model_type = model_type
    c.variant = "vns"  # decoder from vnsjax.build_sam.DECODERS: "vns" or a VNS ablation "vns_<name>"
    c.seed = 42  # released: 42 + rank; here one seed, data shards differ by process
    # Converted SAM checkpoint directory (python -m convert_weights); empty: random base (demo and tests only).
    c.sam_checkpoint = ""
    # What trains (vnsjax.training.optim): "released" = METI + NSFM, or comma-separated module paths of the model.
    c.trainable = "released"

    # Input: VNS-SEG root with the five training sources (data_pipeline.vns_seg); empty: synthetic data.
    c.data_dir = ""
    c.train_subsets = "train"
    c.synthetic_images = 0  # per subset, generated into WORKDIR/data when data_dir is empty
    c.num_workers = 2  # grain worker processes per host
    c.batch_size = 16  # global: 4 per GPU x 4 GPUs in the release
    # Skip (and log) a training example that cannot be read, at the start-up scan or mid-run, instead of stopping.
    c.skip_bad = False

    # Optimizer and schedule: Adam, lr 1e-3, StepLR(10, 0.1) per epoch, 12 epochs.
    c.lr = 1e-3
    c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
    c.lr_decay = 0.1
    c.lr_decay_epochs = 10
    c.num_epochs = 12
    c.steps_per_epoch = -1  # -1: dataset size // batch_size (DistributedSampler + drop_last)
    c.num_train_steps = -1  # -1: num_epochs * steps_per_epoch

    # Compute and sharding.
    c.encoder_dtype = "float32"  # "bfloat16": frozen encoder in bf16; trainable modules stay float32
    c.shard_encoder = False  # FSDP-style sharding of the frozen encoder's large kernels over "data"
    c.shard_encoder_min_size = 2**18  # elements; smaller kernels stay replicated

    # Checkpoints, logs, evaluation.
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.eval_every_steps = 1000  # 0: only at the end
    c.eval_subsets = "CAMO"  # held-out subset(s); box prompt, fused mask at the original size
    c.eval_num_images = 50  # first N images of each eval subset; -1: all; 0: no evaluation
    c.progress_bar = True
    # Resuming a workdir with another batch_size, or a step count below the checkpoint's, is refused unless True
    # (then recorded in WORKDIR/config_changes.jsonl).
    c.allow_config_change = False
    return c


def check_arg(arg: str | None, allowed: tuple[str, ...] = ("smoke",)) -> None:
    """`--config FILE:ARG` takes only the variants a config defines; anything else is a typo, not a default."""
    if arg and arg not in allowed:
        raise ValueError(f"unknown config variant {arg!r}; expected one of {allowed} (or none)")


def backbone_config(model_type: str, arg: str | None) -> mlc.ConfigDict:
    """configs/vit_{b,l,h}.py: the released recipe, or with `:smoke` two steps on tiny synthetic data."""
    check_arg(arg)
    c = released_recipe(model_type)
    if arg == "smoke":
        c.synthetic_images = 2
        c.batch_size = 1
        c.num_train_steps = 2
        c.num_workers = 0
        c.eval_num_images = 1
    return c
