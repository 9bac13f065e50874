"""The empirical neural tangent kernel Θ(x1, x2) = J(x1) J(x2)ᵀ, three ways."""

import itertools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, Shaped

from . import _taps as taps
from ._errors import check_choice, check_module
from ._function import check_batch_pair
from ._split import merge, split

_METHODS = ("auto", "jacobian", "ntvp", "structured")
_AUTO_JACOBIAN_BYTES = 2**28  # "auto" materializes Jacobians only below 256 MiB
_NTVP_CHUNK_BYTES = 2**28  # "ntvp" holds at most this many bytes of per-example Jacobians


# ---------------------------------------------------------------------------------------------
# "jacobian": contract explicit Jacobians.


def _contract(j1: Array, j2: Array, trace: bool) -> Array:
    j1 = jnp.reshape(j1, j1.shape[:2] + (-1,))
    j2 = jnp.reshape(j2, j2.shape[:2] + (-1,))
    if trace:
        return jnp.einsum("akp,bkp->ab", j1, j2)
    return jnp.einsum("akp,blp->abkl", j1, j2)


def _jacobian_ntk(f, params, x1, x2, trace):
    jac = jax.vmap(jax.jacrev(f), in_axes=(None, 0))
    j1 = jac(params, x1)
    j2 = j1 if x2 is None else jac(params, x2)
    terms = [_contract(a, b, trace) for a, b in zip(jtu.tree_leaves(j1), jtu.tree_leaves(j2))]
    return sum(terms[1:], terms[0])


# ---------------------------------------------------------------------------------------------
# "ntvp": NTK-vector products. For each example a of x1 (in chunks), the K rows of its
# Jacobian come from K vjps; pushing each through the linearized batch function of x2 (a jvp)
# gives Θ(x_a, x2). Memory: one chunk of per-example Jacobians, never the full Jacobian.


