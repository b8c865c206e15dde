"""NSFM (non-salient feature mining) = `TFD` in VNS-SAM's neck.py, as Flax NNX modules in NHWC.

Input: the four global-attention-block outputs of the SAM ViT, (B, 64, 64, C) each, earliest first.
Output: mask feature M (B, 256, 256, 32) and edge feature G (B, 64, 64, 256).

Dataflow (docs/released-code.md#nsfm): 1x1 conv + BN + ReLU reduces each level to 96 channels; a Haar DWT splits each
level and only LL and HH are kept; MFF fuses the four LL bands (and, separately, the four HH bands) deepest first
with a 1x1 BasicConv and an attention residual block (RB, channel attention with global *max* pool, spatial
attention); PixelShuffle(2) brings them back to 64x64, HH joins the shallowest level (-> edge branch) and LL the
deepest (-> mask branch); a decouple head produces G (1x1 conv) and M (BasicConv2d, ReLU, two ConvTranspose x2 with
LayerNorm2d + GELU, 3x3 conv).

Checkpoint mapping: attribute names equal the PyTorch ones, so `neck.<key>` maps one to one onto a Flax path:
a PyTorch nn.Sequential is an nnx.Sequential whose child i lives at `.layers[i]` (parameter-free ReLU/GELU/sigmoid
slots are kept so indices match), an nn.ModuleList is an nnx.List. Leaf names: Conv2d weight -> kernel (HWIO),
Conv1d weight (1, 1, 3) -> kernel (3, 1, 1), ConvTranspose2d weight -> `ConvTranspose2x2.kernel`, LayerNorm2d
weight -> scale, BatchNorm2d weight/bias/running_mean/running_var -> scale/bias/mean/var (num_batches_tracked is
dropped).

BatchNorm: the released code trains the NSFM with BatchNorm in train mode, i.e. statistics over the per-GPU batch
(4 images per GPU under DDP, no SyncBN), and evaluates with running statistics. Here `model.train()` selects batch
statistics and `model.eval()` the running ones (nnx flips `use_running_average`). Under `jit` with the batch sharded
over a data mesh axis, the mean/variance over the batch axis is computed over the *global* batch, so XLA inserts the
cross-device reduction automatically: this behaves like SyncBN, not like the released per-GPU BN. To reproduce
per-GPU statistics, normalise per device (e.g. shard_map over the data axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import (
    EXACT,
    Conv,
    ConvTranspose2x2,
    LayerNorm2d,
    constant_init,
    fan_in_uniform,
    gelu,
    relu,
    torch_conv,
)
from vnsjax.modeling.dwt import haar_dwt

# Width of the edge branch; hard-coded in the released Aggregator/DecoupleHead (hence one_conv_llhh's 352 = 256 + 96).
EDGE_CHANNELS = 256


def pixel_shuffle(x: jax.Array, upscale: int = 2) -> jax.Array:
    """torch.nn.PixelShuffle on NHWC: input channel k = c*r*r + i*r + j goes to out[2h+i, 2w+j, c] (r = upscale).

    The channel order must be PyTorch's, otherwise converted one_conv_* weights see permuted inputs.
    """
    n, h, w, ch = x.shape
    r = upscale
    if ch % (r * r):
        raise ValueError(f"pixel_shuffle: channels {ch} not divisible by {r * r} (input shape {x.shape})")
    x = x.reshape(n, h, w, ch // (r * r), r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # (n, h, i, w, j, c)
    return x.reshape(n, h * r, w * r, ch // (r * r))


def _batch_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (= flax 0.9). Two-pass variance, as PyTorch computes it.
    # Note: PyTorch updates running_var with the unbiased batch variance, flax with the biased one
    # (relative difference 1/(n-1), n = B*H*W >= 2048 here); normalisation itself uses the biased one in both.
    return nnx.BatchNorm(
        num_features,
        epsilon=1e-5,
        momentum=0.9,
        use_fast_variance=False,
        scale_init=constant_init(1.0),
        bias_init=constant_init(0.0),
        rngs=rngs,
    )


class BasicConv2d(nnx.Module):
    """Conv (no bias) + BatchNorm, **no ReLU** (the released class owns a ReLU it never applies)."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, *, padding: int = 0, rngs: nnx.Rngs):
        self.conv = torch_conv(in_planes, out_planes, kernel_size, padding=padding, use_bias=False, rngs=rngs)
        self.bn = _batch_norm(out_planes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicConv(BasicConv2d):
    """Conv (no bias) + BatchNorm + ReLU (released `BasicConv` with need_relu=True, bn=BatchNorm2d)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return relu(super().__call__(x))


class CA(nnx.Module):
    """ECA-like channel attention (lf=False): global max pool, 1-D conv (k=3, pad 1, no bias) over channels, sigmoid.

    The channel axis is the 1-D conv's spatial axis with one feature, so the kernel is (3, 1, 1) = W_torch(1,1,3)
    transposed (2, 1, 0).
    """

    def __init__(self, *, rngs: nnx.Rngs):
        # PyTorch's default Conv1d init: U(+-1/sqrt(fan_in)), fan_in = 3.
        self.conv = Conv(
            1,
            1,
            kernel_size=(3,),
            padding=((1, 1),),
            use_bias=False,
            kernel_init=fan_in_uniform(),
            rngs=rngs,
            **EXACT,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.max(x, axis=(-3, -2))  # (B, C): AdaptiveMaxPool2d(1)
        y = self.conv(y[..., None])[..., 0]
        return x * jax.nn.sigmoid(y)[..., None, None, :]


class SA(nnx.Module):
    """Spatial attention: conv C->C/4 (3x3), ReLU, conv C/4->1 (3x3), sigmoid, multiply."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.sa = nnx.Sequential(
            torch_conv(channels, channels // 4, 3, padding=1, rngs=rngs),
            relu,
            torch_conv(channels // 4, 1, 3, padding=1, rngs=rngs),
            jax.nn.sigmoid,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.sa(x)


class AM(nnx.Module):
    """Attention module: CA then SA, no residual."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.CA = CA(rngs=rngs)
        self.SA = SA(channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.SA(self.CA(x))


class RB(nnx.Module):
    """Residual block: x + BasicConv 3x3 (BN + ReLU)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.RB = BasicConv(channels, channels, 3, padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.RB(x) + x


class ARB(nnx.Module):
    """Attention residual block with lf=False (the only released setting): RB then AM."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.AM = AM(channels, rngs=rngs)
        self.RB = RB(channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.AM(self.RB(x))


class MFF(nnx.Module):
    """Multi-level fusion of one sub-band: concat (in call order), BasicConv 1x1 4C->C, ARB."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = BasicConv(4 * channels, channels, 1, rngs=rngs)
        self.ARB = ARB(channels, rngs=rngs)

    def __call__(self, *bands: jax.Array) -> jax.Array:
        return self.ARB(self.conv(jnp.concatenate(bands, axis=-1)))


# NSFM designs of the paper's Tab. X (docs/training.md#vns-ablations): the released wavelet neck and the three
# ablation necks of the official code (TFD1 "w/o WD", TFD2 "HF only", TFD3 "LF only").
NSFM_MODES = ("wavelet", "no_wd", "hf_only", "lf_only")


class Aggregator(nnx.Module):
    """Channel reduction, DWT, LL/HH fusion and re-injection into the shallowest / deepest level.

    mode "wavelet" is the released neck. "hf_only" / "lf_only" keep one sub-band fusion (MFF_HH / MFF_LL) whose
    output feeds both branches. "no_wd" has no DWT and no PixelShuffle: MFF_LL fuses the reduced levels themselves
    (shallowest first) at full resolution and feeds both branches, and its 1x1 convolutions read 2 x inner channels.
    """

    def __init__(self, in_channels: Sequence[int], inner_channels: int, *, mode: str = "wavelet", rngs: nnx.Rngs):
        if mode not in NSFM_MODES:
            raise ValueError(f"NSFM mode {mode!r}; expected one of {NSFM_MODES}")
        self.mode = mode
        self.down_sample_layers = nnx.List(
            [nnx.Sequential(BasicConv2d(c, inner_channels, 1, rngs=rngs), relu) for c in in_channels]
        )
        if mode != "hf_only":
            self.MFF_LL = MFF(inner_channels, rngs=rngs)
        if mode in ("wavelet", "hf_only"):
            self.MFF_HH = MFF(inner_channels, rngs=rngs)
        if mode == "no_wd":
            self.edge_channels = inner_channels
            joined = 2 * inner_channels
        else:
            self.edge_channels = EDGE_CHANNELS
            joined = inner_channels + inner_channels // 4
        self.one_conv_f4_ll = torch_conv(joined, inner_channels, 1, rngs=rngs)
        self.one_conv_f1_hh = torch_conv(joined, self.edge_channels, 1, rngs=rngs)
        self.one_conv_llhh = torch_conv(self.edge_channels + inner_channels, inner_channels, 1, rngs=rngs)

    def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Returns (mask branch (B,64,64,96), edge branch E1 (B,64,64,256; 96 for "no_wd"))."""
        levels = [layer(x) for layer, x in zip(self.down_sample_layers, features, strict=True)]
        f1, f4 = levels[0], levels[-1]
        if self.mode == "no_wd":
            ll = hh = self.MFF_LL(*levels)
        else:
            bands = [haar_dwt(f) for f in levels]  # (LL, LH, HL, HH) per level; LH and HL are unused
            deepest_first = bands[::-1]  # released MFF order [f4, f3, f2, f1]
            if self.mode != "hf_only":
                ll = self.MFF_LL(*(b[0] for b in deepest_first))
            if self.mode != "lf_only":
                hh = self.MFF_HH(*(b[3] for b in deepest_first))
            if self.mode == "hf_only":
                ll = hh
            elif self.mode == "lf_only":
                hh = ll
            ll, hh = pixel_shuffle(ll), pixel_shuffle(hh)
        edge = self.one_conv_f1_hh(jnp.concatenate([hh, f1], axis=-1))
        low = self.one_conv_f4_ll(jnp.concatenate([ll, f4], axis=-1))
        mask = self.one_conv_llhh(jnp.concatenate([edge, low], axis=-1))
        return mask, edge


class DecoupleHead(nnx.Module):
    """Edge feature G = 1x1 conv; mask feature M = BasicConv2d 3x3, ReLU, 4x upsampling, 3x3 conv."""

    def __init__(self, inner_channels: int, out_channels: int, *, edge_channels: int = EDGE_CHANNELS, rngs: nnx.Rngs):
        self.edge_pred_head = nnx.Sequential(torch_conv(edge_channels, EDGE_CHANNELS, 1, rngs=rngs))
        self.hqfeat_head = nnx.Sequential(BasicConv2d(inner_channels, out_channels, 3, padding=1, rngs=rngs), relu)
        self.up_sample_layers = nnx.Sequential(
            ConvTranspose2x2(out_channels, out_channels, rngs=rngs),
            LayerNorm2d(out_channels, rngs=rngs),
            gelu,
            ConvTranspose2x2(out_channels, out_channels, rngs=rngs),
            LayerNorm2d(out_channels, rngs=rngs),
            gelu,
            torch_conv(out_channels, out_channels, 3, padding=1, rngs=rngs),
        )

    def __call__(self, mask: jax.Array, edge: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.up_sample_layers(self.hqfeat_head(mask)), self.edge_pred_head(edge)


class TFD(nnx.Module):
    """The NSFM neck. Defaults match the released module (in_channels = 4 x ViT width, inner 96, out 32).

    mode selects the released wavelet neck or one of the Tab. X ablation necks (`NSFM_MODES`, see Aggregator).

    Prompt-independent: run once per image on the encoder's global-block outputs.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (1024,) * 4,
        inner_channels: int = 96,
        out_channels: int = 32,
        *,
        mode: str = "wavelet",
        rngs: nnx.Rngs,
    ):
        self.in_channels = tuple(in_channels)
        self.inner_channels = inner_channels
        self.out_channels = out_channels
        self.aggregator = Aggregator(self.in_channels, inner_channels, mode=mode, rngs=rngs)
        self.decouple_head = DecoupleHead(
            inner_channels, out_channels, edge_channels=self.aggregator.edge_channels, rngs=rngs
        )

    def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
        """features: the block outputs F1..F4 (B, H, W, C_i), earliest first, H and W even (64 in SAM).

        Returns (M (B, 4H, 4W, out_channels), G (B, H, W, 256)).
        """
        if len(features) != len(self.in_channels):
            raise ValueError(f"TFD expects {len(self.in_channels)} feature maps, got {len(features)}")
        mask, edge = self.aggregator(features)
        return self.decouple_head(mask, edge)
