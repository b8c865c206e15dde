"""Demo: the tiny VNS-SAM (256 input, 16x16 embedding) trained on built-in synthetic data, a few minutes on a CPU.

  python -m vnsjax.train --config configs/demo.py --workdir workdir/demo

The base (encoder, prompt encoder, SAM decoder) is random and frozen, as in real training only METI + NSFM learn;
the loss falls visibly within the run. Smoke variant for tests (a few steps): --config configs/demo.py:smoke;
with encoder adapters (VNS-SAM + Encoder Adapter): --config configs/demo.py:adapter[,smoke]
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import apply_flags, parse_arg, released_recipe


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    _, named, flags = parse_arg(arg, (), "")
    if named:
        raise ValueError(f"config argument {arg!r}: the demo is the tiny model; the model type is not an argument")
    c = released_recipe("tiny")
    c.seed = 0
    c.synthetic_images = 16  # per subset: 80 training images over the five training sources
    c.num_workers = 0  # in-process threads are enough for 256 px images
    c.batch_size = 2
    c.num_train_steps = 120
    c.lr_decay_epochs = 1000  # no decay within the demo
    c.checkpoint_every_steps = 40
    c.eval_every_steps = 60
    c.eval_num_images = 8
    apply_flags(c, flags - {"smoke"})
    if "smoke" in flags:
        c.synthetic_images = 2
        c.num_train_steps = 6
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 0
        c.eval_num_images = 2
        c.progress_bar = False
    return c
