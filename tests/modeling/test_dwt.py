"""Haar DWT: released-code formulas, mapping to pywt.dwt2, perfect reconstruction, odd-size refusal."""

import numpy as np
import pytest
import pywt

from tests.tolerance import assert_close
from vnsjax.modeling.dwt import haar_dwt, haar_idwt


def _x(shape=(2, 8, 6, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_matches_released_formulas():
    x = _x()
    a, b = x[:, 0::2, 0::2] / 2, x[:, 1::2, 0::2] / 2
    c, d = x[:, 0::2, 1::2] / 2, x[:, 1::2, 1::2] / 2
    want = (a + b + c + d, -a + b - c + d, -a - b + c + d, a - b - c + d)
    for got, ref in zip(haar_dwt(x), want, strict=True):
        assert_close(got, ref, rel=1e-6)


def test_mapping_to_pywt():
    """LL = cA, LH = -cH, HL = -cV, HH = cD (same scale), pywt on the (H, W) axes of the NHWC array."""
    x = _x().astype(np.float64)
    ll, lh, hl, hh = (np.asarray(t) for t in haar_dwt(x.astype(np.float32)))
    ca, (ch, cv, cd) = pywt.dwt2(x, "haar", axes=(1, 2))
    assert_close(ll, ca, rel=1e-6)
    assert_close(lh, -ch, rel=1e-6)
    assert_close(hl, -cv, rel=1e-6)
    assert_close(hh, cd, rel=1e-6)


def test_perfect_reconstruction():
    x = _x((3, 16, 10, 5), seed=1)
    assert_close(haar_idwt(*haar_dwt(x)), x, rel=1e-6)
    # idwt of the pywt-mapped bands equals pywt.idwt2, i.e. the inverse is the standard Haar synthesis.
    ll, lh, hl, hh = haar_dwt(x)
    ref = pywt.idwt2((np.asarray(ll), (-np.asarray(lh), -np.asarray(hl), np.asarray(hh))), "haar", axes=(1, 2))
    assert_close(haar_idwt(ll, lh, hl, hh), ref, rel=1e-6)


def test_energy_preserved():
    x = _x((1, 4, 4, 2), seed=2)
    bands = haar_dwt(x)
    np.testing.assert_allclose(sum(float((np.asarray(t) ** 2).sum()) for t in bands), float((x**2).sum()), rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 7, 8, 3), (1, 8, 5, 3), (2, 9, 9, 1)])
def test_odd_size_refused(shape):
    with pytest.raises(ValueError, match=r"even spatial sizes.*" + "".join(rf"\D*{s}" for s in shape)):
        haar_dwt(np.zeros(shape, np.float32))
