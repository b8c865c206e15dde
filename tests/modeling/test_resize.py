"""resize_bilinear: the CPU two-tap form and the dense-matrix form (GPU/TPU) both equal PyTorch's interpolate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tolerance import assert_close
from vnsjax.modeling.common import resize_bilinear

torch = pytest.importorskip("torch")

# float32 products of the same two terms; a few ulps of the inputs' magnitude covers the rounding.
REL = 1e-6


@pytest.mark.parametrize(
    "size",
    [(1024, 1024), (97, 181), (256, 181), (300, 256), (1, 3)],
    ids=["up x4", "down both", "down one axis", "up one axis", "to a few pixels"],
)
@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_resize_bilinear_equals_torch_interpolate(size, backend):
    x = np.random.default_rng(0).standard_normal((2, 64, 48, 3)).astype(np.float32) * 5
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), size, mode="bilinear", align_corners=False
    )
    got = resize_bilinear(x, *size, backend=backend)
    assert_close(got, want.numpy().transpose(0, 2, 3, 1), rel=REL, err_msg=f"{backend} {size}")


@pytest.mark.parametrize("size", [(256, 256), (97, 181)], ids=["up x4", "down both"])
def test_cpu_form_gradient_equals_the_dense_forms(size):
    """The CPU form's backward (the dense matrix's transpose) equals differentiating jax.image.resize's form."""
    import jax

    x = np.random.default_rng(1).standard_normal((2, 64, 48, 3)).astype(np.float32)
    g = np.random.default_rng(2).standard_normal((2, *size, 3)).astype(np.float32)

    def grad(backend):
        return jax.jit(jax.grad(lambda x: (resize_bilinear(x, *size, backend=backend) * g).sum()))(x)

    assert_close(grad("cpu"), grad("gpu"), rel=REL, err_msg=str(size))
