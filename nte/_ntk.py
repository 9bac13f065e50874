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
from ._errors import check_choice, check_module, check_stateless
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
# both read by the taps of `nte/_taps.py` (shared with the likelihood methods). For a conv
# layer ∂f_k/∂W = Σ_p δ_k[p] P[p]ᵀ over the output positions p (P[p]: the input patch), so
# Θ_W(a, b) = Σ_k Σ_{p,q} ⟨P_a[p], P_b[q]⟩⟨δ_{a,k}[p], δ_{b,k}[q]⟩ and the bias kernel is
# Σ_k ⟨Σ_p δ_{a,k}[p], Σ_q δ_{b,k}[q]⟩.

_PAIR_CHUNK_BYTES = 2**27  # "pairs" holds at most this many bytes of position-pair products


def _signals(tapped, x, outputs, k_out):
    """Inputs A_u and backprop signals D_u `[K, *output]` of every tapped call u."""
    out, vjp, inputs = taps.linearize(lambda: jnp.ravel(tapped(x)), outputs)
    (d,) = jax.vmap(vjp)(jnp.eye(k_out, dtype=out.dtype))
    return inputs, d


def _layer_kernel(a1, d1, a2, d2, selected, trace):
    """The kernel of one pair of calls (u, v) of a Linear layer."""
    d1, d2 = (jnp.reshape(d, d.shape[:2] + (-1,)) for d in (d1, d2))
    g = a1 @ a2.T if selected[0] else 0.0
    g = g + 1.0 if selected[1] else g
    if trace:
        return jnp.einsum("akj,bkj->ab", d1, d2) * g
    return jnp.einsum("akj,blj->abkl", d1, d2) * jnp.asarray(g)[..., None, None]


