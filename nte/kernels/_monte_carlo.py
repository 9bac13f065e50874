"""Monte-Carlo estimates of a kernel: an empirical kernel averaged over random initializations."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from .._errors import check_callable


def monte_carlo(
    fn: Callable[..., Array],
    make_model: Callable[[PRNGKeyArray], eqx.Module],
    x1: Shaped[Array, "n1 ..."] | Any,
    x2: Shaped[Array, "n2 ..."] | Any | None = None,
    *,
    n_samples: int,
    key: PRNGKeyArray,
    stderr: bool = False,
) -> Float[Array, "..."] | tuple[Float[Array, "..."], Float[Array, "..."]]:
    """The mean of an empirical kernel over `n_samples` random initializations.

    With `keys = jax.random.split(key, n_samples)`, the estimate is
    `mean_i fn(make_model(keys[i]), x1, x2)`: as the width of the model grows, an empirical
    NTK or NNGP concentrates on the infinite-width kernel ([`nte.kernels.ntk`][],
    [`nte.kernels.nngp`][]), and averaging over initializations removes the remaining
    fluctuation at finite width (not the `O(1/width)` bias of the mean). The samples run one
    after another (one model in memory at a time); the running mean and variance use Welford's
    update.

    **Arguments:**

    - `fn`: an empirical kernel `fn(model, x1, x2)` (called as `fn(model, x1)` when `x2` is
      `None`), e.g. [`nte.empirical_ntk`][] or [`nte.empirical_nngp`][].
    - `make_model`: builds one model from a key, e.g.
      `lambda k: nte.nn.MLP(784, 1024, 2, 1, parameterization="ntk", key=k)`.
    - `x1`, `x2`: passed on to `fn`.
    - `n_samples`: the number of initializations, `>= 1` (keyword-only).
    - `key`: a `jax.random` key (keyword-only).
    - `stderr`: also return the standard error of the mean, `std / √n_samples` elementwise
      (`n_samples >= 2`).

    **Returns:**

    The mean kernel (shaped as `fn`'s output), or `(mean, stderr)` if `stderr=True`.

    !!! example

        ```python
        make = lambda k: nte.nn.MLP(64, 2048, 2, 4, parameterization="ntk", key=k)
        theta = nte.kernels.monte_carlo(nte.empirical_ntk, make, x, n_samples=8, key=key) / 4
        # ≈ nte.kernels.ntk(make(key), x)
        ```
    """
    check_callable(fn, "fn")
    check_callable(make_model, "make_model")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"`n_samples` must be an int >= 1, got {n_samples!r}.")
    if stderr and n_samples < 2:
        raise ValueError(f"`n_samples` must be >= 2 for a standard error, got {n_samples}.")
    args = (x1,) if x2 is None else (x1, x2)
    mean = m2 = None
    for i, k in enumerate(jax.random.split(key, n_samples), start=1):
        sample = jnp.asarray(fn(make_model(k), *args))
        if mean is None:
            mean, m2 = sample, jnp.zeros_like(sample)
            continue
        delta = sample - mean
        mean = mean + delta / i
        m2 = m2 + delta * (sample - mean)
    if not stderr:
        return mean
    return mean, jnp.sqrt(m2 / (n_samples - 1) / n_samples)
