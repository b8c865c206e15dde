"""Scale-aware float comparisons for the tests.

float32 results carry rounding noise proportional to their magnitude (and to the depth of the computation that made
them), so an absolute tolerance that suits logits near 1 flakes on logits near 10. Tolerances here are relative to the
largest magnitude of the expected array.
"""

from __future__ import annotations

import numpy as np


def assert_close(actual, expected, *, rel: float, err_msg: str = "") -> None:
    """max |actual - expected| <= rel * max |expected| (with max |expected| floored at 1e-30), shapes equal."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{err_msg}: shape {a.shape} != {e.shape}"
    scale = max(float(np.abs(e).max(initial=0.0)), 1e-30)
    diff = float(np.abs(a - e).max(initial=0.0))
    assert diff <= rel * scale, f"{err_msg}: max diff {diff:.3g} > {rel:g} x scale {scale:.3g}"
