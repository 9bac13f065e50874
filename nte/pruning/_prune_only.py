"""Learning by pruning only: an optax transform that only removes weights.

See [maths: learning by pruning only](../math.md#learning-by-pruning-only).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._errors import check_choice
from ._checks import RealScalar, check_momentum, check_rate
from ._cutoff import CUTOFFS, SCOPES, to_prune

_VARIANTS = ("origin", "init")


class PruneOnlyState(NamedTuple):
    """State of [`nte.pruning.prune_only`][].

    **Attributes:**

    - `count`: the number of updates so far.
    - `score`: the EMA score `v` of the (scaled) gradient, params-shaped.
    - `mask`: the **alive** mask, `True` where the weight is still trained; it only ever loses
      entries. [`nte.pruning.pruned`][] returns its complement.
    - `signs`: the fixed signs `sign(Δ)` (`int8`), set at `init`.
    - `center`: the seed point θ0 of the `"init"` variant (`None` for `"origin"`).
    """

    count: Int[Array, ""]
    score: PyTree[Float[Array, "..."]]
    mask: PyTree[Bool[Array, "..."]]
    signs: PyTree[Int[Array, "..."]]
    center: PyTree[Float[Array, "..."]] | None


def _is_function(x: Any) -> bool:
    """A plain callable, not a (callable) `eqx.Module` pytree of parameters."""
    return callable(x) and not isinstance(x, eqx.Module)


def _delta(params: PyTree, center: PyTree | None) -> PyTree:
    if center is None:
        return params
    return jtu.tree_map(lambda p, c: p - c, params, center)


def prune_only(
    rate: RealScalar = 0.01,
    momentum: RealScalar = 0.99,
    *,
    cutoff: str = "gaussian",
    variant: str = "origin",
    center: PyTree[Float[Array, "..."]] | Callable[[PyTree], PyTree] | None = None,
    degree: RealScalar = 1.0,
    scope: str = "global",
) -> optax.GradientTransformation:
    r"""Learn only by removing weights: an EMA-scored, cutoff-based pruner.

    The expansion point is θ0 (`0` for `variant="origin"`, `center` for `variant="init"`) and
    the ensemble weights are Δ = θ − θ0 with fixed signs `s = sign(Δ)` taken at `init`. Each
    `update` receives the **mean-batch gradient** `d` (what `jax.grad` of a mean loss gives) and

        d ← d / degree                          (origin variant only; L = degree)
        v ← momentum · v + (1 − momentum) · d   (the score, an EMA; v₀ = 0)
        f = v · s                               (disfavour: f > 0 pushes |Δ| toward 0)
        c = mean(f) + std(f) · Φ⁻¹(1 − rate)    (cutoff="gaussian", over alive weights)
        c = quantile(f, 1 − rate)               (cutoff="quantile", over alive weights)
        prune = alive ∧ (f ≥ c) ∧ (f > 0)

    and the returned updates move every pruned weight to its target (`0`, or θ0 for the init
    variant, i.e. Δ = 0) and leave every other weight unchanged: the network learns ONLY by
    pruning. Pruned weights never come back (the mask only loses entries) and the updates keep
    re-asserting them, so `optax.apply_updates` gives exactly `0` for pruned weights of the
    origin variant (`θ + (−θ) = 0` in floating point); for the init variant the restored value
    equals θ0 up to one rounding at the step of pruning, exactly from then on. Weights with
    Δ = 0 at `init` (`s = 0`) are dead from the start.

    Design choices (documented, deliberate):

    - `scope="global"` (the default, as the reference) computes one cutoff over all alive
      weights of all leaves; `scope="layer"` one cutoff per leaf.
    - `std` is the sample standard deviation (`n − 1`); the quantile interpolates linearly
      (as `np.quantile`).
    - Only weights with a positive disfavour `f > 0` are ever pruned: a weight the gradient
      wants to grow is kept, and ties at a zero score (e.g. the weights of dead ReLU units,
      whose gradient is exactly 0) are never pruned en masse.
    - `degree` scales the score by `1/L`, as in the reference; the cutoffs are scale-invariant,
      so it never changes which weights are pruned.

    Use it as the whole optimizer (anything chained after it would move the weights). To
    prune only some leaves (e.g. weights, not biases) and freeze the rest, use
    `optax.multi_transform({"prune": prune_only(), "freeze": optax.set_to_zero()}, labels)`.
    Signs are never changed, so a Dale's-law network keeps Dale's law by construction.
    The maths: [maths: learning by pruning only](../math.md#learning-by-pruning-only);
    [`nte.pruning.pruned`][] reads the pruned weights from the state.

    **Arguments:**

    - `rate`: the tail probability of the cutoff, in `(0, 1)`; about this fraction of the alive
      weights passes the Gaussian cutoff per step when the scores are Gaussian.
    - `momentum`: the EMA coefficient `m` of the score, in `[0, 1)`.
    - `cutoff`: `"gaussian"` or `"quantile"`.
    - `variant`: `"origin"` (Δ = θ, pruned weights become exactly 0) or `"init"` (Δ = θ − θ0,
      pruned weights are restored to θ0).
    - `center`: θ0 for `variant="init"` (required there, else `None`): a params-shaped pytree,
      or a function `params -> θ0` called at `init` (e.g. to draw θ0 = θ − σ·noise once the
      model exists).
    - `degree`: the homogeneity degree `L` of the network (origin variant), `> 0`.
    - `scope`: `"global"` or `"layer"` (per leaf).

    **Returns:**

    An `optax.GradientTransformation` whose state is a [`nte.pruning.PruneOnlyState`][]. Its
    `update` requires `params`. The numeric hyperparameters work under
    `optax.inject_hyperparams`.

    !!! example

        ```python
        opt = nte.pruning.prune_only(rate=0.01, momentum=0.99, degree=model.depth + 1)
        state = opt.init(params)
        updates, state = opt.update(jax.grad(loss)(params, x, y), state, params)
        params = optax.apply_updates(params, updates)
        ```
    """
    check_rate(rate)
    check_momentum(momentum)
    check_choice(cutoff, CUTOFFS, "cutoff")
    check_choice(variant, _VARIANTS, "variant")
    check_choice(scope, SCOPES, "scope")
    if isinstance(degree, (int, float)) and not degree > 0:
        raise ValueError(f"`degree` must be > 0, got {degree!r}.")
    if variant == "init" and center is None:
        raise ValueError('`center` (the seed point θ0) is required for `variant="init"`.')
    if variant == "origin" and center is not None:
        raise ValueError('`center` must be None for `variant="origin"` (θ0 = 0).')

    def init_fn(params: PyTree) -> PruneOnlyState:
        c = center(params) if _is_function(center) else center
        if c is not None and jtu.tree_structure(c) != jtu.tree_structure(params):
            raise ValueError("`center` must have the same pytree structure as the params.")
        delta = _delta(params, c)
        signs = jtu.tree_map(lambda x: jnp.sign(x).astype(jnp.int8), delta)
        return PruneOnlyState(
            count=jnp.zeros([], jnp.int32),
            score=jtu.tree_map(jnp.zeros_like, params),
            mask=jtu.tree_map(lambda s: s != 0, signs),
            signs=signs,
            center=c,
        )

    def update_fn(updates: PyTree, state: PruneOnlyState, params: Any = None):
        if params is None:
            raise ValueError("`prune_only` needs `params` in `update(grads, state, params)`.")
        scale = 1 / degree if variant == "origin" else 1.0
        score = jtu.tree_map(
            lambda v, d: (momentum * v + (1 - momentum) * scale * d).astype(v.dtype),
            state.score,
            updates,
        )
        f = jtu.tree_map(lambda v, s: v * s.astype(v.dtype), score, state.signs)
        prune = to_prune(f, state.mask, rate, cutoff=cutoff, scope=scope)
        mask = jtu.tree_map(lambda m, p: m & ~p, state.mask, prune)
        targets = jtu.tree_map(jnp.zeros_like, params) if variant == "origin" else state.center
        new_updates = jtu.tree_map(
            lambda m, t, p: jnp.where(m, jnp.zeros_like(p), t - p), mask, targets, params
        )
        count = optax.safe_increment(state.count)
        return new_updates, PruneOnlyState(count, score, mask, state.signs, state.center)

    return optax.GradientTransformation(init_fn, update_fn)
