"""Dale's-law MLPs: every hidden unit is excitatory or inhibitory.

The sign helpers (`nte.nn.dale_signs` among them) live in `nte/_signs.py`.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ._mlp import MLP


def _unit_counts(width: int, excitatory_fraction: float) -> tuple[int, int]:
    if isinstance(excitatory_fraction, bool) or not 0 < excitatory_fraction < 1:
        raise ValueError(f"`excitatory_fraction` must lie in (0, 1), got {excitatory_fraction!r}.")
    n_e = round(excitatory_fraction * width)
    n_i = width - n_e
    if n_e < 1 or n_i < 1:
        raise ValueError(
            f"`excitatory_fraction`={excitatory_fraction!r} with `width`={width} gives {n_e} "
            f"excitatory and {n_i} inhibitory units per hidden layer; each layer needs at "
            "least one of each."
        )
    return n_e, n_i


def _dale_weight(key: PRNGKeyArray, fan_out: int, n_e: int, n_i: int, gain: float) -> Array:
    """Columns `< n_e` are `c|N(0,1)|`, the others `−c (n_e/n_i) |N(0,1)|`."""
    c = gain / math.sqrt(n_e + n_e**2 / n_i)
    col = jnp.concatenate([jnp.ones(n_e), -jnp.full(n_i, n_e / n_i)])
    return c * jnp.abs(jr.normal(key, (fan_out, n_e + n_i))) * col


def dale_mlp(
    in_size: int,
    width: int,
    depth: int,
    out_size: int,
    *,
    excitatory_fraction: float = 0.8,
    use_bias: bool = True,
    activation: Callable[[Array], Array] = jax.nn.relu,
    zero_bias: bool = False,
    bias_std: float = 0.01,
    key: PRNGKeyArray,
) -> MLP:
    r"""An [`nte.nn.MLP`][] obeying Dale's law: each hidden unit is excitatory or inhibitory.

    All outgoing weights of a hidden unit (a column of the next layer's weight matrix) share one
    sign: in every hidden layer the first `n_E = round(excitatory_fraction · width)` units are
    excitatory (+), the remaining `n_I = width − n_E` inhibitory (−). The input layer's weights
    (from the input features, which are not units) are unconstrained, drawn as in
    `nte.nn.MLP` (`N(0, 2/in_size)`).

    **Balanced initialization.** A weight from a hidden unit is `c·|N(0,1)|` if the unit is
    excitatory and `−c·(n_E/n_I)·|N(0,1)|` if it is inhibitory, with
    `c = gain / √(n_E + n_E²/n_I)` (`gain = √2` before a ReLU, `1` for the output layer).
    Then every unit's expected input `Σ_j E[W_ij] h_j = c·√(2/π)·h̄·(n_E − n_I·n_E/n_I) = 0`
    is zero-mean when the presynaptic units have equal mean activity `h̄` (excitation balances
    inhibition), and `Σ_j E[W_ij²] = gain²`, the same second moment as He initialization.

    Learners that keep the signs by construction: [`nte.pruning.prune_only`][] (weights only
    move to 0) and the NTE posterior update (fixed signs). SGD does not; chain
    [`nte.pruning.keep_signs`][] after it or apply [`nte.pruning.project_signs`][].

    **Arguments:**

    - `in_size`, `width`, `depth`, `out_size`: as for `nte.nn.MLP`; `depth >= 1`.
    - `excitatory_fraction`: the fraction of excitatory units per hidden layer (E:I = 80:20 by
      default); it must leave at least one excitatory and one inhibitory unit.
    - `use_bias`, `activation`, `zero_bias`, `bias_std`: as for `nte.nn.MLP`.
    - `key`: a `jax.random` key (keyword-only).

    **Returns:**

    An `nte.nn.MLP` (standard parameterization); its sign constraints are
    [`nte.nn.dale_signs`][]`(model)`.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(
            f"`depth` must be an int >= 1 (a Dale MLP needs hidden units), got {depth!r}."
        )
    n_e, n_i = _unit_counts(width, excitatory_fraction)
    mkey, *wkeys = jr.split(key, depth + 1)
    model = MLP(
        in_size,
        width,
        depth,
        out_size,
        use_bias=use_bias,
        activation=activation,
        zero_bias=zero_bias,
        bias_std=bias_std,
        key=mkey,
    )
    weights = [
        _dale_weight(k, layer.out_features, n_e, n_i, 1.0 if i == depth else math.sqrt(2.0))
        for i, (layer, k) in enumerate(zip(model.layers[1:], wkeys), start=1)
    ]
    return eqx.tree_at(lambda m: [layer.weight for layer in m.layers[1:]], model, weights)
