"""Serialises a model's image encoder and prompt decoder with `jax.export`, weights baked in as constants.

    python -m vnsjax.export --checkpoint DIR --out model.vnsjax [--platforms cpu,cuda,tpu] [--precision bf16]

The bundle is a zip: `meta.json` (img_size, variant, mask size, feature and prompt signatures) and one
serialised `jax.export.Exported` per function:

    encoder.bin         (image (1, S, S, 3) float32 0..255 padded bottom/right, hw (1, 2) int32) -> features
    decoder_multi.bin   (features, *prompts) -> (low-res mask logits (b, 3, 4h, 4w), scores (b, 3))
    decoder_single.bin  same with one mask per prompt ((b, 1, 4h, 4w), (b, 1))

features: a dict of the per-image arrays the decoder reads, names in `meta["features"]`: "embedding" and the
mask decoder's own per-image features (HQ-SAM: "hq_features" (1, 4h, 4w, 32); VNS-SAM: the NSFM "nsfm_m",
"nsfm_g"), so everything prompt-independent runs once per image, in the encoder. prompts: coords (b, n, 2) in
the padded input frame, labels (b, n) int32 (1 fg, 0 bg, -1 SAM's not-a-point, -10 padding), boxes (b, 4),
box_valid (b,), mask_input (b, 4h, 4w) logits, mask_valid (b,). The number of prompts b and of points n are
symbolic, so one blob serves any prompt batch.

`load_exported(FILE)` needs only jax (`jax.export.deserialize`), not this package's model code."""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vnsjax.utils.outputs import OutputError, OutputFile

FORMAT = 2  # 2: features by name, the decoder's own per-image features (1: a tuple incl. the encoder's interm maps)
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
PROMPT_NAMES = ("coords", "labels", "boxes", "box_valid", "mask_input", "mask_valid")


