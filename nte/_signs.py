"""Fixed signs of the ensemble weights (Dale's law): reading, checking and keeping them.

One home for every sign helper: [`nte.sign_mask`][] and [`nte.sign_violations`][] (exported
from `nte`), [`nte.pruning.project_signs`][] and [`nte.pruning.keep_signs`][] (exported from
`nte.pruning`), and [`nte.nn.dale_signs`][] (exported from `nte.nn`, next to the constructor
[`nte.nn.dale_mlp`][]). The signs are fixed in the NTE: see
[maths: the posterior update](../math.md#the-posterior-update).
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, Int, PyTree

from ._split import split


def _is_none(x: Any) -> bool:
    return x is None


def _sign(p: Array) -> Array:
    return jnp.sign(p).astype(jnp.int8)


def sign_mask(params: PyTree) -> PyTree[Int[Array, "..."]]:
    """The sign of every parameter, as a params-shaped pytree of `int8` in `{-1, 0, +1}`.

    **Arguments:**

    - `params`: a pytree of arrays (e.g. the first output of [`nte.split`][]).

    **Returns:**

    `sign(params)` leafwise, stored compactly as `int8` (`None` leaves are kept).
    """
    return jtu.tree_map(_sign, params)


def sign_violations(params: PyTree, signs: PyTree) -> Int[Array, ""]:
    """Count parameters whose sign differs from the fixed `signs`.

    A parameter that is exactly zero is never a violation (a pruned expert keeps its sign);
    every non-zero parameter must have `sign(p) == s`. A parameter whose fixed sign is 0 (a dead
    expert) violates the constraint as soon as it becomes non-zero. A `None` leaf of `signs`
    where `params` has an array leaves that array unconstrained (see [`nte.nn.dale_signs`][]).

    **Arguments:**

    - `params`: a pytree of arrays.
    - `signs`: a pytree of the same structure, e.g. from [`nte.sign_mask`][].

    **Returns:**

    The total number of violating elements, an `int32` scalar.
    """
    p_leaves, treedef = jtu.tree_flatten(params)
    s_leaves = treedef.flatten_up_to(signs)
    counts = [
        jnp.sum((p != 0) & (_sign(p) != s.astype(jnp.int8)))
        for p, s in zip(p_leaves, s_leaves)
        if s is not None
    ]
    return jnp.asarray(sum(counts, jnp.int32(0)), dtype=jnp.int32)


def _project(p: Array | None, s: Array | None) -> Array | None:
    if s is None:
        return p
    return jnp.where(_sign(p) == s.astype(jnp.int8), p, jnp.zeros_like(p))


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
    `optax.apply_updates` gives exactly `0` there (the projection of
    [`nte.pruning.project_signs`][] applied to `θ + u`), and leaves all other updates unchanged.

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


def _column_signs(weight: Array, layer: int) -> np.ndarray:
    """The sign of every column (presynaptic unit) of `weight`; both signs in a column raise."""
    w = np.asarray(weight)
    pos, neg = (w > 0).any(axis=0), (w < 0).any(axis=0)
    if np.any(pos & neg):
        unit = int(np.flatnonzero(pos & neg)[0])
        raise ValueError(
            f"`model` violates Dale's law: unit {unit} feeding layer {layer} has outgoing "
            "weights of both signs; call `dale_signs` on the model as initialized by `dale_mlp`."
        )
    return np.where(neg, -1, 1).astype(np.int8)


def dale_signs(model: eqx.Module) -> PyTree[Int[Array, "..."] | None]:
    """The Dale's-law sign constraints of a model from [`nte.nn.dale_mlp`][].

    **Arguments:**

    - `model`: an `nte.nn.MLP` that obeys Dale's law (e.g. as returned by `dale_mlp`).

    **Returns:**

    A pytree with the structure of `nte.split(model)[0]`: for every weight matrix after the
    first, an `int8` array of its shape whose column `j` is the sign of hidden unit `j`
    (`+1` excitatory, `−1` inhibitory; a column that is entirely 0 counts as `+1`); `None` for
    the unconstrained leaves (first-layer weights, biases). Use it with
    [`nte.sign_violations`][], [`nte.pruning.project_signs`][] and
    [`nte.pruning.keep_signs`][].
    """
    from .nn._mlp import MLP  # nte.nn imports this module (through nte.nn._dale)

    if not isinstance(model, MLP):
        raise TypeError(f"`model` must be an nte.nn.MLP, got {type(model).__name__}.")
    params, _ = split(model)
    signs = jtu.tree_map(lambda _: None, params)
    values = [
        jnp.broadcast_to(jnp.asarray(_column_signs(layer.weight, i)), layer.weight.shape)
        for i, layer in enumerate(model.layers[1:], start=1)
    ]
    where = lambda t: [layer.weight for layer in t.layers[1:]]
    return eqx.tree_at(where, signs, values, is_leaf=_is_none)
