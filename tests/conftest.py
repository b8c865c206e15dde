import jax
import pytest

# Parity tests compare float32 against PyTorch's float32: no reduced-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True)
def _no_torch_grad():
    try:
        import torch
    except ImportError:
        yield
        return
    with torch.no_grad():
        yield
