"""VNS-SAM on SAM ViT-B, released recipe: Adam 1e-3, x0.1 after epoch 10, 12 epochs, batch 16, 1024 input.

  python -m convert_weights --checkpoint sam_vit_b_*.pth --output checkpoints/sam_vit_b
  python -m vnsjax.train --config configs/vit_b.py --workdir workdir/vit_b \
      --config.sam_checkpoint=checkpoints/sam_vit_b --config.data_dir=/data/VNS-SEG

Smoke run (two steps, tiny synthetic data, random base): --config configs/vit_b.py:smoke
"""

from __future__ import annotations

import ml_collections as mlc

from configs.common import backbone_config


def get_config(arg: str | None = None) -> mlc.ConfigDict:
    return backbone_config("vit_b", arg)
