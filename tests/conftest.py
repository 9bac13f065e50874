"""Test-session setup: a shared on-disk compilation cache and unoptimized XLA code generation.

The suite compiles thousands of small programs (most of them single primitives run eagerly) and
runs each of them a handful of times, so compiling, not running, is what it spends its time on:

- JAX's persistent compilation cache (`.pytest_cache/jax-compilation-cache` in the checkout, or
  `NTE_TEST_JAX_CACHE`) is shared by both xdist workers, every test subprocess and later runs;
  the per-file `jax.clear_caches()` below then costs a disk read, not a recompile.
- `--xla_backend_optimization_level=0` skips LLVM's optimization passes (the same HLO, the same
  operations; only machine-code quality differs), about a third less compile time.

Measured on 2 cores (test_euler + test_experts + test_homogeneity, one process): 266 s without
either, 175 s with level 0, 194 s with a cold cache, 62 s with a warm one.
Set `NTE_TEST_FAST_COMPILE=0` to test the code as users compile it (optimization level 2).
"""

import ctypes
import ctypes.util
import gc
import os
from pathlib import Path

_RELEASE_AT = 1.2e9  # bytes resident in one test process
_CACHE = os.environ.setdefault(
    "NTE_TEST_JAX_CACHE",
    str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation-cache"),
)
if _CACHE:  # environment variables: read by JAX here and in every test subprocess
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if os.environ.get("NTE_TEST_FAST_COMPILE", "1") != "0":
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()

try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim  # glibc only  # noqa: B018
except (OSError, AttributeError):
    _LIBC = None

import jax  # noqa: E402
import pytest  # noqa: E402

if _CACHE:  # in case a plugin imported JAX before this file set the variables
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs once a test process holds more than `_RELEASE_AT` bytes.

    Every eagerly run primitive keeps its compiled executable in memory; one test file of small
    models grew a process to 2.4 GB. Releasing them after every test bounds it (0.6 GB) but
    doubles the file's time, so they are released only past the threshold (reloaded from the
    disk cache when needed again).
    """
    yield
    if _resident_bytes() > _RELEASE_AT:
        jax.clear_caches()
        gc.collect()
        if _LIBC is not None:  # hand the freed heap back to the OS (glibc keeps it otherwise)
            _LIBC.malloc_trim(0)
