"""Convert official PyTorch checkpoints (SAM, HQ-SAM, released VNS-SAM) to a vnsjax model directory."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from convert_weights.mapping import MappingError, load_state_dict
from vnsjax.build_sam import MODEL_CONFIGS, ModelConfig, build_sam
from vnsjax.model_dir import save_model
from vnsjax.modeling.sam import Sam

log = logging.getLogger("convert_weights")

ENC = "image_encoder."
DEC = "mask_decoder."


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) -> flat {key: float32 ndarray} with `module.` prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("Converting needs PyTorch: pip install 'vnsjax[convert]'") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
    return out


def detect_kind(sd: dict[str, Any]) -> str:
    """'sam' | 'hq' | 'vns' (full checkpoints) or 'vns_decoder' (a decoder-only epoch_N.pth)."""
    has_encoder = ENC + "patch_embed.proj.weight" in sd
    if has_encoder:
        hf = sd.get(DEC + "hf_token.weight")
        if hf is None:
            return "sam"
        return "vns" if hf.shape[0] == 2 or any(k.startswith(DEC + "neck.") for k in sd) else "hq"
    dec = {k[len(DEC) :] if k.startswith(DEC) else k: v for k, v in sd.items()}
    if "hf_token.weight" in dec and any(k.startswith("neck.aggregator.") for k in dec):
        return "vns_decoder"
    if "iou_token.weight" in dec:
        raise ValueError(
            "this is a mask-decoder-only file (like sam_vit_l_maskdecoder.pth) without VNS modules; "
            "convert the full SAM checkpoint instead"
        )
    raise ValueError("not a SAM, HQ-SAM or VNS-SAM checkpoint: no image_encoder.* or VNS decoder keys found")


def infer_config(sd: dict[str, np.ndarray]) -> ModelConfig:
    """Reads the encoder geometry off the tensor shapes; names it when it is a known size."""
    c, _, patch, _ = sd[ENC + "patch_embed.proj.weight"].shape
    grid = sd[ENC + "pos_embed"].shape[1]
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith(ENC + "blocks."))
    rows = [sd[f"{ENC}blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
    head_dim = sd[ENC + "blocks.0.attn.rel_pos_h"].shape[1]
    global_idx = tuple(i for i, r in enumerate(rows) if r == 2 * grid - 1)
    window_rows = [r for r in rows if r != 2 * grid - 1]
    window = (window_rows[0] + 1) // 2 if window_rows else 14
    cfg = ModelConfig("custom", int(c), depth, int(c // head_dim), global_idx, int(grid * patch), int(patch), window)
    for name, known in MODEL_CONFIGS.items():
        if dataclasses.replace(cfg, name=name) == known:
            return known
    return cfg


def check_frozen_copy(decoder_sd: dict[str, np.ndarray], sam_sd: dict[str, np.ndarray]) -> float:
    """Max |difference| between the VNS file's frozen SAM-decoder copy and the SAM base's decoder."""
    diffs = [float(np.abs(v - sam_sd[DEC + k]).max()) for k, v in decoder_sd.items() if DEC + k in sam_sd and v.size]
    return max(diffs, default=0.0)


def build_state_dict(
    sd: dict[str, np.ndarray], sam_checkpoint: str | Path | None
) -> tuple[dict[str, np.ndarray], str, dict[str, Any]]:
    kind = detect_kind(sd)
    info: dict[str, Any] = {"kind": kind}
    if kind != "vns_decoder":
        return sd, kind, info
    if sam_checkpoint is None:
        raise ValueError("this is a decoder-only VNS-SAM file (epoch_N.pth); pass the SAM base with --sam-checkpoint")
    base = read_torch_checkpoint(sam_checkpoint)
    if detect_kind(base) != "sam":
        raise ValueError(f"--sam-checkpoint {sam_checkpoint}: expected a plain SAM checkpoint, got {detect_kind(base)}")
    decoder = {k[len(DEC) :] if k.startswith(DEC) else k: v for k, v in sd.items()}
    diff = check_frozen_copy(decoder, base)
    info["frozen_decoder_max_abs_diff"] = diff
    if diff > 0:
        log.warning(
            "the VNS file's copy of SAM's mask decoder differs from %s (max |diff| %.3g); "
            "using the VNS file's copy, as the released evaluation does",
            sam_checkpoint,
            diff,
        )
    merged = {k: v for k, v in base.items() if not k.startswith(DEC)}
    merged.update({DEC + k: v for k, v in decoder.items()})
    return merged, "vns", info


def convert_state_dict(
    sd: dict[str, np.ndarray], *, model_type: str = "auto", sam_checkpoint: str | Path | None = None
) -> tuple[Sam, dict[str, Any]]:
    """A PyTorch state_dict -> a loaded vnsjax model and a report."""
    sd, variant, info = build_state_dict(sd, sam_checkpoint)
    cfg = infer_config(sd)
    if model_type != "auto" and model_type != cfg.name:
        raise ValueError(f"--model-type {model_type} given, but the checkpoint's shapes are those of {cfg.name}")
    # Shapes only: every variable is then filled from the checkpoint (strict), so no random init is paid.
    model = nnx.eval_shape(lambda: build_sam(cfg, variant))
    try:
        unmapped, missing = load_state_dict(model, sd, strict=True)
    except MappingError as e:
        raise MappingError(f"cannot convert this {variant} checkpoint ({cfg.name}):\n{e}") from e
    info.update(model_type=cfg.name, variant=variant, num_tensors=len(sd), unmapped=unmapped, missing=missing)
    return model, info


def convert_file(
    checkpoint: str | Path,
    output: str | Path,
    *,
    model_type: str = "auto",
    sam_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    sd = read_torch_checkpoint(checkpoint)
    model, info = convert_state_dict(sd, model_type=model_type, sam_checkpoint=sam_checkpoint)
    info["checkpoint"] = Path(checkpoint).name
    info["sha256"] = _sha256(checkpoint)
    if sam_checkpoint is not None:
        info["sam_checkpoint"] = Path(sam_checkpoint).name
    save_model(model, output, source=info)
    return info


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
