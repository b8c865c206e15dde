"""VNS-SAM ablation decoders (paper Tab. VI-X) trained with the released VNS-SAM recipe.

  python -m vnsjax.train --config configs/vns_ablation.py:no_nsfm,vit_l --workdir workdir/no_nsfm \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG
  python -m vnsjax.train --config configs/vns_ablation.py:gate,smoke --workdir /tmp/gate   # tiny, a few steps

ARG = VARIANT[,BACKBONE][,adapter][,smoke]. VARIANT is one of vnsjax.modeling.vns_decoder.ABLATIONS (vnst,
no_nsfm, vnst_nsfm, mt, epl_epl, mpl_mpl, no_tf, gate, no_wd, hf_only, lf_only; docs/training.md#vns-ablations),
BACKBONE one of vit_b, vit_l (default, as in the paper's ablations), vit_h; `smoke` trains the tiny model for a few
steps on synthetic data; `adapter` adds encoder adapters (docs/training.md#recipes). Everything but the decoder is
the released recipe; the loss keeps the terms the variant has.
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import MODEL_TYPES as BACKBONES
from configs.common import apply_flags, parse_arg, released_recipe
from vnsjax.modeling.vns_decoder import ABLATIONS


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    try:
        name, backbone, flags = parse_arg(arg, tuple(ABLATIONS), "")
    except ValueError:
        name = ""
    if not name:
        raise ValueError(
            f"configs/vns_ablation.py:{arg or ''}: expected VARIANT[,BACKBONE][,adapter][,smoke] with VARIANT one of "
            f"{tuple(ABLATIONS)} and BACKBONE one of {BACKBONES}"
        )
    smoke = "smoke" in flags
    c = released_recipe("tiny" if smoke else backbone or "vit_l")
    c.variant = f"vns_{name}"
    apply_flags(c, flags - {"smoke"})  # adapter: encoder adapters, trained with the variant's modules
    if smoke:
        c.seed = 0
        c.synthetic_images = 2
        c.batch_size = 1
        c.num_train_steps = 2
        c.num_workers = 0
        c.lr_decay_epochs = 1000
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 0
        c.eval_num_images = 1
        c.progress_bar = False
    return c
