"""One precision switch for every matmul, convolution and einsum of the modeling code.

  highest  float32 operands at full float32 precision: the parity mode (what the CPU always does; GPUs would
           otherwise use TF32 and TPUs one bf16 pass for float32 matmuls).
  default  float32 operands at the backend's default matmul precision (TF32 on GPU, one bf16 pass on TPU).
  bf16     bfloat16 operands and activations, float32 accumulation; LayerNorm/BatchNorm statistics and
           softmax in float32. Parameters stay float32 (cast per use), so one checkpoint serves every mode.

The setting lives on the modules as static fields, so a jitted program captures it at trace time; change it with
`set_precision` before jitting (a changed model is a new graphdef and recompiles). See docs/precision.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

PRECISIONS = ("highest", "default", "bf16")


@dataclasses.dataclass(frozen=True)
class Numerics:
    """What a precision name means for one op: operand dtype (None: keep the operands') and matmul precision."""

    name: str
    dtype: Any
    precision: jax.lax.Precision

    def einsum(self, spec: str, *operands: jax.Array, out_dtype: Any = None) -> jax.Array:
        """jnp.einsum accumulating in float32; the result is cast to `out_dtype` (default: the operand dtype)."""
        if self.dtype is not None:
            operands = tuple(jnp.asarray(o, self.dtype) for o in operands)
        y = jnp.einsum(spec, *operands, precision=self.precision, preferred_element_type=jnp.float32)
        return y.astype(out_dtype or jnp.result_type(*operands))


NUMERICS = {
    "highest": Numerics("highest", None, jax.lax.Precision.HIGHEST),
    "default": Numerics("default", None, jax.lax.Precision.DEFAULT),
    "bf16": Numerics("bf16", jnp.bfloat16, jax.lax.Precision.DEFAULT),
}
HIGHEST = NUMERICS["highest"]


def get_numerics(precision: str | Numerics) -> Numerics:
    if isinstance(precision, Numerics):
        return precision
    if precision not in NUMERICS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of {PRECISIONS}.")
    return NUMERICS[precision]


def set_precision(model: nnx.Module, precision: str) -> nnx.Module:
    """Sets `precision` (one of PRECISIONS) on every layer of `model`, in place; returns the model.

    nnx Linear/Conv get the operand dtype, the lax precision and float32 accumulation; LayerNorm/BatchNorm get the
    output dtype (flax computes their statistics in float32 whatever the dtype); modules with their own einsums
    carry a `numerics` field.
    """
    num = get_numerics(precision)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear | nnx.Conv):
            node.dtype = num.dtype
            node.precision = num.precision
            node.preferred_element_type = jnp.float32
        elif isinstance(node, nnx.LayerNorm | nnx.BatchNorm):
            node.dtype = num.dtype
        if isinstance(node, nnx.Module) and hasattr(node, "numerics"):
            node.numerics = num
    return model


def get_precision(model: nnx.Module) -> str:
    """The precision name `model` runs at (for logs); raises if its modules disagree."""
    names = {
        node.numerics.name for _, node in nnx.iter_graph(model) if isinstance(getattr(node, "numerics", None), Numerics)
    }
    if len(names) != 1:
        raise ValueError(f"Model has no single precision setting: {sorted(names)}")
    return names.pop()


def add_precision_flag(parser: Any) -> None:
    """`--precision highest|default|bf16` on an argparse parser: the one flag of every command that runs a model.

    argparse refuses any other value with one usage line naming the choices.
    """
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="highest",
        help="matmul / activation precision (docs/precision.md): highest = true float32, the parity mode (default); "
        "default = the backend's float32 matmuls (TF32 on GPU); bf16 = bfloat16 with float32 accumulation",
    )
