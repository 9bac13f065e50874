"""The additive variant of the NTE update, "scaled SGD"."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Float, PyTree

from ._errors import check_positive
from ._posterior import _check_grads
from .likelihood._base import ExpertLogLikelihoods


class ScaleByScaledSGDState(NamedTuple):
    """State of [`nte.scale_by_scaled_sgd`][]: `norm` is Z = ‖θ‖₁ at init (for renormalize)."""

    norm: Float[Array, ""]


def _l1(tree) -> Array:
    leaves = jtu.tree_leaves(tree)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return sum((jnp.sum(jnp.abs(v)) for v in leaves), jnp.zeros((), dtype))


def scale_by_scaled_sgd(
    learning_rate: float | int | Float[Array, ""],
    *,
    renormalize: bool = False,
    max_delta: float | int | Float[Array, ""] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Additive NTE variant: per example, Δ ← Δ − lr·|Δ|⊙g_b, origin variant
    ([maths: scaled SGD](../math.md#scaled-sgd)).

    The examples of a batch are applied one after another (a `lax.scan` over the batch axis of
    the per-example gradients), each with the gradient given (frozen within the batch). Then
    optionally Δ is rescaled to the initial L1 norm Z (`renormalize`) and clipped to
    |Δ| ≤ `max_delta` keeping its sign. Δ = θ (θ0 = 0).

    As long as no example overshoots (lr·s·g < 1), one example multiplies Δ by (1 − lr s g), so
    a batch multiplies it by Π_b (1 − lr s g_b) = exp(L): with `renormalize=True` this equals
    [`nte.scale_by_nte`][] with β = lr, η = 1 (up to rounding). **Signs can flip:** one
    example multiplies Δ_i by (1 − lr·s_i·g_{b,i}), so Δ_i changes sign exactly when
    lr·s_i·g_{b,i} > 1 (an overshoot) and becomes exactly 0 when it equals 1; below that it
    keeps its sign. The multiplicative [`nte.scale_by_nte`][] never flips a sign.

    **Arguments:**

    - `learning_rate`: lr > 0 (injectable).
    - `renormalize`: rescale Δ to ‖Δ‖₁ = Z after each batch.
    - `max_delta`: optional clip on |Δ|, > 0.

    **Returns:**

    An `optax.GradientTransformationExtraArgs`; `update(per_example_grads, state, params)`
    returns increments for `optax.apply_updates`.
    """
    check_positive(learning_rate, "learning_rate")
    if max_delta is not None:
        check_positive(max_delta, "max_delta")

    def init_fn(params):
        return ScaleByScaledSGDState(_l1(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("`params` is required by nte.scale_by_scaled_sgd's update.")
        if isinstance(updates, ExpertLogLikelihoods):
            raise TypeError(
                "nte.scale_by_scaled_sgd's update takes per-example gradients (its steps are "
                "applied one example at a time), not nte.ExpertLogLikelihoods."
            )
        _check_grads(updates, params)

        def step(delta, g):
            return jtu.tree_map(
                lambda d, gb: (d - jnp.asarray(learning_rate, d.dtype) * jnp.abs(d) * gb).astype(
                    d.dtype
                ),
                delta,
                g,
            ), None

        delta = jax.lax.scan(step, params, updates)[0]
        delta = _project(delta, state.norm, renormalize, max_delta)
        return jtu.tree_map(lambda n, p: (n - p).astype(p.dtype), delta, params), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _project(delta: PyTree, norm, renormalize: bool, max_delta):
    if renormalize:
        total = _l1(delta)
        scale = jnp.where(total > 0, norm / jnp.where(total > 0, total, 1), 1)
        delta = jtu.tree_map(lambda d: (d * scale.astype(d.dtype)).astype(d.dtype), delta)
    if max_delta is not None:
        delta = jtu.tree_map(
            lambda d: jnp.clip(
                d, -jnp.asarray(max_delta, d.dtype), jnp.asarray(max_delta, d.dtype)
            ),
            delta,
        )
    return delta