def _conv_pairs(p1, d1, p2, d2, trace):
    """Θ_W by the position-pair form, one row of `x1` at a time (vmapped in chunks so that at
    most `_PAIR_CHUNK_BYTES` of pair products are held): memory chunk·N2·P1·P2, no Jacobian."""

    def row(inputs):
        pa, da = inputs  # [P, F], [K, P, O]
        g = jnp.einsum("pf,bqf->bpq", pa, p2)
        if trace:
            return jnp.einsum("bpq,kpo,bkqo->b", g, da, d2)
        return jnp.einsum("bpq,kpo,blqo->bkl", g, da, d2)

    per_row = p2.shape[0] * p1.shape[1] * p2.shape[1] * p1.dtype.itemsize * (1 if trace else 2)
    chunk = int(max(1, min(p1.shape[0], _PAIR_CHUNK_BYTES // max(1, per_row))))
    return jax.lax.map(row, (p1, d1), batch_size=chunk)


def _conv_jacobian(p1, d1, p2, d2, trace):
    """Θ_W from the layer's per-example Jacobian J_k = Σ_p δ_k[p] P[p]ᵀ, formed from the taps
    by one einsum (memory N·K·O·F): cheaper than the pair form when O·F ≪ P²."""
    j1 = jnp.einsum("akpo,apf->akof", d1, p1)
    j2 = j1 if p2 is p1 else jnp.einsum("akpo,apf->akof", d2, p2)
    return jnp.einsum("akof,bkof->ab" if trace else "akof,blof->abkl", j1, j2)


def _conv_kernel(p1, d1, p2, d2, selected, trace, form):
    """The kernel of a conv layer; `p` `[N, P, F]` patches, `d` `[N, K, P, O]` signals (all
    calls of the layer concatenated along the positions P)."""
    total = 0.0
    if selected[0]:
        n1, k, npos, o = d1.shape
        n2, f = p2.shape[0], p1.shape[2]
        pairs = n1 * n2 * npos * p2.shape[1] * (f + k * o)
        jacobian = (n1 + n2) * k * npos * o * f + n1 * n2 * k * o * f
        if form == "pairs" or (form == "auto" and pairs < jacobian):
            total = _conv_pairs(p1, d1, p2, d2, trace)
        else:
            total = _conv_jacobian(p1, d1, p2, d2, trace)
    if selected[1]:
        s1, s2 = jnp.sum(d1, axis=2), jnp.sum(d2, axis=2)
        total = total + jnp.einsum("ako,bko->ab" if trace else "ako,blo->abkl", s1, s2)
    return total


def _conv_taps(a, d, calls, outputs):
    """The patches `[N, P, F]` and signals `[N, K, P, O]` of a conv layer's `calls`."""
    p = jnp.concatenate([a[u] for u in calls], axis=1)
    d = jnp.concatenate([taps.conv_signals(d[u], outputs[u]) for u in calls], axis=2)
    return p, d


def _structured_ntk(f, params, static, x1, x2, trace, k_out, conv_form="auto"):
    tapped = taps.tap(merge(params, static))
    rec = taps.discover(lambda: jnp.ravel(tapped(x1[0])))
    nodes = taps.nodes(params)
    selected = [(n.weight is not None, n.bias is not None) for n in nodes]
    handled = sorted(i for i in set(rec.calls) if any(selected[i]))
    per_example = jax.vmap(lambda x: _signals(tapped, x, rec.outputs, k_out))
    a1, d1 = per_example(x1)
    a2, d2 = (a1, d1) if x2 is None else per_example(x2)
    total = None
    for i in handled:
        calls = [u for u, c in enumerate(rec.calls) if c == i]
        if taps.is_conv(nodes[i]):
            p1, e1 = _conv_taps(a1, d1, calls, rec.outputs)
            p2, e2 = (p1, e1) if x2 is None else _conv_taps(a2, d2, calls, rec.outputs)
            terms = [_conv_kernel(p1, e1, p2, e2, selected[i], trace, conv_form)]
        else:
            pairs = itertools.product(calls, calls)
            terms = [
                _layer_kernel(a1[u], d1[u], a2[v], d2[v], selected[i], trace) for u, v in pairs
            ]
        for term in terms:
            total = term if total is None else total + term
    lin, rest = eqx.partition(params, taps.layer_mask(params, handled))
    if jtu.tree_leaves(rest):
        f_rest = lambda p, x: f(eqx.combine(p, lin), x)
        term = _ntvp_ntk(f_rest, rest, x1, x2, trace, k_out)
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------------------------------


@eqx.filter_jit
def _kernel(params, static, x1, x2, method, trace, conv_form="auto"):
    f = lambda p, x: jnp.ravel(merge(p, static)(x))
    k_out = int(np.prod(jax.eval_shape(f, params, x1[0]).shape))
    if method == "jacobian":
        return _jacobian_ntk(f, params, x1, x2, trace)
    if method == "ntvp":
        return _ntvp_ntk(f, params, x1, x2, trace, k_out)
    return _structured_ntk(f, params, static, x1, x2, trace, k_out, conv_form)


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
      sums over pairs of calls. For every `eqx.nn.Conv1d/2d/3d` layer (`groups=1`, any
      stride, padding, padding mode and dilation) ∂f_k/∂W = Σ_p δ_k[p] P[p]ᵀ over the output
      positions p (P[p]: the input patch), so its kernel is
      Σ_k Σ_{p,q} ⟨P_a[p], P_b[q]⟩⟨δ_{a,k}[p], δ_{b,k}[q]⟩ (in chunks of rows of `x1`, at most
      128 MiB of position pairs) or, where fewer FLOPs, the contraction of the layer's
      per-example Jacobian Σ_p δ_k[p] P[p]ᵀ formed from the taps by one einsum; its bias
      kernel is Σ_k ⟨Σ_p δ_{a,k}[p], Σ_q δ_{b,k}[q]⟩. Every other selected leaf (a grouped
      convolution's among them) falls back to `"ntvp"`. Tapped layers must be called as
      `layer(x)` directly on the example (not inside an inner `jax.vmap`/`lax.scan`;
      otherwise a `ValueError` names `method`), and their weights must not also be used
      outside the call.
    - `"auto"`: `"structured"` if a selected parameter belongs to an `eqx.nn.Linear` or conv
      layer and the model traces with the taps; otherwise `"jacobian"` if the Jacobians take
      at most 256 MiB, else `"ntvp"`.

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
    check_stateless(model)
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
            '`method="structured"` needs the eqx.nn.Linear/Conv layers of `model` to be called '
            "directly on the example, not inside an inner jax.vmap/lax.scan; use "
            '`method="ntvp"` (or "auto") for this model.'
        ) from error
