"""Demo: VNS-SAM trained on the shipped pre-trained SAM base, on built-in synthetic data, a few minutes on a CPU.

  python -m vnsjax.train --config configs/demo.py --workdir workdir/demo

The base is `builtin:sam_mini_salient` (docs/base_model.md: a small SAM pre-trained by vnsjax on salient scenes),
frozen; as in the released training only METI + NSFM learn, on the synthetic VNS training sources. At the end the
run prints the held-out IoU of the base and of VNS-SAM on the same VNS scenes and box prompts
(WORKDIR/comparison.json). Smoke variant for tests (a few steps of the tiny model on a random base):
--config configs/demo.py:smoke; with encoder adapters (VNS-SAM + Encoder Adapter): --config configs/demo.py:adapter
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import apply_flags, parse_arg, released_recipe
from vnsjax.model_dir import DEFAULT_BASE


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    _, named, flags = parse_arg(arg, (), "")
    if named:
        raise ValueError(f"config argument {arg!r}: the demo is the shipped base; the model type is not an argument")
    c = released_recipe("mini")
    c.sam_checkpoint = DEFAULT_BASE
    c.seed = 0
    c.synthetic_images = 16  # per subset: 80 training images over the five training sources
    c.num_workers = 0  # in-process threads are enough for 256 px images
    c.batch_size = 4
    c.num_train_steps = 150
    c.lr_decay_epochs = 1000  # no decay within the demo
    c.checkpoint_every_steps = 50
    c.eval_every_steps = 0  # once, at the end, with the base on the same images
    c.eval_subsets = "seen"
    c.eval_num_images = 8  # per subset
    apply_flags(c, flags - {"smoke"})
    if "smoke" in flags:
        c.model_type = "tiny"
        c.sam_checkpoint = ""  # random base: the code paths at a fraction of the cost
        c.eval_subsets = "CAMO"
        c.batch_size = 2
        c.synthetic_images = 2
        c.num_train_steps = 6
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 0
        c.eval_num_images = 2
        c.progress_bar = False
    return c
