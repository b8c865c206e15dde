"""Analytic work of SAM's image encoder and the peak FLOP/s of the chips the device benchmark knows.

FLOPs = 2 x multiply-adds. The count follows the encoder as built: patch embedding, per block qkv / proj / MLP,
attention QK and AV over the (padded) windows or the whole grid, the decomposed rel-pos einsums (each query
against the rows and the columns of its window), and the neck (1x1 conv, 3x3 conv). Elementwise work (norms,
softmax, GELU) is left out: it is not matmul work and no tensor core runs it.
"""

from __future__ import annotations

import math

from vnsjax.build_sam import ModelConfig, get_model_config

# Dense bf16 peak per chip (no 2:4 sparsity), FLOP/s. Sources: NVIDIA A100 / H100 datasheets as summarised at
# glennklockwood.com/garden/processors/{A100,h100} (H200 is the same GH100 compute), Google Cloud TPU docs
# (cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e}).
PEAK_BF16 = {
    "A100": 312e12,
    "H100": 989.4e12,
    "H200": 989.4e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e reports its device_kind as "TPU v5 lite"
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> float | None:
    """The table entry whose name occurs in `device_kind` (e.g. "NVIDIA H100 80GB HBM3"), or None (CPU, unknown)."""
    matches = [k for k in PEAK_BF16 if k.lower() in device_kind.lower()]
    return PEAK_BF16[max(matches, key=len)] if matches else None


def encoder_flops(model_type: str | ModelConfig, *, global_attention: bool = True) -> float:
    """FLOPs of one image through the image encoder at cfg.img_size; global_attention=False leaves out the QK and
    AV products of the global blocks (the part the CPU's chunked attention computes inside a loop)."""
    cfg = get_model_config(model_type)
    d, g = cfg.encoder_embed_dim, cfg.image_embedding_size
    n = g * g
    macs = n * cfg.patch_size**2 * 3 * d  # patch embedding
    for i in range(cfg.encoder_depth):
        if i in cfg.encoder_global_attn_indexes:
            tokens, side, groups = n, g, 1
        else:  # SAM pads the grid to a multiple of the window before qkv, so qkv / proj run on the padding too
            side = cfg.window_size
            groups = math.ceil(g / side) ** 2
            tokens = side * side
        macs += groups * tokens * d * d * 4  # qkv, proj
        if global_attention or groups > 1:
            macs += groups * 2 * tokens * tokens * d  # QK + AV
        macs += groups * tokens * 2 * side * d  # rel-pos h and w
        macs += n * d * 4 * d * 2  # MLP (ratio 4) on the unpadded grid
    c = cfg.prompt_embed_dim
    macs += n * d * c + n * c * c * 9  # neck
    return 2.0 * macs
