"""Official PyTorch SAM / HQ-SAM built at a vnsjax ModelConfig, with every tensor randomised."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import torch

from vnsjax.build_sam import ModelConfig

EMBEDDING = re.compile(
    r"(iou_token|mask_tokens|hf_token|point_embeddings\.\d|not_a_point_embed|no_mask_embed)\.weight$"
)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrites every parameter and buffer with seeded random values of a sensible scale.

    PyTorch initialises pos_embed and rel_pos to zero; parity with zeros there proves nothing.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point() or name.startswith("pixel_"):  # constants, not checkpoint tensors
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim == 1 and leaf == "weight":  # norm scales
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif "pos_embed" in name or "rel_pos" in name:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
            elif "gaussian_matrix" in name or EMBEDDING.search(name):
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                fan_in = int(np.prod(t.shape[1:]))
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(fan_in))
    return module


def build_torch_sam(cfg: ModelConfig, variant: str = "sam", seed: int = 0) -> torch.nn.Module:
    if variant == "hq":
        from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TwoWayTransformer
    else:
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    e = cfg.image_embedding_size
    encoder = ImageEncoderViT(
        depth=cfg.encoder_depth,
        embed_dim=cfg.encoder_embed_dim,
        img_size=cfg.img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=cfg.encoder_num_heads,
        patch_size=cfg.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=cfg.encoder_global_attn_indexes,
        window_size=cfg.window_size,
        out_chans=cfg.prompt_embed_dim,
    )
    prompt = PromptEncoder(
        embed_dim=cfg.prompt_embed_dim,
        image_embedding_size=(e, e),
        input_image_size=(cfg.img_size, cfg.img_size),
        mask_in_chans=16,
    )
    transformer = TwoWayTransformer(depth=2, embedding_dim=cfg.prompt_embed_dim, mlp_dim=2048, num_heads=8)
    kw = dict(
        num_multimask_outputs=3,
        transformer=transformer,
        transformer_dim=cfg.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    if variant == "hq":
        decoder = MaskDecoderHQ(vit_dim=cfg.encoder_embed_dim, **kw)
    else:
        decoder = MaskDecoder(**kw)
    sam = Sam(encoder, prompt, decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return randomize_(sam, seed).eval()


def torch_state_dict(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def torch_prompt_embeddings(
    prompt_encoder: torch.nn.Module, kind: str, n: int, img_size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse (n, T, C), dense (n, C, h, w) and image PE (1, C, h, w) from an official PromptEncoder.

    kind: "points" (3 labelled points + SAM's pad point), "box", or "mask" (a (n, 1, 4h, 4w) logit map only).
    """
    rng = np.random.default_rng(seed)
    points = boxes = masks = None
    if kind == "points":
        coords = torch.from_numpy(rng.uniform(0, img_size, (n, 3, 2)).astype(np.float32))
        points = (coords, torch.from_numpy(rng.integers(0, 2, (n, 3))))
    elif kind == "box":
        xy = np.sort(rng.uniform(0, img_size, (n, 2, 2)), axis=1)
        boxes = torch.from_numpy(xy.reshape(n, 4).astype(np.float32))
    elif kind == "mask":
        h = 4 * prompt_encoder.image_embedding_size[0]
        masks = torch.from_numpy(rng.standard_normal((n, 1, h, h)).astype(np.float32) * 4)
    else:
        raise ValueError(kind)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=masks)
        pe = prompt_encoder.get_dense_pe()
    return sparse.detach().numpy(), dense.detach().numpy(), pe.detach().numpy()
