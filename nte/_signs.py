"""Fixed signs of the ensemble weights (Dale's law) and counting their violations."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree


def sign_mask(params: PyTree) -> PyTree[Int[Array, "..."]]:
    """The sign of every parameter, as a params-shaped pytree of `int8` in `{-1, 0, +1}`.

    **Arguments:**

    - `params`: a pytree of arrays (e.g. the first output of [`nte.split`][]).

    **Returns:**

    `sign(params)` leafwise, stored compactly as `int8` (`None` leaves are kept).
    """
    return jax.tree_util.tree_map(lambda p: jnp.sign(p).astype(jnp.int8), params)


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
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    s_leaves = treedef.flatten_up_to(signs)
    counts = [
        jnp.sum((p != 0) & (jnp.sign(p).astype(jnp.int8) != s.astype(jnp.int8)))
        for p, s in zip(p_leaves, s_leaves)
        if s is not None
    ]
    return jnp.asarray(sum(counts, jnp.int32(0)), dtype=jnp.int32)
