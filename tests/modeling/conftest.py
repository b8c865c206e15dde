def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes over ~20 s")
    config.addinivalue_line("markers", "parity: compares against the PyTorch reference")
