"""Layers shared by the SAM, HQ-SAM and VNS-SAM modules.

Everything is channels-last (NHWC). Attribute names follow segment_anything so that a
PyTorch key maps onto a Flax path one to one (see convert_weights/mapping.py).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vnsjax.modeling.precision import HIGHEST, Numerics


def gelu(x: jax.Array) -> jax.Array:
    """PyTorch's nn.GELU(): the exact erf form (flax's default is the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


def relu(x: jax.Array) -> jax.Array:
    return jax.nn.relu(x)


def LayerNorm2d(num_channels: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """segment_anything's LayerNorm2d: per-pixel norm over channels, eps 1e-6.

    In NHWC it is exactly a LayerNorm over the last axis.
    """
    return layer_norm(num_channels, 1e-6, rngs=rngs)


class Linear(nnx.Linear):
    """nnx.Linear that accumulates in float32 and returns the operand dtype (bf16 in, bf16 out).

    Plain nnx.Linear with preferred_element_type=float32 would return float32 and silently widen every
    activation after it. dtype/precision are set by precision.set_precision; built at "highest".
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x).astype(self.dtype or jnp.result_type(x, self.kernel[...]))


class Conv(nnx.Conv):
    """nnx.Conv with the same float32 accumulation and operand-dtype output as `Linear`."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x).astype(self.dtype or jnp.result_type(x, self.kernel[...]))


# Construction default = the "highest" precision setting.
EXACT = dict(precision=HIGHEST.precision, preferred_element_type=jnp.float32)


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, use_bias: bool = True) -> Linear:
    """Linear with PyTorch's default init (kaiming-uniform a=sqrt(5), U(+-1/sqrt(fan_in)) bias).

    Only matters for modules trained from scratch; converted weights overwrite it.
    """
    bound = 1.0 / (in_features**0.5)
    return Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        kernel_init=fan_in_uniform(),
        bias_init=_uniform(bound),
        rngs=rngs,
        **EXACT,
    )


def torch_conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
) -> Conv:
    """Conv with PyTorch's Conv2d semantics: explicit symmetric padding and default init."""
    fan_in = in_features * kernel_size * kernel_size
    return Conv(
        in_features,
        out_features,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        kernel_init=fan_in_uniform(),
        bias_init=_uniform(1.0 / fan_in**0.5),
        rngs=rngs,
        **EXACT,
    )


def _host_rng(key) -> np.random.Generator | None:
    """A NumPy generator seeded from a JAX key; None while tracing (nnx.eval_shape, jit)."""
    if isinstance(key, jax.core.Tracer):
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key).ravel().tolist())


