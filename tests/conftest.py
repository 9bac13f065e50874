import jax
import pytest


@pytest.fixture
def getkey():
    """A fresh PRNG key on every call (deterministic per test)."""
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    return lambda: next(keys)


@pytest.fixture
def x64():
    """Run one test in float64 (`jax_enable_x64`), restoring the previous setting after it."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test file: no file reuses another's, and keeping
    them all made one test process grow to ~6 GB."""
    yield
    jax.clear_caches()
