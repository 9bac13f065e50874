"""Conv layers from their taps: the exact sums without B×N memory.

The per-example weight gradient of a conv layer is a sum over its output positions p,
g_b = Σ_p δ_b[p] P_b[p]ᵀ (P_b[p]: the input patch, δ_b[p]: the backprop signal at p), not a
rank-1 outer product, so the series of the dense layers does not apply. A `lax.scan` over
small groups of examples forms each group's g_b by ONE einsum from the taps and adds
log(1 − β s g_b); extra memory O(group·N_layer + group·positions·width) per step. See
[maths: the likelihood methods](../math.md#likelihood-methods).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._base import Part
from ._kernels import Stats, count_true, merge_stats, tree_stats

GROUP_ELEMENTS = 2**18
"""A group of examples holds about this many gradient elements (at least one example)."""


def conv_grads(D: Array, A: Array) -> Array:
    """Per-example weight gradients `[G, O, F]` from signals `D` `[G, P, O]` and patches `A`
    `[G, P, F]`: g_b = Σ_p δ_b[p] P_b[p]ᵀ."""
    return jnp.einsum("gpo,gpf->gof", D, A, precision=jax.lax.Precision.HIGHEST)


def conv_bound(beta, D: Array, A: Array) -> Array:
    """U = β·max_b Σ_p ‖δ_b[p]‖∞‖P_b[p]‖∞ ≥ max |β s g| over the layer's weights."""
    per_position = jnp.max(jnp.abs(D), axis=2) * jnp.max(jnp.abs(A), axis=2)
    return beta * jnp.max(jnp.sum(per_position, axis=1))


def _grouped(D: Array, A: Array, group: int):
    """The taps in groups of `group` examples (zero rows pad the last group, masked out)."""
    n = D.shape[0]
    group = max(1, min(group, n))
    num = -(-n // group)

    def reshape(a):
        a = jnp.pad(a, ((0, num * group - n),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape((num, group) + a.shape[1:])

    weight = (jnp.arange(num * group) < n).reshape(num, group)
    return reshape(D), reshape(A), weight


def conv_weight_part(D: Array, A: Array, s: Array, position: int) -> Part:
    """The [`Part`][] of a conv layer's weight (signs `s`, shaped like the weight) from its
    taps `D` `[B, P, O]`, `A` `[B, P, F]`: exact sums, the bound [`conv_bound`][] and the
    exact max without logs, each a `lax.scan` over groups of examples."""
    group = max(1, GROUP_ELEMENTS // max(1, s.size))
    Dg, Ag, weight = _grouped(D, A, group)
    lead = (Dg.shape[1],)

    def grads(d, a):
        return jnp.reshape(conv_grads(d, a), lead + s.shape)

    def stats(beta):
        def body(acc, inputs):
            d, a, w = inputs
            return merge_stats(acc, tree_stats([grads(d, a)], [s], beta, w)), None

        zeros = Stats([jnp.zeros(s.shape, D.dtype)], jnp.zeros((), D.dtype), [s != s])
        return jax.lax.scan(body, zeros, (Dg, Ag, weight))[0]

    def exact_max(beta):
        bs = jnp.asarray(beta, D.dtype) * s.astype(D.dtype)

        def body(top, inputs):
            d, a, w = inputs
            u = jnp.where(jnp.reshape(w, lead + (1,) * s.ndim), bs * grads(d, a), 0)
            return jnp.maximum(top, jnp.max(u, axis=0)), None

        top = jax.lax.scan(body, jnp.zeros(s.shape, D.dtype), (Dg, Ag, weight))[0]
        return jnp.max(top, initial=0.0), count_true(top > 1)

    return Part((position,), stats, lambda beta: conv_bound(beta, D, A), exact_max)


def conv_bias_part(D: Array, s: Array, position: int) -> Part:
    """The [`Part`][] of a conv layer's bias: its per-example gradient Σ_p δ_b[p]."""
    Db = jnp.reshape(jnp.sum(D, axis=1), D.shape[:1] + s.shape)
    return Part((position,), lambda beta: tree_stats([Db], [s], beta))
