"""Pre-training a small SAM from scratch on synthetic salient scenes: the base vnsjax ships (docs/base_model.md).

  python -m vnsjax.train --config configs/sam_pretrain.py --workdir workdir/sam_pretrain

All of SAM (image encoder, prompt encoder, mask decoder) trains from random initialisation with SAM's loss
(focal 20 : dice 1, plus the IoU head's MSE) and SAM's simulated interactive prompts: a jittered box or one point,
then click-and-mask refinement rounds (vnsjax.training.step.interactive_prompts). Data: one object per example
from generated salient scenes (`Salient-TR`, several distinct objects per image, one mask each); the held-out
evaluation uses the `Salient` images, which training never sees, with box prompts. AdamW with a linear warm-up
and cosine decay. At the end WORKDIR/model is a model directory (`--config.sam_checkpoint=WORKDIR/model` for
VNS-SAM training, or `python -m vnsjax.evaluate --checkpoint WORKDIR/model`).

Argument: `smoke` (a few steps on a handful of images, for tests): --config configs/sam_pretrain.py:smoke
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import parse_arg, released_recipe


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    _, named, flags = parse_arg(arg, (), "")
    if named or "adapter" in flags:
        raise ValueError(f"config argument {arg!r}: the pre-training recipe takes only `smoke`")
    c = released_recipe("tiny" if "smoke" in flags else "mini")
    c.seed = 0
    c.variant = "sam"
    c.trainable = "encoder_decoder"
    c.loss = "released"  # SAM's
    # Balanced focal term: with RetinaNet's 0.25 a model learning from scratch keeps every mask logit below 0 for
    # hundreds of steps (box IoU 0.000 at step 300 of the first 30-minute run, while its soft masks improved).
    # 0.75 crosses zero sooner but learns worse (0.31 at step 1,000; 0.5: 0.58 at 1,050): docs/base_model.md.
    c.focal_alpha = 0.5
    c.prompts = "interactive"
    c.refine_rounds = 1

    c.train_subsets = "Salient-TR"
    c.eval_subsets = "Salient"
    c.synthetic_images = 800  # per subset: ~3,400 training objects; the first eval_num_images objects evaluate
    c.jitter_scale = (0.7, 1.3)  # mild: the released 0.1-2.0 spends most of a short run on tiny or cut-off objects
    c.num_workers = 0
    c.batch_size = 8

    c.lr = 1e-3
    c.weight_decay = 0.05
    c.lr_schedule = "cosine"
    c.warmup_steps = 50
    c.num_train_steps = 1500

    c.checkpoint_every_steps = 150
    c.keep_checkpoints = 2
    c.eval_every_steps = 150
    c.eval_num_images = 100
    if "smoke" in flags:
        c.synthetic_images = 2
        c.batch_size = 2
        c.num_train_steps = 3
        c.warmup_steps = 1
        c.checkpoint_every_steps = 0
        c.eval_every_steps = 0
        c.eval_num_images = 2
        c.progress_bar = False
    return c