# Initialisers draw on the host: eager JAX init compiles one small program per parameter shape, which
# made building a model take tens of seconds on CPU. Under tracing they fall back to jax.random.
def _uniform(bound: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        rng = _host_rng(key)
        if rng is None:
            return jax.random.uniform(key, shape, dtype, -bound, bound)
        return jnp.asarray(rng.uniform(-bound, bound, shape), dtype)

    return init


def normal_init(std: float = 1.0) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        rng = _host_rng(key)
        if rng is None:
            return std * jax.random.normal(key, shape, dtype)
        return jnp.asarray(std * rng.standard_normal(shape), dtype)

    return init


def constant_init(value: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jnp.asarray(np.full(shape, value), dtype)

    return init


def fan_in_uniform() -> Callable:
    """PyTorch kaiming_uniform(a=sqrt(5)) for Linear/Conv kernels: U(+-1/sqrt(fan_in)), fan_in = all but last axis."""

    def init(key, shape, dtype=jnp.float32):
        return _uniform(1.0 / float(np.prod(shape[:-1])) ** 0.5)(key, shape, dtype)

    return init


def layer_norm(num_features: int, epsilon: float, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        num_features, epsilon=epsilon, scale_init=constant_init(1.0), bias_init=constant_init(0.0), rngs=rngs
    )


def embed(num_embeddings: int, features: int, *, rngs: nnx.Rngs) -> nnx.Embed:
    """nn.Embedding: N(0, 1) init, same (n, d) layout."""
    return nnx.Embed(num_embeddings, features, embedding_init=normal_init(1.0), rngs=rngs)


class ConvTranspose2x2(nnx.Module):
    """PyTorch ConvTranspose2d(kernel_size=2, stride=2, padding=0).

    With stride equal to the kernel there is no overlap: each input pixel writes its own 2x2 block,
    so the layer is one einsum plus a depth-to-space. kernel[a, b, c, o] = W_torch[c, o, a, b].
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        # PyTorch computes ConvTranspose fan_in from weight.size(1) * kernel area = out * 4.
        bound = 1.0 / (out_features * 4) ** 0.5
        self.kernel = nnx.Param(_uniform(bound)(rngs.params(), (2, 2, in_features, out_features)))
        self.bias = nnx.Param(_uniform(bound)(rngs.params(), (out_features,)))
        self.numerics: Numerics = HIGHEST

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, _ = x.shape
        k = self.kernel[...]
        y = self.numerics.einsum("nhwc,abco->nhawbo", x, k.astype(x.dtype), out_dtype=jnp.float32)
        y = y.reshape(n, 2 * h, 2 * w, k.shape[-1]) + self.bias[...]
        return y.astype(self.numerics.dtype or x.dtype)


def upscale_x4(in_dim: int, mid_dim: int, out_dim: int, *, final_gelu: bool, rngs: nnx.Rngs) -> nnx.Sequential:
    """ConvTranspose x2, LayerNorm2d, GELU, ConvTranspose x2 [, GELU].

    SAM's output_upscaling and its HQ-SAM / VNS-SAM siblings (compress_vit_feat, embedding_encoder,
    embedding_edgefeature); PyTorch Sequential indices 0, 1, (2), 3, (4) are kept.
    """
    layers = [
        ConvTranspose2x2(in_dim, mid_dim, rngs=rngs),
        LayerNorm2d(mid_dim, rngs=rngs),
        gelu,
        ConvTranspose2x2(mid_dim, out_dim, rngs=rngs),
    ]
    return nnx.Sequential(*layers, *([gelu] if final_gelu else []))


def mask_feature_convs(dim: int, *, final_gelu: bool, rngs: nnx.Rngs) -> nnx.Sequential:
    """HQ-SAM / VNS-SAM embedding_maskfeature: Conv 3x3 dim->2dim, LayerNorm2d, GELU, Conv 3x3 2dim->dim [, GELU]."""
    layers = [
        torch_conv(dim, 2 * dim, 3, padding=1, rngs=rngs),
        LayerNorm2d(2 * dim, rngs=rngs),
        gelu,
        torch_conv(2 * dim, dim, 3, padding=1, rngs=rngs),
    ]
    return nnx.Sequential(*layers, *([gelu] if final_gelu else []))


class MLPBlock(nnx.Module):
    """segment_anything.modeling.common.MLPBlock: lin1, act, lin2."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Callable = gelu, *, rngs: nnx.Rngs):
        self.lin1 = torch_linear(embedding_dim, mlp_dim, rngs=rngs)
        self.lin2 = torch_linear(mlp_dim, embedding_dim, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nnx.Module):
    """segment_anything.modeling.mask_decoder.MLP: Linear layers with ReLU between them."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List([torch_linear(i, o, rngs=rngs) for i, o in zip(dims_in, dims_out, strict=True)])
        self.sigmoid_output = sigmoid_output

    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                x = jax.nn.relu(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


def resize_bilinear(x: jax.Array, height: int, width: int, *, backend: str | None = None) -> jax.Array:
    """F.interpolate(mode="bilinear", align_corners=False) on NHWC, no antialiasing.

    jax.image.resize antialiases when downsampling; PyTorch's interpolate does not. It contracts with dense
    (out, in) weight matrices, which suits an MXU or tensor cores; on CPU those are ~1 GMAC for upscaling SAM's
    three 256x256 masks to 1024x1024, so there each output reads its two source pixels instead (the same two
    weighted terms; the dense form only adds zeros).
    """
    n, _, _, c = x.shape
    if (backend or jax.default_backend()) == "cpu":
        return _lerp_axis(_lerp_axis(x, 1, height), 2, width)
    return jax.image.resize(x, (n, height, width, c), method="linear", antialias=False)


def _lerp_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    """Linear resize of one axis with PyTorch's align_corners=False sampling (source clamped to the edges)."""
    m = x.shape[axis]
    if m == size:
        return x
    # PyTorch's CPU kernel: float32 scale, then one fused multiply-add rounded to float32 (emulated exactly in
    # float64), so the weights round as its do
    scale = np.float64(np.float32(m / size))
    src = np.maximum(((np.arange(size) + 0.5) * scale - 0.5).astype(np.float32), 0)
    i0 = np.minimum(np.floor(src).astype(np.int32), m - 1)
    i1 = np.minimum(i0 + 1, m - 1)
    frac = src - i0
    shape = [1] * x.ndim
    shape[axis] = size

    # The gather's own gradient is a scatter-add, slow on CPU (training resizes predictions to the targets): the
    # backward contracts with the dense (size, m) interpolation matrix instead, the same terms in another order.
    @jax.custom_vjp
    def lerp(x: jax.Array) -> jax.Array:
        w = jnp.asarray(frac.reshape(shape), x.dtype)  # made here: a custom_vjp function may not close over arrays
        return jnp.take(x, i0, axis=axis) * (1 - w) + jnp.take(x, i1, axis=axis) * w

    def backward(_, g: jax.Array) -> tuple[jax.Array]:
        dense = np.zeros((size, m), np.float32)
        np.add.at(dense, (np.arange(size), i0), 1 - frac)
        np.add.at(dense, (np.arange(size), i1), frac)
        gx = jnp.tensordot(jnp.moveaxis(g, axis, -1), jnp.asarray(dense, g.dtype), axes=1)
        return (jnp.moveaxis(gx, -1, axis),)

    lerp.defvjp(lambda x: (lerp(x), None), backward)
    return lerp(x)
