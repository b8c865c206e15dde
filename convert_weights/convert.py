"""Convert official PyTorch checkpoints (SAM, HQ-SAM, released VNS-SAM) to a vnsjax model directory."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from convert_weights.mapping import MappingError, load_state_dict
from convert_weights.output import check_output, write_model_dir
from vnsjax.build_sam import MODEL_CONFIGS, ModelConfig, build_sam
from vnsjax.modeling.sam import Sam

log = logging.getLogger("convert_weights")

ENC = "image_encoder."
DEC = "mask_decoder."


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) -> flat {key: float32 ndarray} with `module.` prefixes stripped.

    weights_only: a pickle that would run code (or build any object but tensors and containers) is refused, not run.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a PyTorch checkpoint file (.pth)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; expected a PyTorch checkpoint")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("Converting needs PyTorch: pip install 'vnsjax[convert]'") from e
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing on a plain pickle
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"unsupported GLOBAL (\S+)", str(e))
        if found:
            raise ValueError(
                f"{path}: refused: the file holds Python objects other than tensors ({found.group(1)}). It was read "
                "without running any of its code (weights_only); only plain state_dicts of tensors convert"
            ) from e
        # torch wraps the cause between two paragraphs of advice that does not apply here.
        parts = str(e).split("\n\n")
        raise ValueError(f"{path}: not a PyTorch checkpoint ({parts[1] if len(parts) > 2 else parts[0][:200]})") from e
    except Exception as e:  # torch reports damage as RuntimeError, EOFError, struct.error, ...
        first = str(e).strip().split(". ")[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a PyTorch checkpoint, or a damaged/truncated one ({first})") from e
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


def check_finite(sd: dict[str, np.ndarray]) -> None:
    """Refuses NaN / inf weights: they would convert silently and give NaN masks."""
    bad = {}
    for key, value in sd.items():
        if np.issubdtype(value.dtype, np.floating):
            n = int(value.size - np.count_nonzero(np.isfinite(value)))
            if n:
                bad[key] = n
    if bad:
        listed = ", ".join(f"{k} ({n} values)" for k, n in list(bad.items())[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"NaN or inf values in {len(bad)} tensor(s): {listed}{more}; refusing to convert")


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
    """Reads the encoder geometry off the tensor shapes; names it when it is a known size ("custom" otherwise)."""
    for key in (ENC + "patch_embed.proj.weight", ENC + "pos_embed"):
        if key not in sd:
            raise ValueError(f"cannot read the encoder geometry: {key} is missing")
    c, _, patch, _ = sd[ENC + "patch_embed.proj.weight"].shape
    grid = sd[ENC + "pos_embed"].shape[1]
    found = sorted({int(k.split(".")[2]) for k in sd if k.startswith(ENC + "blocks.")})
    if not found:
        raise ValueError("the image encoder has no blocks (no image_encoder.blocks.* keys)")
    depth = found[-1] + 1
    if len(found) != depth:
        gaps = sorted(set(range(depth)) - set(found))
        raise ValueError(f"encoder blocks {gaps} are missing (found {len(found)} blocks, numbered up to {depth - 1})")
    rel = [f"{ENC}blocks.{i}.attn.rel_pos_h" for i in range(depth)]
    if any(k not in sd for k in rel):
        raise ValueError(f"cannot read the encoder geometry: {next(k for k in rel if k not in sd)} is missing")
    rows = [sd[k].shape[0] for k in rel]
    head_dim = sd[rel[0]].shape[1]
    global_idx = tuple(i for i, r in enumerate(rows) if r == 2 * grid - 1)
    window_rows = [r for r in rows if r != 2 * grid - 1]
    window = (window_rows[0] + 1) // 2 if window_rows else 14
    cfg = ModelConfig("custom", int(c), depth, int(c // head_dim), global_idx, int(grid * patch), int(patch), window)
    for name, known in MODEL_CONFIGS.items():
        if dataclasses.replace(cfg, name=name) == known:
            cfg = known
    adapter = sd.get(ENC + "blocks.0.adapter.down.weight")  # a vnsjax adapter model exported to PyTorch
    if adapter is not None:
        cfg = dataclasses.replace(cfg, encoder_adapter_ratio=adapter.shape[0] / c)
    return cfg


def describe_geometry(cfg: ModelConfig) -> str:
    return (
        f"depth {cfg.encoder_depth}, width {cfg.encoder_embed_dim}, {cfg.encoder_num_heads} heads, "
        f"global blocks {list(cfg.encoder_global_attn_indexes)}, image {cfg.img_size}, patch {cfg.patch_size}, "
        f"window {cfg.window_size}"
    )


def _unknown_geometry(cfg: ModelConfig) -> str:
    fields = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "name"]

    def differing(known: ModelConfig) -> list[str]:
        return [f for f in fields if getattr(cfg, f) != getattr(known, f)]

    nearest = min(MODEL_CONFIGS.values(), key=lambda k: len(differing(k)))
    return (
        f"the encoder matches no known model type: found {describe_geometry(cfg)}; the nearest, {nearest.name}, "
        f"has {describe_geometry(nearest)}. A block or tensor may be missing from the checkpoint. "
        "If this geometry is intended, pass --model-type custom"
    )


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
        if sam_checkpoint is not None:
            log.warning(
                "--sam-checkpoint %s is not used: this is a full %s checkpoint with its own SAM weights "
                "(the option is only for a decoder-only VNS-SAM epoch_N.pth); it is not recorded as a source",
                sam_checkpoint,
                kind,
            )
        return sd, kind, info
    if sam_checkpoint is None:
        raise ValueError("this is a decoder-only VNS-SAM file (epoch_N.pth); pass the SAM base with --sam-checkpoint")
    base = read_torch_checkpoint(sam_checkpoint)
    base_kind = detect_kind(base)
    if base_kind != "sam":
        raise ValueError(f"--sam-checkpoint {sam_checkpoint}: expected a plain SAM checkpoint, got {base_kind}")
    try:
        check_finite(base)
    except ValueError as e:
        raise ValueError(f"--sam-checkpoint {sam_checkpoint}: {e}") from e
    info["sam_checkpoint"] = Path(sam_checkpoint).name
    info["sam_checkpoint_sha256"] = _sha256(sam_checkpoint)
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
    """A PyTorch state_dict -> a loaded vnsjax model and a report.

    model_type "auto" accepts the known model types only; "custom" also accepts any other consistent geometry.
    """
    check_finite(sd)
    sd, variant, info = build_state_dict(sd, sam_checkpoint)
    cfg = infer_config(sd)
    if cfg.name == "custom" and model_type != "custom":
        raise ValueError(_unknown_geometry(cfg))
    if model_type not in ("auto", "custom") and model_type != cfg.name:
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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Converts one checkpoint file into the model directory `output` (see `convert_weights.output` for the rules).

    Errors about the checkpoint's content are ValueErrors that start with its path.
    """
    check_output(output, overwrite=overwrite)
    sd = read_torch_checkpoint(checkpoint)
    try:
        model, info = convert_state_dict(sd, model_type=model_type, sam_checkpoint=sam_checkpoint)
    except ValueError as e:
        raise type(e)(f"{checkpoint}: {e}") from e
    info["checkpoint"] = Path(checkpoint).name
    info["sha256"] = _sha256(checkpoint)
    write_model_dir(model, output, source=info, overwrite=overwrite)
    return info


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