def export_model(
    model,
    *,
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS,
    hq_token_only: bool = False,
    precision: str | None = None,
) -> bytes:
    """Exports `model` (any variant, run in inference mode; `model` is not changed) and returns the bundle's bytes.

    precision: "highest" | "default" | "bf16" baked into the programs (None: the model's own); meta.json records it.
    """
    from vnsjax.modeling.precision import get_precision, set_precision
    from vnsjax.modeling.sam import Features, Prompts, eval_view

    model = eval_view(model)
    if precision is not None:
        set_precision(model, precision)  # on the view: the caller's model keeps its own setting
    s = model.img_size
    mh, mw = model.prompt_encoder.mask_input_size
    options = type(model.mask_decoder).options_for(hq_token_only=hq_token_only)

    # The model is closed over, so its parameters are lowered as constants of the exported programs.
    def encode(image: jax.Array, hw: jax.Array) -> dict[str, jax.Array]:
        features = model.image_features(image, hw)
        return {"embedding": features.embedding, **features.decoder}

    image_spec = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
    hw_spec = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    enc = jax.export.export(jax.jit(encode), platforms=platforms)(image_spec, hw_spec)
    feature_specs = jax.tree.unflatten(enc.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in enc.out_avals])

    b, n = jax.export.symbolic_shape("b, n")
    prompt_specs = [
        jax.ShapeDtypeStruct((b, n, 2), jnp.float32),
        jax.ShapeDtypeStruct((b, n), jnp.int32),
        jax.ShapeDtypeStruct((b, 4), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.bool_),
        jax.ShapeDtypeStruct((b, mh, mw), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.bool_),
    ]
    blobs = {"encoder.bin": enc.serialize()}
    for name, multimask in (("decoder_multi.bin", True), ("decoder_single.bin", False)):

        def dec(features: dict[str, jax.Array], *prompts: jax.Array, multimask: bool = multimask):
            decoder_features = {k: v for k, v in features.items() if k != "embedding"}
            out = model.decode(
                Features(features["embedding"], decoder_features),
                Prompts(*prompts),
                multimask_output=multimask,
                **options,
            )
            return out.masks, out.iou_predictions

        blobs[name] = jax.export.export(jax.jit(dec), platforms=platforms)(feature_specs, *prompt_specs).serialize()

    meta = {
        "format": FORMAT,
        "variant": model.variant,
        "model_type": model.config.name,
        "img_size": s,
        "mask_size": [mh, mw],
        "mask_threshold": float(model.mask_threshold),
        "image_format": model.image_format,
        "pixel_mean_std_applied_inside": True,
        "features": sorted(feature_specs),
        "prompts": list(PROMPT_NAMES),
        "platforms": list(platforms),
        "hq_token_only": hq_token_only,
        "precision": get_precision(model),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.json", json.dumps(meta, indent=2))
        for name, blob in blobs.items():
            z.writestr(name, bytes(blob))
    return buf.getvalue()


@dataclass
class ExportedSam:
    """A loaded bundle: `encode` once per image, `decode` per prompt batch. Runs without vnsjax's model code."""

    meta: dict[str, Any]
    encoder: Any  # jax.export.Exported
    decoder_multi: Any
    decoder_single: Any

    @property
    def img_size(self) -> int:
        return int(self.meta["img_size"])

    def encode(self, image_padded: np.ndarray, hw: tuple[int, int] | np.ndarray | None = None) -> dict[str, jax.Array]:
        """image_padded: (S, S, 3) or (1, S, S, 3), 0..255 RGB resized to the long side and zero-padded;
        hw: the size before padding (default: the whole square). Returns the features `meta["features"]` by name."""
        x = jnp.asarray(image_padded, jnp.float32)
        if x.ndim == 3:
            x = x[None]
        hw = np.array([self.img_size] * 2 if hw is None else hw, np.int32).reshape(1, 2)
        return self.encoder.call(x, jnp.asarray(hw))

    def decode(
        self,
        features: dict[str, jax.Array],
        coords: np.ndarray,
        labels: np.ndarray,
        boxes: np.ndarray | None = None,
        box_valid: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        mask_valid: np.ndarray | None = None,
        *,
        multimask_output: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """b prompts (input-frame coordinates) -> low-res mask logits (b, C, 4h, 4w) and scores (b, C).

        Absent boxes / masks default to "not given" (zeros with a False valid flag). For a point-only prompt
        append SAM's not-a-point (label -1) as the original prompt encoder does when no box is given.
        """
        coords = np.asarray(coords, np.float32)
        b = coords.shape[0]
        mh, mw = self.meta["mask_size"]
        args = (
            coords,
            np.asarray(labels, np.int32),
            np.zeros((b, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32),
            np.asarray(boxes is not None if box_valid is None else box_valid, bool) * np.ones(b, bool),
            np.zeros((b, mh, mw), np.float32) if mask_input is None else np.asarray(mask_input, np.float32),
            np.asarray(mask_input is not None if mask_valid is None else mask_valid, bool) * np.ones(b, bool),
        )
        fn = self.decoder_multi if multimask_output else self.decoder_single
        return tuple(fn.call(features, *(jnp.asarray(a) for a in args)))


def load_exported(path: str | Path) -> ExportedSam:
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("meta.json"))
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path}: export format {meta.get('format')!r}, this version reads format {FORMAT}; "
                "export the model again with `python -m vnsjax.export`"
            )
        names = ("encoder", "decoder_multi", "decoder_single")
        blobs = {n: jax.export.deserialize(bytearray(z.read(f"{n}.bin"))) for n in names}
    return ExportedSam(meta, **blobs)


def _is_bundle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("meta.json")).get("format") == FORMAT
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def main(argv: list[str] | None = None) -> int:
    from vnsjax.modeling.precision import add_precision_flag

    p = argparse.ArgumentParser(prog="python -m vnsjax.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="converted model directory (python -m convert_weights)")
    p.add_argument("--out", required=True, help="bundle file to write (new, or an earlier bundle to replace)")
    p.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS), help="comma-separated lowering targets")
    p.add_argument("--hq-token-only", action="store_true", help="HQ-SAM: return the HQ mask only")
    add_precision_flag(p)
    args = p.parse_args(argv)
    platforms = tuple(args.platforms.split(","))
    if not platforms or not set(platforms) <= set(PLATFORMS):
        p.error(f"--platforms takes a comma-separated subset of {', '.join(PLATFORMS)}, got {args.platforms!r}")
    from vnsjax.build_sam import get_decoder_class
    from vnsjax.model_dir import load_model, read_meta

    try:
        variant = read_meta(args.checkpoint)["variant"]
        if args.hq_token_only and "hq_token_only" not in get_decoder_class(variant).OPTIONS:
            raise ValueError(f"--hq-token-only applies to HQ-SAM models; {args.checkpoint} is a {variant} model")
        out = OutputFile(args.out, "a vnsjax export bundle", _is_bundle)
    except (OSError, ValueError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        model = load_model(args.checkpoint)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    data = export_model(model, platforms=platforms, hq_token_only=args.hq_token_only, precision=args.precision)
    try:
        out.write(data)
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported {model.variant} ({model.config.name}, {args.precision}) -> {out.path} ({len(data) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
