"""The empirical NNGP kernel: the outer product of a network's outputs."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Shaped

from ._errors import check_module, check_stateless
from ._function import check_batch_pair


@eqx.filter_jit
def _outputs(model: eqx.Module, x: Array) -> Array:
    out = jax.vmap(model)(x)
    return jnp.reshape(out, (x.shape[0], -1))


def empirical_nngp(
    model: eqx.Module,
    x1: Shaped[Array | np.ndarray, "n1 ..."],
    x2: Shaped[Array | np.ndarray, "n2 ..."] | None = None,
    *,
    trace: bool = True,
) -> Float[Array, "n1 n2"] | Float[Array, "n1 n2 k k"]:
    """The empirical NNGP kernel `K̂(x1, x2) = f(x1) f(x2)ᵀ` of one model.

    The product of the network's (flattened, K-dimensional) outputs. Over random
    initializations its mean is the NNGP covariance of the outputs, which at infinite width is
    [`nte.kernels.nngp`][] (per output) times the number of outputs; average it over seeds with
    [`nte.kernels.monte_carlo`][]. Like [`nte.empirical_ntk`][], `trace=True` *sums* over the
    outputs.

    **Arguments:**

    - `model`: an `eqx.Module` whose `__call__` takes ONE example (vmapped internally).
    - `x1`: a batch of inputs `[N1, ...]`.
    - `x2`: a second batch `[N2, ...]` of the same example shape; `None` means `x1`.
    - `trace`: if `True`, SUM over the output axis: `K̂[a, b] = Σ_k f_k(x1_a) f_k(x2_b)`.

    **Returns:**

    `K̂` of shape `[N1, N2]` if `trace`, else `[N1, N2, K, K]` with
    `K̂[a, b, k, l] = f_k(x1_a) f_l(x2_b)`.

    !!! example

        ```python
        model = nte.nn.MLP(64, 2048, 2, 10, key=jax.random.key(0))
        k_hat = nte.empirical_nngp(model, x) / 10  # ≈ nte.kernels.nngp(model, x)
        ```
    """
    check_module(model)
    check_stateless(model)
    if not isinstance(trace, bool):
        raise TypeError(f"`trace` must be a bool, got {type(trace).__name__}.")
    x1, x2 = check_batch_pair(model, x1, x2)
    f1 = _outputs(model, x1)
    f2 = f1 if x2 is None else _outputs(model, x2)
    if trace:
        return f1 @ f2.T
    return jnp.einsum("ak,bl->abkl", f1, f2)
