"""Counting exact zeros: the sparsity of a parameter pytree."""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PyTree


def sparsity(params: PyTree) -> tuple[PyTree[Float[Array, ""]], Float[Array, ""]]:
    """The fraction of parameters that are exactly zero, per leaf and overall.

    **Arguments:**

    - `params`: a pytree of arrays (e.g. the first output of [`nte.split`][]); `None` leaves are
      kept as `None`.

    **Returns:**

    `(per_leaf, overall)`: a params-shaped pytree of float32 scalars (zeros / size of each
    leaf) and the overall fraction (all zeros / all elements), a float32 scalar (`0` for an
    empty tree).

    !!! example

        ```python
        per_leaf, overall = nte.pruning.sparsity(params)
        ```
    """
    per_leaf = jtu.tree_map(lambda p: jnp.mean(p == 0).astype(jnp.float32), params)
    leaves = jtu.tree_leaves(params)
    zeros = sum((jnp.sum(p == 0) for p in leaves), jnp.int32(0))
    size = sum(p.size for p in leaves)
    overall = (zeros / max(size, 1)).astype(jnp.float32)
    return per_leaf, overall
