"""VNS-SAM on SAM ViT-L, released recipe: Adam 1e-3, x0.1 after epoch 10, 12 epochs, batch 16, 1024 input.

  python -m convert_weights --checkpoint sam_vit_l_*.pth --output checkpoints/sam_vit_l
  python -m vnsjax.train --config configs/vit_l.py --workdir workdir/vit_l \
      --config.sam_checkpoint=checkpoints/sam_vit_l --config.data_dir=/data/VNS-SEG

Smoke run (two steps, tiny synthetic data, random base): --config configs/vit_l.py:smoke
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import backbone_config


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    return backbone_config("vit_l", arg)
