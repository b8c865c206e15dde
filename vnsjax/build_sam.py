"""Model configurations, the decoder registry and builders (segment_anything/build_sam.py).

`DECODERS` is the one place that maps a variant name to its mask decoder. Everything else about a variant is
on the decoder class (vnsjax.modeling.mask_decoder): what it computes per image (`FEATURES`), the options its
call takes (`OPTIONS`) and what its training optimises (`TRAINABLE`). A new variant is its decoder module plus
one line here.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from vnsjax.modeling.adapter import add_adapters
from vnsjax.modeling.image_encoder import ImageEncoderViT, set_attention
from vnsjax.modeling.mask_decoder import MaskDecoder
from vnsjax.modeling.mask_decoder_hq import MaskDecoderHQ
from vnsjax.modeling.precision import set_precision
from vnsjax.modeling.prompt_encoder import PromptEncoder
from vnsjax.modeling.sam import Sam
from vnsjax.modeling.vns_decoder import ABLATIONS, VnsDecoder, ablation_variant

DECODERS: dict[str, type[MaskDecoder]] = {
    "sam": MaskDecoder,
    "hq": MaskDecoderHQ,
    "vns": VnsDecoder,
    # VNS-SAM ablation decoders (paper Tab. VI-X), one VnsDecoder configured by a VnsAblation each.
    **{f"vns_{name}": ablation_variant(name) for name in ABLATIONS},
}
VARIANTS = tuple(DECODERS)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    # Bottleneck adapters in every encoder block, hidden width = ratio * width (vnsjax.modeling.adapter); 0: none.
    encoder_adapter_ratio: float = 0.0

    @property
    def image_embedding_size(self) -> int:
        return self.img_size // self.patch_size


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "vit_b": ModelConfig("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ModelConfig("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ModelConfig("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # Test/demo size: same code paths (window padding, 4 global blocks) at a fraction of the cost.
    "tiny": ModelConfig("tiny", 32, 8, 2, (1, 3, 5, 7), img_size=256, window_size=6),
    # The shipped pre-trained base (docs/base_model.md): tiny's layout at twice the encoder width.
    "mini": ModelConfig("mini", 64, 8, 4, (1, 3, 5, 7), img_size=256, window_size=6),
}


def get_model_config(model_type: str | ModelConfig) -> ModelConfig:
    if isinstance(model_type, ModelConfig):
        return model_type
    if model_type not in MODEL_CONFIGS:
        raise ValueError(f"Unknown model type {model_type!r}; expected one of {sorted(MODEL_CONFIGS)}.")
    return MODEL_CONFIGS[model_type]


def build_image_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> ImageEncoderViT:
    return ImageEncoderViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.encoder_embed_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads,
        out_chans=cfg.prompt_embed_dim,
        window_size=cfg.window_size,
        global_attn_indexes=cfg.encoder_global_attn_indexes,
        rngs=rngs,
    )


def build_prompt_encoder(cfg: ModelConfig, rngs: nnx.Rngs) -> PromptEncoder:
    e = cfg.image_embedding_size
    return PromptEncoder(
        embed_dim=cfg.prompt_embed_dim,
        image_embedding_size=(e, e),
        input_image_size=(cfg.img_size, cfg.img_size),
        mask_in_chans=16,
        rngs=rngs,
    )


def get_decoder_class(variant: str) -> type[MaskDecoder]:
    if variant not in DECODERS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {VARIANTS}.")
    return DECODERS[variant]


def build_mask_decoder(cfg: ModelConfig, variant: str, rngs: nnx.Rngs) -> MaskDecoder:
    return get_decoder_class(variant).build(
        transformer_dim=cfg.prompt_embed_dim, vit_dim=cfg.encoder_embed_dim, rngs=rngs
    )


def build_sam(
    model_type: str | ModelConfig = "vit_b",
    variant: str = "sam",
    *,
    seed: int = 0,
    precision: str = "highest",
    attention: str = "auto",
) -> Sam:
    """Builds a randomly initialised model; load weights with vnsjax.load_model or the converter.

    precision: "highest" | "default" | "bf16" (vnsjax.modeling.precision); attention: "auto" or an encoder
    attention implementation (vnsjax.modeling.attention). Both can be changed later with set_precision /
    set_attention.
    """
    cfg = get_model_config(model_type)
    rngs = nnx.Rngs(seed)
    model = Sam(
        build_image_encoder(cfg, rngs),
        build_prompt_encoder(cfg, rngs),
        build_mask_decoder(cfg, variant, rngs),
        config=cfg,
        variant=variant,
    )
    if cfg.encoder_adapter_ratio:
        # Drawn last, so the base weights equal those of the same seed without adapters.
        add_adapters(model.image_encoder, cfg.encoder_adapter_ratio, rngs=rngs)
    return set_attention(set_precision(model, precision), attention)
