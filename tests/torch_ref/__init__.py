"""PyTorch reference implementations used by the parity tests."""
