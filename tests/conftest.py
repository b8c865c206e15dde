import os
import shutil
import tempfile

import jax
import pytest

# Parity tests compare float32 against PyTorch's float32: no reduced-precision matmuls.
jax.config.update("jax_default_matmul_precision", "highest")

# Compiled programs are kept between runs here (the inner loop's speed; at most CACHE_BYTES, least recently used
# entries evicted first). Set VNSJAX_TEST_JAX_CACHE to another folder, or to "" for a cold run whose cache is removed
# at its end (a clean CI machine starts cold either way).
CACHE_ENV = "VNSJAX_TEST_JAX_CACHE"
DEFAULT_CACHE = os.path.join(tempfile.gettempdir(), "vnsjax_tests_xla_cache")
try:  # JAX locks the cache's files with filelock only under a size limit, and refuses a limit without it
    import filelock  # noqa: F401  (the [dev] extra has it through PyTorch)

    CACHE_BYTES = 2 << 30
except ImportError:
    CACHE_BYTES = -1  # unbounded and unlocked: a reader can, rarely, meet a half-written entry and recompile


def pytest_configure(config):
    """One XLA compilation cache for the whole run, shared by the xdist workers and by the command-line subprocesses
    the tests start (they inherit the environment): many tests compile the same small programs, and on CPU the
    compiles are most of the suite's time. A size limit turns on the cache's file lock, so that two processes never
    read an entry while another writes it."""
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) chooses the folder
        path = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
        if not path:
            path = tempfile.mkdtemp(prefix="vnsjax-tests-xla-")
            config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
        os.environ.update(
            JAX_COMPILATION_CACHE_DIR=path,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
            JAX_COMPILATION_CACHE_MAX_SIZE=str(CACHE_BYTES),
        )
    # jax read its flags when this file imported it; the workers' environment already had these, the controller's not.
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_BYTES)


@pytest.fixture(autouse=True)
def _no_torch_grad():
    try:
        import torch
    except ImportError:
        yield
        return
    with torch.no_grad():
        yield
