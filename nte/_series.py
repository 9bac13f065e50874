"""Per-example activations and backprop signals of `eqx.nn.Linear` layers, and the series
Σ_b log(1 − β s a_b δ_bᵀ) = −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ(A^{∘m}) computed with one matmul per order.

For a dense layer y = W a + b the per-example weight gradient is the outer product
g_b = δ_b a_bᵀ (δ_b = ∂ℓ_b/∂y), so no B×N tensor is ever needed. The taps are read by replacing
every `eqx.nn.Linear` by a wrapper that records its input and adds a zero perturbation to its
output; the gradient of the loss with respect to that perturbation is δ_b.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ._loglik_core import leaf_stats
from ._split import merge

MAX_TERMS = 64


def is_linear(node: Any) -> bool:
    return isinstance(node, eqx.nn.Linear)


def linear_nodes(tree: Any) -> list:
    """Every `eqx.nn.Linear` in `tree`, in flattening order."""
    return [n for n in jtu.tree_leaves(tree, is_leaf=is_linear) if is_linear(n)]


class _Sink:
    """Collects the inputs seen by the taps during one trace (hashed by identity)."""

    def __init__(self):
        self.inputs: dict[int, list] = {}


class _Tap(eqx.Module):
    linear: eqx.nn.Linear
    perturbation: Array
    index: int = eqx.field(static=True)
    sink: _Sink = eqx.field(static=True)

    def __call__(self, x, *, key=None):
        self.sink.inputs.setdefault(self.index, []).append(x)
        return self.linear(x, key=key) + self.perturbation


def _tapped_loss(loss_fn, static, indices, sinks):
    def single(perturbations, params, x, y):
        sink = _Sink()
        sinks.append(sink)
        model = merge(params, static)
        nodes = linear_nodes(model)
        taps = [_Tap(nodes[i], q, i, sink) for i, q in zip(indices, perturbations)]
        model = eqx.tree_at(lambda m: [linear_nodes(m)[i] for i in indices], model, taps)
        loss = loss_fn(model, x, y)
        inputs = [sink.inputs.get(i, [None])[0] for i in indices]
        return loss, inputs

    return single


def tappable_layers(loss_fn, params, static, x, y) -> list[int]:
    """Indices of the Linear layers (with a 2-D weight parameter) that are called exactly once
    per example on a vector; found by tracing one example (no FLOPs)."""
    nodes = linear_nodes(merge(params, static))
    pnodes = linear_nodes(params)
    if len(pnodes) != len(nodes):
        return []
    candidates = [
        i for i, n in enumerate(pnodes) if n.weight is not None and jnp.ndim(n.weight) == 2
    ]
    if not candidates:
        return []
    sinks: list = []
    zeros = [jnp.zeros(nodes[i].weight.shape[0], nodes[i].weight.dtype) for i in candidates]
    x0, y0 = jtu.tree_map(lambda a: a[0], x), jtu.tree_map(lambda a: a[0], y)
    jax.eval_shape(_tapped_loss(loss_fn, static, candidates, sinks), zeros, params, x0, y0)
    seen = sinks[0].inputs
    return [
        i
        for i in candidates
        if len(seen.get(i, [])) == 1
        and seen[i][0].shape == (nodes[i].weight.shape[1],)
        and seen[i][0].dtype == nodes[i].weight.dtype
    ]


def taps(loss_fn, params, static, x, y, indices: list[int]):
    """Per-example `(D, A)` for each tapped layer: D (batch, out) = δ_b, A (batch, in) = a_b."""
    nodes = linear_nodes(params)
    zeros = [jnp.zeros(nodes[i].weight.shape[0], nodes[i].weight.dtype) for i in indices]
    single = _tapped_loss(loss_fn, static, indices, [])
    grad = jax.grad(single, has_aux=True)
    deltas, inputs = jax.vmap(grad, in_axes=(None, None, 0, 0))(zeros, params, x, y)
    return list(zip(deltas, inputs))


def series_bound(beta, D: Array, A: Array) -> Array:
    """U = β·max_b ‖δ_b‖∞‖a_b‖∞ ≥ max |β s g| over the layer's weights."""
    return beta * jnp.max(jnp.max(jnp.abs(D), axis=1) * jnp.max(jnp.abs(A), axis=1))


def series_sum(D: Array, A: Array, s: Array, beta, bound: Array, terms: int | None) -> Array:
    """Σ_b log(1 − β s_{kj} δ_{bk} a_{bj}) = −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ A^{∘m}.

    `terms=None` adds orders until the truncation bound U^M/((M+1)(1−U)) (relative to Σ_b|u_b|)
    is below the dtype's epsilon, at most `MAX_TERMS`; an int uses exactly that many terms.
    Only valid for `bound` = U < 1.
    """
    dtype = D.dtype
    # Per example, u_b = s ⊙ D̂_b Â_bᵀ with D̂_b = c_b δ_b/‖δ_b‖∞, Â_b = a_b/‖a_b‖∞ and
    # c_b = β‖δ_b‖∞‖a_b‖∞ ≤ U: every factor is ≤ 1 in magnitude, so no power overflows.
    d_norm = jnp.max(jnp.abs(D), axis=1, keepdims=True)
    a_norm = jnp.max(jnp.abs(A), axis=1, keepdims=True)
    d_norm, a_norm = jnp.where(d_norm > 0, d_norm, 1), jnp.where(a_norm > 0, a_norm, 1)
    D = D / d_norm * (jnp.asarray(beta, dtype) * d_norm * a_norm)
    A = A / a_norm
    sb = s.astype(dtype)

    def add(m, total, Dm, Am, sbm):
        Dm, Am, sbm = Dm * D, Am * A, sbm * sb
        prod = jnp.matmul(Dm.T, Am, precision=jax.lax.Precision.HIGHEST)
        return total - sbm * prod / m.astype(dtype), Dm, Am, sbm

    init = (jnp.zeros(s.shape, dtype), jnp.ones_like(D), jnp.ones_like(A), jnp.ones_like(sb))
    if terms is not None:
        carry = init
        for m in range(1, terms + 1):
            carry = add(jnp.asarray(m), *carry)
        return carry[0]
    tol = jnp.finfo(dtype).eps
    U = jnp.asarray(bound, dtype)

    def cond(c):
        m = c[0]
        rel = U**m / ((m + 1) * (1 - U))
        return (m == 0) | ((m < MAX_TERMS) & (rel > tol))

    def body(c):
        m = c[0] + 1
        return (m, *add(m, *c[1:]))

    return jax.lax.while_loop(cond, body, (jnp.asarray(0), *init))[1]


def bias_stats(D: Array, s: Array, beta):
    """Exact Σ_b log(1 − β s δ_b) for a bias (its gradient is δ_b)."""
    return leaf_stats(D, s, beta)
