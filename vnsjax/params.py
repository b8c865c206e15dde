"""Parameter counts per module, with what each variant trains.

    python -m vnsjax.params --model-type vit_l --variant vns [--depth 2]

Shapes only (nnx.eval_shape): nothing is initialised, so ViT-H costs no memory.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import jax
from flax import nnx

from vnsjax.build_sam import MODEL_CONFIGS, VARIANTS, build_sam, get_decoder_class


def trainable_filter(variant: str) -> nnx.filterlib.Filter:
    """What the released training of a variant optimises (SAM: everything, as a whole-model fine-tune)."""
    return get_decoder_class(variant).TRAINABLE


def count(state: nnx.State) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


def param_table(model: nnx.Module, variant: str, depth: int = 2) -> list[tuple[str, int, int]]:
    """Rows (module path truncated to `depth`, params, trainable params), in model order."""
    trainable_ids = {id(v) for _, v in nnx.to_flat_state(nnx.state(model, trainable_filter(variant)))}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="vit_l", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--variant", default="vns", choices=VARIANTS)
    parser.add_argument("--depth", type=int, default=2, help="module path depth of the table rows")
    args = parser.parse_args(argv)
    if args.depth < 1:
        parser.error(f"--depth must be at least 1, got {args.depth}")
    model = nnx.eval_shape(lambda: build_sam(args.model_type, args.variant))
    print(f"{args.model_type} / {args.variant}")
    print(format_table(param_table(model, args.variant, args.depth)))


if __name__ == "__main__":
    main()
