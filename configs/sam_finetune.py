"""Fine-tuning SAM itself (the paper's Tab. XI strategies), on SAM's loss, with SAM's mask decoder.

  python -m convert_weights --checkpoint sam_vit_l_0b3195.pth --output checkpoints/sam_vit_l
  python -m vnsjax.train --config configs/sam_finetune.py:decoder,vit_l --workdir workdir/ft_decoder \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG

Argument: a recipe, a model type (default vit_l) and flags, comma-separated:
  decoder          FT-Decoder: the mask decoder except its IoU token and IoU head (default)
  token            FT-Token: the mask tokens and their hypernetwork MLPs
  encoder_decoder  FT-Encoder & Decoder: all of SAM, encoder blocks rematerialised; lr 1e-5 (ours: a full
                   fine-tune of a pretrained ViT at the released 1e-3 would wipe out what it knows). Without
                   --config.sam_checkpoint it trains from random initialisation (pre-training from scratch).
  adapter          encoder adapters (one bottleneck per ViT block), trained with the recipe's decoder part
  smoke            three steps of the tiny model on synthetic data (tests): e.g. :token,smoke
Everything else is the released VNS-SAM recipe (Adam 1e-3, x0.1 after epoch 10, 12 epochs, global batch 16,
the data pipeline's box / points / noisy-mask prompts). Loss: SAM's (--config.loss=structure or hq to switch).
Trainable parameters: python -m vnsjax.params --config configs/sam_finetune.py:decoder,vit_b
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import apply_flags, parse_arg, released_recipe

RECIPES = ("decoder", "token", "encoder_decoder")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    recipe, model_type, flags = parse_arg(arg, RECIPES, "decoder")
    c = released_recipe(model_type or "vit_l")
    c.variant = "sam"
    c.trainable = recipe
    if recipe == "encoder_decoder":
        c.lr = 1e-5
        c.remat = True
    return apply_flags(c, flags)
