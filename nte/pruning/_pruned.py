"""One accessor for "which weights are pruned", whatever transformation pruned them.

The convention (see [maths: pruning](../math.md#pruning)): a weight is **pruned** when the
transformation holds it at its target (0, or θ0 for the init variants) for every later step.
The states store it as follows, and [`nte.pruning.pruned`][] reads all of them:

- [`nte.ScaleByNTEState`][]: `log_magnitudes == −inf` (λ = log|Δ| = −inf, Δ exactly 0);
- [`nte.pruning.PruneOnlyState`][] and [`nte.pruning.MagnitudeState`][]: `mask` is the
  **alive** mask (`True` = still trained), so pruned = `~mask`.
"""

from typing import Any

import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Bool, PyTree

from .._posterior import ScaleByNTEState
from ._magnitude import MagnitudeState
from ._prune_only import PruneOnlyState

_STATES = (ScaleByNTEState, PruneOnlyState, MagnitudeState)
_NAMES = "nte.ScaleByNTEState, nte.pruning.PruneOnlyState or nte.pruning.MagnitudeState"


def _is_state(x: Any) -> bool:
    return isinstance(x, _STATES)


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _find(tree: Any) -> list:
    """Every pruning state in `tree`, outermost first (also inside `MagnitudeState.inner_state`)."""
    found = []
    for node in jtu.tree_leaves(tree, is_leaf=_is_state):
        if _is_state(node):
            found.append(node)
            if isinstance(node, MagnitudeState):
                found += _find(node.inner_state)
    return found


def _own(state: Any) -> PyTree:
    """The pruned tree of one state (`optax.MaskedNode` where `optax.masked` left a leaf out)."""
    if isinstance(state, ScaleByNTEState):
        return jtu.tree_map(lambda v: v == -jnp.inf, state.log_magnitudes)
    return jtu.tree_map(jnp.logical_not, state.mask)


def _combine(trees: list[PyTree]):
    """Leafwise OR of the trees; `None` where no tree has an array (all `MaskedNode`)."""
    flat = [jtu.tree_flatten(t, is_leaf=_is_masked_node) for t in trees]
    treedef = flat[0][1]
    if any(d != treedef for _, d in flat[1:]):
        raise ValueError(
            "`state` holds pruning states over different parameter trees; read each one with "
            "`nte.pruning.pruned` separately."
        )
    out = []
    for leaves in zip(*(leaves for leaves, _ in flat)):
        arrays = [leaf for leaf in leaves if not _is_masked_node(leaf)]
        out.append(None if not arrays else _or(arrays))
    return out, treedef


def _or(arrays: list[Array]) -> Array:
    result = arrays[0]
    for a in arrays[1:]:
        result = result | a
    return result


def _fill(leaves: list, treedef, params: PyTree | None) -> list:
    """Replace the `None` places (no pruning state covers them) by `False` arrays."""
    if all(leaf is not None for leaf in leaves):
        return leaves
    if params is None:
        raise ValueError(
            "`state` prunes only part of the parameters (it sits inside `optax.masked` or "
            "`optax.multi_transform`); pass `params` so the others can be reported as not pruned."
        )
    p_leaves, p_def = jtu.tree_flatten(params)
    if p_def != treedef:
        raise ValueError(
            f"`params` must have the structure of the pruned parameters: {p_def} vs {treedef}."
        )
    return [jnp.zeros(jnp.shape(p), bool) if v is None else v for v, p in zip(leaves, p_leaves)]


def pruned(state: optax.OptState, params: PyTree | None = None) -> PyTree[Bool[Array, "..."]]:
    """Which weights are pruned, read from any pruning state: a params-shaped `bool` pytree.

    `True` marks a weight that the transformation holds at its target forever (exactly 0, or
    θ0 for the init variants): λ = −inf in [`nte.ScaleByNTEState`][] (which includes the dead
    experts, weights exactly 0 at init), `~mask` in [`nte.pruning.PruneOnlyState`][] (dead
    experts included too) and in [`nte.pruning.MagnitudeState`][] (the weights it masked; a
    weight that happens to be 0 is not pruned, as the inner optimizer may move it). The stored
    `mask` fields mean **alive** (`True` = still trained), as in jaxpruner; this function
    returns their complement, so every state reads the same way. See
    [maths: pruning](../math.md#pruning).

    The state may be nested: the known state types are searched for in the whole state
    pytree (`optax.chain`, `optax.inject_hyperparams`, `optax.masked`, `optax.multi_transform`,
    and the inner state of [`nte.pruning.magnitude`][]). Where several are found (e.g. one
    per `optax.multi_transform` label), a weight is pruned if any of them prunes it.

    **Arguments:**

    - `state`: an optimizer state containing at least one of the states above.
    - `params`: the parameters; needed only when some leaves are outside every pruning state
      (`optax.masked`, `optax.multi_transform`), which are then reported as not pruned.

    **Returns:**

    A pytree with the structure of the parameters, `bool` arrays of their shapes.

    !!! example

        ```python
        opt = optax.inject_hyperparams(nte.pruning.prune_only)(rate=0.01)
        state = opt.init(params)
        ...
        mask = nte.pruning.pruned(state)  # True = pruned
        num_pruned = sum(int(m.sum()) for m in jax.tree_util.tree_leaves(mask))
        ```
    """
    found = _find(state)
    if not found:
        raise TypeError(f"`state` contains no pruning state ({_NAMES}); got {type(state)}.")
    leaves, treedef = _combine([_own(s) for s in found])
    return jtu.tree_unflatten(treedef, _fill(leaves, treedef, params))
