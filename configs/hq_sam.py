"""HQ-SAM's released training recipe: only the new HQ modules (HQ token, its MLP, the HQ feature fusion) train on
a frozen SAM, with HQ-SAM's loss (BCE + dice on 112 x 112 points sampled by uncertainty).

  python -m convert_weights --checkpoint sam_vit_l_0b3195.pth --output checkpoints/sam_vit_l
  python -m vnsjax.train --config configs/hq_sam.py:vit_l --workdir workdir/hq_sam \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG

HQ-SAM-F (the paper's HQ-SAM fine-tuned on VNS-SEG): start from the converted HQ-SAM checkpoint instead,
--config.sam_checkpoint=checkpoints/sam_hq_vit_l (its HQ modules are loaded too).
Argument: a model type (default vit_l) and the flags adapter (encoder adapters, trained with the HQ modules) and
smoke (three steps of the tiny model on synthetic data), comma-separated. The optimizer is sam-hq's train.py:
Adam 1e-3, StepLR(10 epochs, x0.1), 12 epochs, which the VNS-SAM release shares.
Trainable parameters: python -m vnsjax.params --config configs/hq_sam.py:vit_b
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import apply_flags, parse_arg, released_recipe


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    _, model_type, flags = parse_arg(arg, (), "")
    c = released_recipe(model_type or "vit_l")
    c.variant = "hq"
    return apply_flags(c, flags)
