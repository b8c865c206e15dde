"""VNS-SAM ablation decoders (paper Tab. VI-X) trained with the released VNS-SAM recipe.

  python -m vnsjax.train --config configs/vns_ablation.py:no_nsfm,vit_l --workdir workdir/no_nsfm \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG
  python -m vnsjax.train --config configs/vns_ablation.py:gate,smoke --workdir /tmp/gate   # tiny, a few steps

ARG = VARIANT[,BACKBONE][,smoke]. VARIANT is one of vnsjax.modeling.vns_decoder.ABLATIONS (vnst, no_nsfm, vnst_nsfm,
mt, epl_epl, mpl_mpl, no_tf, gate, no_wd, hf_only, lf_only; docs/training.md#vns-ablations), BACKBONE one of
vit_b, vit_l (default, as in the paper's ablations), vit_h; `smoke` trains the tiny model for a few steps on
synthetic data. Everything but the decoder is the released recipe; the loss keeps the terms the variant has.
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import released_recipe
from vnsjax.modeling.vns_decoder import ABLATIONS

BACKBONES = ("vit_b", "vit_l", "vit_h")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    names = [p for p in parts if p in ABLATIONS]
    backbones = [p for p in parts if p in BACKBONES]
    unknown = [p for p in parts if p not in ABLATIONS and p not in BACKBONES and p != "smoke"]
    if unknown or len(names) != 1 or len(backbones) > 1:
        raise ValueError(
            f"configs/vns_ablation.py:{arg or ''}: expected VARIANT[,BACKBONE][,smoke] with VARIANT one of "
            f"{tuple(ABLATIONS)} and BACKBONE one of {BACKBONES}"
        )
    smoke = "smoke" in parts
    c = released_recipe("tiny" if smoke else (backbones or ["vit_l"])[0])
    c.variant = f"vns_{names[0]}"
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
