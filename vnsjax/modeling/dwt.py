"""One-level 2-D Haar wavelet transform, exactly as VNS-SAM's hand-written `DWT` in neck.py.

The released code does not use a wavelet library: it splits the map into its four stride-2 polyphase
components, divides each by 2 and takes signed sums. We reproduce those signs and that scale, on
channels-last arrays (..., H, W, C), so that converted checkpoints see the same sub-bands.

Polyphase components (row = height axis, col = width axis):
    a = x[0::2, 0::2] / 2   (even row, even col)
    b = x[1::2, 0::2] / 2   (odd row,  even col)
    c = x[0::2, 1::2] / 2   (even row, odd col)
    d = x[1::2, 1::2] / 2   (odd row,  odd col)
Sub-bands:
    LL =  a + b + c + d
    LH = -a + b - c + d     (high-pass across rows, low-pass across cols)
    HL = -a - b + c + d     (low-pass across rows, high-pass across cols)
    HH =  a - b - c + d

Relation to PyWavelets (verified numerically in tests/test_dwt.py). For a map x laid out (H, W) on the last two
axes, ``cA, (cH, cV, cD) = pywt.dwt2(x, "haar")`` (pywt's Haar detail filter gives (even - odd) / sqrt(2)
along an axis, and two axes give the factor 1/2 that the released code applies by hand):
    LL =  cA
    LH = -cH     (cH: detail along the row/height axis)
    HL = -cV     (cV: detail along the column/width axis)
    HH =  cD
So the scale is identical (orthonormal, no extra factor) and the two single-direction details have flipped sign.
The transform is orthonormal, hence `haar_idwt` is its transpose.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_even(x: jax.Array) -> None:
    if x.ndim < 3:
        raise ValueError(f"haar_dwt expects (..., H, W, C) channels-last input, got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    if h % 2 or w % 2:
        raise ValueError(
            f"haar_dwt needs even spatial sizes, got H={h}, W={w} (input shape {x.shape}); "
            "the released DWT would fail on odd sizes too (its polyphase parts differ in size)"
        )


@jax.jit
def haar_dwt(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Haar DWT of a channels-last map (..., H, W, C) -> (LL, LH, HL, HH), each (..., H/2, W/2, C).

    Signs and scale are those of the released VNS-SAM code (see the module docstring for the formulas and the
    mapping to pywt.dwt2). Raises ValueError (at trace time) if H or W is odd.
    """
    _check_even(x)
    a = x[..., 0::2, 0::2, :] / 2
    b = x[..., 1::2, 0::2, :] / 2
    c = x[..., 0::2, 1::2, :] / 2
    d = x[..., 1::2, 1::2, :] / 2
    ll = a + b + c + d
    lh = -a + b - c + d
    hl = -a - b + c + d
    hh = a - b - c + d
    return ll, lh, hl, hh


@jax.jit
def haar_idwt(ll: jax.Array, lh: jax.Array, hl: jax.Array, hh: jax.Array) -> jax.Array:
    """Exact inverse of `haar_dwt`: four (..., h, w, C) sub-bands -> (..., 2h, 2w, C).

    The forward analysis matrix is orthonormal, so the synthesis is its transpose.
    """
    a = (ll - lh - hl + hh) / 2
    b = (ll + lh - hl - hh) / 2
    c = (ll - lh + hl - hh) / 2
    d = (ll + lh + hl + hh) / 2
    even_rows = jnp.stack([a, c], axis=-2)  # (..., h, w, col parity, C)
    odd_rows = jnp.stack([b, d], axis=-2)
    y = jnp.stack([even_rows, odd_rows], axis=-4)  # (..., h, row parity, w, col parity, C)
    *lead, h, _, w, _, ch = y.shape
    return y.reshape(*lead, 2 * h, 2 * w, ch)
