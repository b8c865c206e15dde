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
    # Recipe (docs/training.md#recipes). variant: a vnsjax.build_sam.DECODERS name (sam | hq | vns | vns_<ablation>).
    # trainable (vnsjax.training.optim): "released" = the variant's own set (VNS: METI + NSFM), decoder | token |
    # encoder_decoder, or comma-separated module paths ("-path" excludes). loss: "released" = the variant's own
    # (sam also: structure | hq; hq also: structure).
    c.variant = "vns"
    c.trainable = "released"
    c.loss = "released"
    c.focal_alpha = 0.25  # loss "sam": focal loss foreground weight (RetinaNet's 0.25; 0.5 weighs both classes alike)
    c.encoder_adapter_ratio = 0.0  # > 0: a trained bottleneck adapter of this width ratio in every encoder block
    c.remat = False  # rematerialise encoder blocks in the backward pass (recipes that train encoder parameters)
    c.prompts = "data"  # vnsjax.training.step.PROMPTS: the data pipeline's box / points / noisy mask prompts
    # or "interactive" (SAM variant): a jittered box or a point, then this many click + mask-prompt rounds.
    c.refine_rounds = 2

    # Input: VNS-SEG root with the five training sources (data_pipeline.vns_seg); empty: synthetic data.
    c.data_dir = ""
    c.train_subsets = "train"
    c.synthetic_images = 0  # per subset, generated into WORKDIR/data when data_dir is empty
    c.num_workers = 2  # grain worker processes per host
    c.batch_size = 16  # global: 4 per GPU x 4 GPUs in the release
    c.jitter_scale = (0.1, 2.0)  # LargeScaleJitter: long side drawn from this range x the input size
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
    c.lr_schedule = "step"  # "step": the released StepLR above; "cosine": warm-up then cosine decay to 0
    c.warmup_steps = 0  # "cosine" only
    c.weight_decay = 0.0  # > 0: AdamW (decoupled weight decay)

    # Compute and sharding. precision (docs/precision.md): "highest" = true float32 matmuls on every backend (parity),
    # "default" = the backend's float32 matmuls (TF32 on GPU), "bf16" = bfloat16 activations, float32 accumulation.
    c.precision = "highest"
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


MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
ADAPTER_RATIO = 0.25  # SAM-Med2D's bottleneck width


def parse_arg(arg: str | None, choices: tuple[str, ...], default: str) -> tuple[str, str | None, set[str]]:
    """`--config FILE:a,b,...` -> (the one choice named, or `default`; the model type named, or None; flags).

    Flags are "smoke" and "adapter". Anything else is refused: a typo must not fall back to a default.
    """
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    picked = [w for w in words if w in choices]
    models = [w for w in words if w in MODEL_TYPES]
    flags = {w for w in words if w in ("smoke", "adapter")}
    unknown = [w for w in words if w not in (*choices, *MODEL_TYPES, "smoke", "adapter")]
    if unknown or len(picked) > 1 or len(models) > 1:
        raise ValueError(
            f"config argument {arg!r}: expected at most one of {choices}, at most one of {MODEL_TYPES}, "
            "and the flags smoke / adapter, separated by commas"
        )
    return (picked[0] if picked else default), (models[0] if models else None), flags


def apply_flags(c: mlc.ConfigDict, flags: set[str]) -> mlc.ConfigDict:
    """`adapter`: encoder adapters, trained with the recipe's own modules; `smoke`: a few steps of the tiny model."""
    if "adapter" in flags:
        c.encoder_adapter_ratio = ADAPTER_RATIO
        c.remat = True
    if "smoke" in flags:
        c.model_type = "tiny"  # same code paths as the ViTs at a fraction of the cost
        c.seed = 0
        c.synthetic_images = 2
        c.batch_size = 2
        c.num_train_steps = 3
        c.num_workers = 0
        c.checkpoint_every_steps = 0
        c.eval_every_steps = 0
        c.eval_num_images = 1
        c.progress_bar = False
    return c


def backbone_config(model_type: str, arg: str | None) -> mlc.ConfigDict:
    """configs/vit_{b,l,h}.py: the released recipe; `:adapter` adds encoder adapters (VNS-SAM + Encoder Adapter);
    `:smoke` two steps on tiny synthetic data."""
    _, named, flags = parse_arg(arg, (), "")
    if named:
        raise ValueError(f"config argument {arg!r}: this file is {model_type}; the model type is not an argument")
    c = released_recipe(model_type)
    if "adapter" in flags:
        apply_flags(c, {"adapter"})
    if "smoke" in flags:
        c.synthetic_images = 2
        c.batch_size = 1
        c.num_train_steps = 2
        c.num_workers = 0
        c.eval_num_images = 1
    return c
