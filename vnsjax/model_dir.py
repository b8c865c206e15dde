"""A converted model on disk: an orbax checkpoint of the NNX state plus `vnsjax.json`.

DIR/vnsjax.json   {"format": 1, "model_type": "vit_l", "variant": "vns", "config": {...}, "source": ...}
DIR/state/        orbax StandardCheckpointer of the model's full state (params, buffers, BN stats)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from vnsjax.build_sam import VARIANTS, ModelConfig, build_sam
from vnsjax.modeling.sam import Sam

FORMAT = 1
META = "vnsjax.json"


def save_model(model: Sam, directory: str | Path, *, source: dict[str, Any] | None = None) -> Path:
    """Writes `model` to `directory` (created; an existing converted model there is replaced)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(model))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "state", state, force=True)
    meta = {
        "format": FORMAT,
        "model_type": model.config.name,
        "variant": model.variant,
        "config": dataclasses.asdict(model.config),
        "source": source or {},
    }
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a converted vnsjax model: {META} is missing. "
            "Create one with `python -m convert_weights --checkpoint FILE.pth --output DIR`."
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("variant") not in VARIANTS:
        raise ValueError(f"{path}: unsupported format {meta.get('format')!r} / variant {meta.get('variant')!r}")
    return meta


def load_model(directory: str | Path) -> Sam:
    """Loads a model written by `save_model` / `python -m convert_weights`."""
    directory = Path(directory).absolute()
    meta = read_meta(directory)
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    abstract = nnx.eval_shape(lambda: build_sam(cfg, meta["variant"]))
    graphdef, abstract_state = nnx.split(abstract)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(abstract_state))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(directory / "state", target)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)


def state_digest(model: Sam) -> dict[str, float]:
    """Cheap fingerprint (sum of each top-level module's parameters), for logs and tests."""
    out = {}
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        leaves = jax.tree.leaves(nnx.state(getattr(model, name)))
        out[name] = float(sum(np.asarray(x, np.float64).sum() for x in leaves))
    return out
