"""A converted model on disk: an orbax checkpoint of the NNX state plus `vnsjax.json`.

DIR/vnsjax.json   {"format": 1, "model_type": "vit_l", "variant": "vns", "config": {...}, "source": ...}
DIR/state/        orbax StandardCheckpointer of the model's full state (params, buffers, BN stats)

Wherever a model directory is read, `builtin:NAME` names one shipped inside the package (`BUILTIN`), e.g.
`vnsjax.load_model("builtin:sam_mini_salient")` or `--config.sam_checkpoint=builtin:sam_mini_salient`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from vnsjax.build_sam import VARIANTS, ModelConfig, build_sam
from vnsjax.modeling.precision import set_precision
from vnsjax.modeling.sam import Sam

FORMAT = 1
META = "vnsjax.json"
STATE = "state"

BUILTIN_PREFIX = "builtin:"
# Models shipped in vnsjax/assets/NAME (package data): name -> what it is.
BUILTIN = {
    "sam_mini_salient": "SAM 'mini' pre-trained from scratch on synthetic salient scenes (docs/base_model.md)",
}
DEFAULT_BASE = BUILTIN_PREFIX + "sam_mini_salient"  # the base of configs/demo.py and the web demo


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or damaged; the message names the file."""


def _not_orbax_echo(record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    if "exception was never retrieved" not in msg:
        return True
    tb = record.exc_info[2] if record.exc_info else None
    return not ("orbax" in msg or any("orbax" in frame.filename for frame in traceback.extract_tb(tb)))


def _not_orbax_worker_error(record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)


@contextlib.contextmanager
def quiet_orbax_failures() -> Iterator[None]:
    """Keeps one failed orbax read or write from printing hundreds of lines; the exception itself still propagates.

    On the first failed tensorstore operation orbax closes its private event loop while the others are in flight.
    Each of their completions then reports `RuntimeError: Event loop is closed` through sys.unraisablehook, each of
    their tasks logs "... exception was never retrieved", and orbax's worker threads log the failure with a
    traceback. The first two can arrive after the call has returned, so their filters stay installed; they drop
    nothing else.
    """
    if not getattr(sys.unraisablehook, "vnsjax_quiet", False):
        previous = sys.unraisablehook

        def hook(arg) -> None:  # noqa: ANN001 - sys.UnraisableHookArgs is not importable
            if not (isinstance(arg.exc_value, RuntimeError) and str(arg.exc_value) == "Event loop is closed"):
                previous(arg)

        hook.vnsjax_quiet = True
        sys.unraisablehook = hook
        logging.getLogger("asyncio").addFilter(_not_orbax_echo)
    logging.getLogger("absl").addFilter(_not_orbax_worker_error)
    try:
        yield
    finally:
        logging.getLogger("absl").removeFilter(_not_orbax_worker_error)


def resolve(directory: str | os.PathLike) -> Path:
    """A model directory's path: `builtin:NAME` is the package's copy of a `BUILTIN` model, anything else a path."""
    text = os.fspath(directory)
    if not text.startswith(BUILTIN_PREFIX):
        return Path(directory)
    name = text[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN:
        raise ModelDirError(
            f"{text}: no such built-in model; expected one of {', '.join(BUILTIN_PREFIX + n for n in BUILTIN)}"
        )
    return Path(__file__).resolve().parent / "assets" / name


def save_model(model: Sam, directory: str | Path, *, source: dict[str, Any] | None = None) -> Path:
    """Writes `model` to `directory` (created; an existing converted model there is replaced)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(model))
    with quiet_orbax_failures(), ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / STATE, state, force=True)
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
    """`vnsjax.json` of a model directory, checked; any problem is a `ModelDirError` naming the file."""
    directory = resolve(directory)
    path = directory / META
    if not directory.is_dir():
        raise ModelDirError(
            f"{directory}: no such model directory. "
            "Create one with `python -m convert_weights --checkpoint FILE.pth --output DIR`."
        )
    if not path.is_file():
        raise ModelDirError(
            f"{directory} is not a converted vnsjax model: {META} is missing. "
            "Create one with `python -m convert_weights --checkpoint FILE.pth --output DIR`."
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelDirError(f"{path}: not a readable {META} ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("variant") not in VARIANTS:
        got = meta if not isinstance(meta, dict) else f"format {meta.get('format')!r} / variant {meta.get('variant')!r}"
        raise ModelDirError(f"{path}: expected format {FORMAT} and a variant (one of {', '.join(VARIANTS)}), got {got}")
    config = meta.get("config")
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    if not isinstance(config, dict):
        raise ModelDirError(f"{path}: no 'config' object (the model geometry: {', '.join(fields)})")
    missing = [k for k, f in fields.items() if f.default is dataclasses.MISSING and k not in config]
    unknown = sorted(set(config) - set(fields))
    if missing or unknown:
        found = "; ".join(f"{what} {', '.join(k)}" for what, k in (("lacks", missing), ("has unknown", unknown)) if k)
        raise ModelDirError(f"{path}: 'config' {found} (expected {', '.join(fields)})")
    return meta


def load_model(directory: str | Path, *, precision: str | None = None) -> Sam:
    """Loads a model written by `save_model` / `python -m convert_weights` (or `builtin:NAME`); problems raise
    `ModelDirError`.

    precision: "highest" | "default" | "bf16" for this model (vnsjax.modeling.precision); None builds it at
    "highest". It is a setting of the loaded modules only: models loaded or built elsewhere keep theirs.
    """
    directory = resolve(directory).absolute()
    meta = read_meta(directory)
    try:
        cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
        abstract = nnx.eval_shape(lambda: build_sam(cfg, meta["variant"]))
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ModelDirError(f"{directory / META}: 'config' does not describe a buildable model ({e})") from e
    graphdef, abstract_state = nnx.split(abstract)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(abstract_state))
    try:
        with quiet_orbax_failures(), ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(directory / STATE, target)
    except Exception as e:  # tensorstore, orbax and OS errors share no base class
        # tensorstore appends its whole JSON spec to the message; the cause is before it.
        reason = str(e).split(" [tensorstore_spec=")[0]
        raise ModelDirError(
            f"{directory / STATE}: the weights are missing or damaged ({type(e).__name__}: {reason}); "
            "convert the checkpoint again"
        ) from e
    nnx.replace_by_pure_dict(abstract_state, restored)
    model = nnx.merge(graphdef, abstract_state)
    return model if precision is None else set_precision(model, precision)


def state_digest(model: Sam) -> dict[str, float]:
    """Cheap fingerprint (sum of each top-level module's parameters), for logs and tests."""
    out = {}
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        leaves = jax.tree.leaves(nnx.state(getattr(model, name)))
        out[name] = float(sum(np.asarray(x, np.float64).sum() for x in leaves))
    return out