def _ntvp_ntk(f, params, x1, x2, trace, k_out):
    x2 = x1 if x2 is None else x2
    _, f2_lin = jax.linearize(lambda p: jax.vmap(f, in_axes=(None, 0))(p, x2), params)
    eye = jnp.eye(k_out, dtype=jax.eval_shape(f, params, x1[0]).dtype)

    def row(xa):
        _, vjp = jax.vjp(lambda p: f(p, xa), params)
        (ja,) = jax.vmap(vjp)(eye)  # the K rows of J(x_a), params-shaped
        out = jax.vmap(f2_lin)(ja)  # out[k, b, l] = <J_k(x_a), J_l(x_b)>
        if trace:
            return jnp.trace(out, axis1=0, axis2=2)
        return jnp.transpose(out, (1, 0, 2))

    n_params = sum(leaf.size for leaf in jtu.tree_leaves(params))
    itemsize = eye.dtype.itemsize
    chunk = int(max(1, min(x1.shape[0], _NTVP_CHUNK_BYTES // max(1, k_out * n_params * itemsize))))
    return jax.lax.map(row, x1, batch_size=chunk)


# ---------------------------------------------------------------------------------------------
# "structured": for eqx.nn.Linear layers ∂f_k/∂W = δ_k aᵀ and ∂f_k/∂b = δ_k, so the layer's
# kernel is (A1 A2ᵀ + [bias]) ⊙ (D1 D2ᵀ), with A the layer inputs and D the backprop signals,
# both read by the taps of `nte/_taps.py` (shared with the likelihood methods).


def _signals(tapped, x, outputs, k_out):
    """Inputs A_u (flat) and backprop signals D_u `[K, out]` of every Linear call u."""
    out, vjp, inputs = taps.linearize(lambda: jnp.ravel(tapped(x)), outputs)
    (d,) = jax.vmap(vjp)(jnp.eye(k_out, dtype=out.dtype))
    return inputs, [jnp.reshape(di, (k_out, -1)) for di in d]


def _layer_kernel(a1, d1, a2, d2, selected, trace):
    """The kernel of one pair of calls (u, v) of a Linear layer."""
    g = a1 @ a2.T if selected[0] else 0.0
    g = g + 1.0 if selected[1] else g
    if trace:
        return jnp.einsum("akj,bkj->ab", d1, d2) * g
    return jnp.einsum("akj,blj->abkl", d1, d2) * jnp.asarray(g)[..., None, None]


def _structured_ntk(f, params, static, x1, x2, trace, k_out):
    tapped = taps.tap(merge(params, static))
    rec = taps.discover(lambda: jnp.ravel(tapped(x1[0])))
    selected = [(n.weight is not None, n.bias is not None) for n in taps.nodes(params)]
    handled = sorted(i for i in set(rec.calls) if any(selected[i]))
    per_example = jax.vmap(lambda x: _signals(tapped, x, rec.outputs, k_out))
    a1, d1 = per_example(x1)
    a2, d2 = (a1, d1) if x2 is None else per_example(x2)
    total = None
    for i in handled:
        calls = [u for u, c in enumerate(rec.calls) if c == i]
        for u, v in itertools.product(calls, calls):
            term = _layer_kernel(a1[u], d1[u], a2[v], d2[v], selected[i], trace)
            total = term if total is None else total + term
    lin, rest = eqx.partition(params, taps.layer_mask(params, handled))
    if jtu.tree_leaves(rest):
        f_rest = lambda p, x: f(eqx.combine(p, lin), x)
        term = _ntvp_ntk(f_rest, rest, x1, x2, trace, k_out)
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------------------------------


@eqx.filter_jit
def _kernel(params, static, x1, x2, method, trace):
    f = lambda p, x: jnp.ravel(merge(p, static)(x))
    k_out = int(np.prod(jax.eval_shape(f, params, x1[0]).shape))
    if method == "jacobian":
        return _jacobian_ntk(f, params, x1, x2, trace)
    if method == "ntvp":
        return _ntvp_ntk(f, params, x1, x2, trace, k_out)
    return _structured_ntk(f, params, static, x1, x2, trace, k_out)


def _auto(params, static, x1, x2) -> str:
    if any(n.weight is not None or n.bias is not None for n in taps.nodes(params)):
        try:
            jax.eval_shape(lambda: _kernel(params, static, x1, x2, "structured", True))
            return "structured"
        except Exception:  # e.g. Linear layers called inside an inner transform
            pass
    out = jax.eval_shape(lambda: merge(params, static)(x1[0]))
    n_params = sum(leaf.size for leaf in jtu.tree_leaves(params))
    n_rows = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    size = n_rows * int(np.prod(out.shape)) * n_params * out.dtype.itemsize
    return "jacobian" if size <= _AUTO_JACOBIAN_BYTES else "ntvp"


def empirical_ntk(
    model: eqx.Module,
    x1: Shaped[Array | np.ndarray, "n1 ..."],
    x2: Shaped[Array | np.ndarray, "n2 ..."] | None = None,
    *,
    method: str = "auto",
    trace: bool = True,
    filter_spec: Any = eqx.is_inexact_array,
) -> Float[Array, "n1 n2"] | Float[Array, "n1 n2 k k"]:
    """The empirical neural tangent kernel Θ(x1, x2) = J(x1) J(x2)ᵀ of a model.

    J(x) = ∂f(x; θ)/∂θ is the Jacobian of the (flattened, K-dimensional) output of ONE example
    with respect to the parameters selected by `filter_spec`; the model is vmapped internally.

    **Methods:**

    - `"jacobian"`: materialize J(x1) and J(x2) (`jax.jacrev`, memory `N·K·P`) and contract
      them.
    - `"ntvp"`: NTK-vector products. For each example of `x1` the K rows of its Jacobian come
      from K vjps and are pushed through the linearization of the batched model on `x2` (one
      jvp each). Only a chunk of per-example Jacobians (at most 256 MiB) is held at a time;
      the full Jacobian is never formed.
    - `"structured"`: layer-aware. For every `eqx.nn.Linear` layer, ∂f_k/∂W = δ_k aᵀ and
      ∂f_k/∂b = δ_k, so its kernel is (A1 A2ᵀ + 1[bias]) ⊙ (D1 D2ᵀ) from the layer inputs A and
      the backprop signals D (per output), respecting `filter_spec` per leaf (a weight-only
      selection gives (A1 A2ᵀ)⊙(D1 D2ᵀ), a bias-only one D1 D2ᵀ); a layer called several times
      sums over pairs of calls. Every other selected leaf falls back to `"ntvp"`. Linear
      layers must be called as `layer(x)` directly on the example (not inside an inner
      `jax.vmap`/`lax.scan`; otherwise a `ValueError` names `method`), and their weights
      must not also be used outside the call.
    - `"auto"`: `"structured"` if a selected parameter belongs to an `eqx.nn.Linear` and the
      model traces with the taps; otherwise `"jacobian"` if the Jacobians take at most 256
      MiB, else `"ntvp"`.

    All methods agree to ~1e-5 relative in float32.

    **Arguments:**

    - `model`: an `eqx.Module` whose `__call__` takes ONE example.
    - `x1`: a batch of inputs `[N1, ...]`.
    - `x2`: a second batch `[N2, ...]` of the same example shape; `None` means `x1` (the
      Jacobian of `x1` is then computed once).
    - `method`: `"auto"`, `"jacobian"`, `"ntvp"` or `"structured"`.
    - `trace`: if `True`, SUM over the output axis: Θ[a, b] = Σ_k ⟨J_k(x1_a), J_k(x2_b)⟩.
    - `filter_spec`: which parameters the Jacobian is taken with respect to (see
      [`nte.split`][]).

    **Returns:**

    `Θ` of shape `[N1, N2]` if `trace`, else `[N1, N2, K, K]` with
    Θ[a, b, k, l] = ⟨J_k(x1_a), J_l(x2_b)⟩.

    !!! example

        ```python
        model = nte.nn.MLP(64, 128, 2, 10, key=jax.random.key(0))
        theta = nte.empirical_ntk(model, x[:8])                 # [8, 8]
        full = nte.empirical_ntk(model, x[:8], x[8:12], trace=False)  # [8, 4, 10, 10]
        ```
    """
    check_module(model)
    check_choice(method, _METHODS, "method")
    if not isinstance(trace, bool):
        raise TypeError(f"`trace` must be a bool, got {type(trace).__name__}.")
    x1, x2 = check_batch_pair(model, x1, x2)
    params, static = split(model, filter_spec)
    if not jtu.tree_leaves(params):
        raise ValueError("`filter_spec` selects no floating-point parameter of `model`.")
    if method == "auto":
        method = _auto(params, static, x1, x2)
    try:
        return _kernel(params, static, x1, x2, method, trace)
    except jax.errors.UnexpectedTracerError as error:
        if method != "structured":
            raise
        raise ValueError(
            '`method="structured"` needs the eqx.nn.Linear layers of `model` to be called '
            "directly on the example, not inside an inner jax.vmap/lax.scan; use "
            '`method="ntvp"` (or "auto") for this model.'
        ) from error
