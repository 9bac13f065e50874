import jax
import pytest


@pytest.fixture
def getkey():
    """A fresh PRNG key on every call (deterministic per test)."""
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    return lambda: next(keys)
