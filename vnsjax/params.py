"""Parameter counts per module, with what a training recipe trains.

    python -m vnsjax.params --config configs/sam_finetune.py:token,vit_l [--config.KEY=VALUE ...] [--depth 2]
    python -m vnsjax.params --model-type vit_l --variant vns [--depth 2]

The first line after the model's name is stable for scripts: `trainable parameters: N (X.XX MiB)`, MiB of
float32 weights (N * 4 / 2**20), the unit of the paper's "Learnable Params (M)" column. `--config` takes any
training config with its overrides (what the recipe trains: vnsjax.training.optim); without it, the variant's
released training. Shapes only (nnx.eval_shape): nothing is initialised, so ViT-H costs no memory.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from typing import Any

import jax
from flax import nnx

from vnsjax.build_sam import MODEL_CONFIGS, VARIANTS, build_sam, get_model_config
from vnsjax.training import optim


def trainable_filter(variant: str) -> nnx.filterlib.Filter:
    """What the released training of a variant optimises (SAM: everything, as a whole-model fine-tune)."""
    return optim.released_filter(variant)


def count(state: nnx.State) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


def param_table(model: nnx.Module, trainable: str | nnx.filterlib.Filter, depth: int = 2) -> list[tuple[str, int, int]]:
    """Rows (module path truncated to `depth`, params, trainable params), in model order.

    `trainable`: a variant name (its released training) or an nnx filter.
    """
    wrt = trainable_filter(trainable) if isinstance(trainable, str) else trainable
    trainable_ids = {id(v) for _, v in nnx.to_flat_state(nnx.state(model, wrt))}
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name = ".".join(str(p) for p in path[:depth])
        rows[name][0] += var.size
        rows[name][1] += var.size if id(var) in trainable_ids else 0
    return [(k, n, t) for k, (n, t) in rows.items()]


def format_table(rows: list[tuple[str, int, int]]) -> str:
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'module':<{width}}{'params':>14}  trainable"]
    for name, n, t in rows:
        flag = "yes" if t == n else "no" if t == 0 else f"partial ({t:,})"
        lines.append(f"{name:<{width}}{n:>14,}  {flag}")
    total, trainable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines += [
        "-" * (width + 25),
        f"{'total':<{width}}{total:>14,}",
        f"{'trainable':<{width}}{trainable:>14,}",
        f"{'frozen':<{width}}{total - trainable:>14,}",
    ]
    return "\n".join(lines)


def summary_line(num_trainable: int) -> str:
    return f"trainable parameters: {num_trainable} ({num_trainable * 4 / 2**20:.2f} MiB)"


def recipe_model(config: Any) -> tuple[nnx.Module, nnx.filterlib.Filter]:
    """The (abstract) model a training config builds, and the filter of what it trains."""
    cfg = get_model_config(config.model_type)
    if config.encoder_adapter_ratio:
        cfg = dataclasses.replace(cfg, encoder_adapter_ratio=config.encoder_adapter_ratio)
    model = nnx.eval_shape(lambda: build_sam(cfg, config.variant))
    optim.check_spec(model, config.trainable)
    return model, optim.trainable_filter(config.trainable, config.variant, adapters=bool(config.encoder_adapter_ratio))


def load_config(spec: str, overrides: list[str]) -> Any:
    """`FILE[:ARG]` plus `--config.KEY=VALUE` overrides, parsed as `python -m vnsjax.train` parses them."""
    from absl import flags
    from ml_collections import config_flags

    argv = ["vnsjax.params", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "training config", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a training config FILE[:ARG]; --config.KEY=VALUE overrides follow it")
    parser.add_argument("--model-type", default="vit_l", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--variant", default="vns", choices=VARIANTS)
    parser.add_argument("--depth", type=int, default=2, help="module path depth of the table rows")
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith("--config.")]
    if len(overrides) != len(rest) or (overrides and not args.config):
        parser.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in overrides) or ' '.join(rest)}")
    if args.depth < 1:
        parser.error(f"--depth must be at least 1, got {args.depth}")
    if args.config:
        try:
            config = load_config(args.config, overrides)
            model, wrt = recipe_model(config)
        except Exception as e:  # a config the trainer would refuse too: one line, as the trainer prints it
            parser.error(f"--config {args.config}: {str(e).strip() or type(e).__name__}")
        extra = f", adapters {config.encoder_adapter_ratio:g}" if config.encoder_adapter_ratio else ""
        print(f"{config.model_type} / {config.variant} / trainable={config.trainable}{extra}")
    else:
        model = nnx.eval_shape(lambda: build_sam(args.model_type, args.variant))
        wrt = trainable_filter(args.variant)
        print(f"{args.model_type} / {args.variant}")
    rows = param_table(model, wrt, args.depth)
    print(summary_line(sum(r[2] for r in rows)))
    print(format_table(rows))


if __name__ == "__main__":
    main()
