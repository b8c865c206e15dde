"""User errors in a training config, found before any work: one `ConfigError` naming the field and what is expected.

`python -m vnsjax.train` prints a ConfigError as one `error: ...` line and exits 2; no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections as mlc

from vnsjax.build_sam import MODEL_CONFIGS
from vnsjax.model_dir import STATE, ModelDirError, read_meta, resolve
from vnsjax.modeling.precision import PRECISIONS


class ConfigError(ValueError):
    """A training config or command line the user must fix; the message names the field and what is expected."""


def unknown_key_message(config: mlc.ConfigDict, key: str) -> str:
    """`key` (dotted, as in --config.KEY) is not in `config` -> a message with the nearest valid keys."""
    node: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, mlc.ConfigDict) or part not in node:
            valid = sorted(node.keys()) if isinstance(node, mlc.ConfigDict) else []
            near = difflib.get_close_matches(part, valid, n=3, cutoff=0.6) or difflib.get_close_matches(
                part, valid, n=5, cutoff=0.0
            )
            where = "config" if i == 0 else "config." + ".".join(parts[:i])
            return f"--config.{key}: {where} has no field {part!r}; did you mean one of: {', '.join(near)}"
        node = node[part]
    return ""


def override_error(argv: Sequence[str], err: Exception, load_config: Any) -> str:
    """A failed flag parse -> one line: an unknown --config.KEY (with the keys near it), or the parser's message.

    `load_config(spec)` loads the --config file (`FILE[:ARG]`); ml_collections fails on an unknown override with
    chained KeyError / AttributeError tracebacks that never name the valid keys.
    """
    spec, keys = None, []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(args):
            spec = args[i + 1]
        elif arg.startswith("--config."):
            keys.append(arg[len("--config.") :].split("=", 1)[0])
    if spec is not None and keys:
        try:
            config = load_config(spec)
        except Exception as e:  # the config file itself is broken: that is the message
            return f"--config {spec}: {e}"
        for key in keys:
            if message := unknown_key_message(config, key):
                return message
    return str(err).strip("'\"") or type(err).__name__


def _positive_or_default(config: mlc.ConfigDict, field: str, default_means: str) -> None:
    value = config[field]
    if not isinstance(value, int) or (value < 1 and value != -1):
        raise ConfigError(f"config.{field} = {value!r}: expected a positive integer, or -1 for {default_means}")


def validate_config(config: mlc.ConfigDict) -> None:
    """Raises ConfigError for the first field a run could not start (or would silently misread) with."""
    if config.model_type not in MODEL_CONFIGS:
        raise ConfigError(f"config.model_type = {config.model_type!r}: expected one of {sorted(MODEL_CONFIGS)}")
    batch = config.batch_size
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"config.batch_size = {batch!r}: expected a positive integer (the global batch)")
    devices, processes = jax.device_count(), jax.process_count()
    if batch % devices or batch % processes:
        raise ConfigError(
            f"config.batch_size = {batch}: expected a multiple of the {devices} devices ({processes} processes)"
        )
    if config.precision not in PRECISIONS:
        raise ConfigError(f"config.precision = {config.precision!r}: expected one of {', '.join(PRECISIONS)}")
    _positive_or_default(config, "num_train_steps", "num_epochs * steps_per_epoch")
    _positive_or_default(config, "steps_per_epoch", "the training set's size // batch_size")
    if config.num_train_steps == -1 and (not isinstance(config.num_epochs, int) or config.num_epochs < 1):
        raise ConfigError(f"config.num_epochs = {config.num_epochs!r}: expected a positive integer")
    for field in ("checkpoint_every_steps", "eval_every_steps", "num_workers", "synthetic_images"):
        if not isinstance(config[field], int) or config[field] < 0:
            raise ConfigError(f"config.{field} = {config[field]!r}: expected an integer >= 0")
    if config.keep_checkpoints is not None and config.keep_checkpoints < 1:
        raise ConfigError(f"config.keep_checkpoints = {config.keep_checkpoints!r}: expected a positive integer")
    if config.data_dir and not Path(config.data_dir).is_dir():
        raise ConfigError(f"config.data_dir = {config.data_dir!r}: expected a VNS-SEG root directory; none there")
    if config.sam_checkpoint:
        check_model_dir(config.sam_checkpoint)
    check_recipe(config)


def check_recipe(config: mlc.ConfigDict) -> None:
    """The recipe fields (docs/training.md#recipes): variant, loss, trainable spec syntax, adapters, prompts."""
    from vnsjax.build_sam import VARIANTS
    from vnsjax.training import optim
    from vnsjax.training.state import variant_losses
    from vnsjax.training.step import PROMPTS

    if config.variant not in VARIANTS:
        raise ConfigError(f"config.variant = {config.variant!r}: expected one of {VARIANTS}")
    allowed = variant_losses(config.variant)
    if config.loss != "released" and config.loss not in allowed:
        raise ConfigError(
            f"config.loss = {config.loss!r}: the {config.variant} variant trains with 'released' or one of {allowed}"
        )
    if config.trainable != "released":
        try:
            optim.parse_spec(config.trainable)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    ratio = config.encoder_adapter_ratio
    if not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise ConfigError(f"config.encoder_adapter_ratio = {ratio!r}: expected 0 (no adapters) or a ratio in (0, 1]")
    if config.prompts not in PROMPTS:
        raise ConfigError(f"config.prompts = {config.prompts!r}: expected one of {sorted(PROMPTS)}")
    if config.prompts == "interactive" and config.variant != "sam":
        # Its lone-point rounds train SAM's multimask outputs, which the other decoders do not return.
        raise ConfigError(
            f"config.prompts = 'interactive': simulates SAM's training; config.variant is {config.variant!r}"
        )
    if not isinstance(config.refine_rounds, int) or config.refine_rounds < 0:
        raise ConfigError(f"config.refine_rounds = {config.refine_rounds!r}: expected an integer >= 0")
    if config.lr_schedule not in optim.SCHEDULES:
        raise ConfigError(f"config.lr_schedule = {config.lr_schedule!r}: expected one of {optim.SCHEDULES}")


def check_model_dir(directory: str) -> None:
    """A converted SAM model directory (vnsjax.json + state/); the message names the missing or corrupt file.

    Damaged weights inside state/ are found when the model loads (also a `ModelDirError`, caught by the command).
    """
    try:
        read_meta(directory)
    except ModelDirError as e:
        raise ConfigError(f"config.sam_checkpoint: {e}") from None
    if not (resolve(directory) / STATE).is_dir():
        raise ConfigError(f"config.sam_checkpoint: {resolve(directory) / STATE} is missing (the model's weights)")


def resume_changes(previous: dict[str, Any] | None, config: mlc.ConfigDict, ckpt_step: int, total_steps: int) -> dict:
    """What differs between the run a checkpoint was made by and this one, in the ways that make resuming wrong.

    `previous`: WORKDIR/config.json of the earlier run (None if absent). Returns {field: [before, now]}; raises
    ConfigError naming each change unless `config.allow_config_change`, in which case the caller records them.
    """
    changes: dict[str, list] = {}
    if previous is not None and previous.get("batch_size") != config.batch_size:
        changes["batch_size"] = [previous.get("batch_size"), config.batch_size]
    if total_steps < ckpt_step:
        changes["total_steps"] = [ckpt_step, total_steps]
    if changes and not config.allow_config_change:
        what = "; ".join(
            f"the checkpoint is at step {ckpt_step}, this run ends at step {now}"
            if field == "total_steps"
            else f"{field} was {before}, now {now}"
            for field, (before, now) in changes.items()
        )
        raise ConfigError(
            f"cannot resume: {what}. Use a new --workdir, or pass --config.allow_config_change=True to accept "
            "(recorded in config_changes.jsonl)"
        )
    return changes
