"""Keeping fixed signs (Dale's law) under optimizers that could flip them."""

from typing import Any, NamedTuple

import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Int, PyTree

from .._signs import sign_mask


def _is_none(x: Any) -> bool:
    return x is None


def _project(p: Array | None, s: Array | None) -> Array | None:
    if s is None:
        return p
    return jnp.where(jnp.sign(p).astype(jnp.int8) == s.astype(jnp.int8), p, jnp.zeros_like(p))


def project_signs(params: PyTree, signs: PyTree) -> PyTree:
    """Set to 0 every parameter whose sign differs from its fixed sign.

    A parameter `p` with fixed sign `s` is kept if `sign(p) == s` and replaced by exactly `0`
    otherwise (so a parameter with `s = 0`, a dead expert, is always `0`). A `None` leaf of
    `signs` where `params` has an array means "unconstrained" (as in [`nte.nn.dale_signs`][]).
    After `project_signs`, [`nte.sign_violations`][] is 0.

    **Arguments:**

    - `params`: a pytree of arrays.
    - `signs`: a pytree with the structure of `params` (e.g. from [`nte.sign_mask`][] or
      [`nte.nn.dale_signs`][]), values in `{-1, 0, +1}` or `None`.

    **Returns:**

    The projected parameters (same structure and dtypes).
    """
    return jtu.tree_map(lambda s, p: _project(p, s), signs, params, is_leaf=_is_none)


class KeepSignsState(NamedTuple):
    """State of [`nte.pruning.keep_signs`][]: the fixed `signs` (`int8`, `None` = free)."""

    signs: PyTree[Int[Array, "..."] | None]


def keep_signs(signs: PyTree | None = None) -> optax.GradientTransformation:
    """An optax transform that projects every step onto the fixed signs (for SGD on Dale nets).

    Chain it LAST (`optax.chain(optax.sgd(0.1), nte.pruning.keep_signs(signs))`): it changes
    the update of every parameter whose new value `θ + u` would violate its sign to `−θ`, so
    `optax.apply_updates` gives exactly `0` there (the projection of [`nte.pruning.project_signs`][]
    applied to `θ + u`), and leaves all other updates unchanged.

    **Arguments:**

    - `signs`: the fixed signs (a params-shaped pytree, `None` leaves unconstrained), or `None`
      to take `sign(params)` at `init`.

    **Returns:**

    An `optax.GradientTransformation` with a [`nte.pruning.KeepSignsState`][]; its `update`
    requires `params`.
    """

    def init_fn(params: PyTree) -> KeepSignsState:
        return KeepSignsState(sign_mask(params) if signs is None else signs)

    def update_fn(updates: PyTree, state: KeepSignsState, params: Any = None):
        if params is None:
            raise ValueError("`keep_signs` needs `params` in `update(updates, state, params)`.")

        def one(s, u, p):
            if s is None:
                return u
            new = optax.apply_updates(p, u)
            return jnp.where(_project(new, s) == new, u, -p)

        out = jtu.tree_map(one, state.signs, updates, params, is_leaf=_is_none)
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)
