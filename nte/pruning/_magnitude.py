"""Magnitude pruning (one-shot and gradual, Zhu & Gupta 2017) as a wrapper around optax."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._errors import check_choice
from ._checks import RealScalar, check_sparsity, check_step
from ._cutoff import SCOPES


class MagnitudeState(NamedTuple):
    """State of [`nte.pruning.magnitude`][].

    **Attributes:**

    - `count`: the number of updates so far (the step `t` of the schedule).
    - `mask`: the **alive** mask, `True` where the weight is still trained; it only ever loses
      entries. [`nte.pruning.pruned`][] returns its complement.
    - `inner_state`: the state of the wrapped transformation.
    """

    count: Int[Array, ""]
    mask: PyTree[Bool[Array, "..."]]
    inner_state: optax.OptState


def polynomial_sparsity(
    step: Int[Array, ""] | int,
    target_sparsity: RealScalar,
    *,
    initial_sparsity: RealScalar = 0.0,
    begin_step: Int[Array, ""] | int = 0,
    end_step: Int[Array, ""] | int | None = None,
) -> Float[Array, ""]:
    """The sparsity schedule of Zhu & Gupta (2017) at `step`.

        s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (t_end − t0))³   for t0 ≤ t ≤ t_end

    with `s_t = s_i` before `t0` and `s_f` after `t_end`; `end_step=None` (or `= t0`) is
    one-shot pruning (`s_t = s_f` from `t0` on).

    **Arguments:**

    - `step`: the step `t`.
    - `target_sparsity`: `s_f`, in `[0, 1]`.
    - `initial_sparsity`: `s_i`, in `[0, 1]`.
    - `begin_step`, `end_step`: `t0` and `t_end = t0 + nΔt`.

    **Returns:**

    `s_t` as a float scalar.
    """
    t = jnp.asarray(step, jnp.float32)
    t0 = jnp.asarray(begin_step, jnp.float32)
    t1 = t0 if end_step is None else jnp.asarray(end_step, jnp.float32)
    progress = jnp.where(t1 > t0, jnp.clip((t - t0) / jnp.maximum(t1 - t0, 1), 0, 1), t >= t0)
    s_f = jnp.asarray(target_sparsity, jnp.float32)
    s_i = jnp.asarray(initial_sparsity, jnp.float32)
    return s_f + (s_i - s_f) * (1 - progress) ** 3


def _keep_largest(values: list[Array], alive: list[Array], n_prune: Int[Array, ""]) -> list[Array]:
    """Alive masks keeping all but the `n_prune` smallest `|values|` (dead ones count first)."""
    flat = jnp.concatenate([jnp.ravel(jnp.where(a, jnp.abs(v), -1)) for v, a in zip(values, alive)])
    order = jnp.argsort(flat, stable=True)  # one sort; the ranks are its inverse permutation
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    keep, start = [], 0
    for v, a in zip(values, alive):
        keep.append(a & (rank[start : start + v.size] >= n_prune).reshape(v.shape))
        start += v.size
    return keep


def _new_mask(values, alive, sparsity, scope):
    if scope == "global":
        total = sum(v.size for v in values)
        n_prune = jnp.round(sparsity * total).astype(jnp.int32)
        return _keep_largest(values, alive, n_prune)
    out = []
    for v, a in zip(values, alive):
        n_prune = jnp.round(sparsity * v.size).astype(jnp.int32)
        out += _keep_largest([v], [a], n_prune)
    return out


def magnitude(
    inner: optax.GradientTransformation,
    target_sparsity: RealScalar,
    *,
    initial_sparsity: RealScalar = 0.0,
    begin_step: int | Int[Array, ""] = 0,
    end_step: int | Int[Array, ""] | None = None,
    frequency: int | Int[Array, ""] = 1,
    scope: str = "global",
) -> optax.GradientTransformationExtraArgs:
    r"""Magnitude pruning around any optax transformation, one-shot or gradual.

    At every pruning step `t` (from `begin_step` to `end_step`, every `frequency` steps, and
    always at `end_step`), the weights with the smallest magnitude after the inner update are
    masked until a fraction `s_t` (see [`nte.pruning.polynomial_sparsity`][]) of the weights is
    masked: over all leaves together (`scope="global"`) or in every leaf (`scope="layer"`),
    `round(s_t · n)` weights. The mask lives in the optax state and only ever loses entries.
    Masked weights stay **exactly 0** through every later update: their gradients are zeroed
    before `inner` (so momentum never accumulates for them) and the returned update of a
    masked weight is `−θ` (so `optax.apply_updates` gives `θ + (−θ) = 0`), whatever `inner`
    does (momentum, weight decay, ...). `magnitude` must therefore be the outermost
    transformation (nothing chained after it). [`nte.pruning.pruned`][] reads the masked
    weights from the state; see [maths: pruning](../math.md#pruning).

    With `end_step=None` it is one-shot pruning to `target_sparsity` at `begin_step`.

    **Arguments:**

    - `inner`: the optax transformation to wrap (e.g. `optax.sgd(0.1, momentum=0.9)`).
    - `target_sparsity`: the final sparsity `s_f`, in `[0, 1]`.
    - `initial_sparsity`: `s_i`, in `[0, 1]`.
    - `begin_step`: `t0`, the first pruning step (the value of the update counter).
    - `end_step`: `t_end = t0 + nΔt`, the step at which `s_f` is reached (`None`: one-shot).
    - `frequency`: `Δt`, the number of steps between pruning steps, `>= 1`.
    - `scope`: `"global"` (one threshold over all leaves) or `"layer"` (per leaf).

    **Returns:**

    An `optax.GradientTransformationExtraArgs` whose state is a
    [`nte.pruning.MagnitudeState`][]; its `update` requires `params`. After the update at step
    `end_step` the sparsity is exactly `round(s_f · n) / n`.

    !!! example

        ```python
        opt = nte.pruning.magnitude(
            optax.sgd(0.1, momentum=0.9), 0.9, begin_step=100, end_step=1000, frequency=10
        )
        ```
    """
    check_sparsity(target_sparsity, "target_sparsity")
    check_sparsity(initial_sparsity, "initial_sparsity")
    check_step(begin_step, "begin_step", minimum=0)
    check_step(frequency, "frequency", minimum=1)
    if end_step is not None:
        check_step(end_step, "end_step", minimum=0)
        if isinstance(begin_step, int) and isinstance(end_step, int) and end_step < begin_step:
            raise ValueError(f"`end_step` must be >= `begin_step`, got {end_step!r}.")
    check_choice(scope, SCOPES, "scope")
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(f"`inner` must be an optax.GradientTransformation, got {type(inner)}.")
    inner = optax.with_extra_args_support(inner)
    last = begin_step if end_step is None else end_step

    def init_fn(params: PyTree) -> MagnitudeState:
        mask = jtu.tree_map(lambda p: jnp.ones(jnp.shape(p), bool), params)
        return MagnitudeState(jnp.zeros([], jnp.int32), mask, inner.init(params))

    def update_fn(updates: PyTree, state: MagnitudeState, params: Any = None, **extra_args):
        if params is None:
            raise ValueError("`magnitude` needs `params` in `update(grads, state, params)`.")
        t = state.count
        grads = jtu.tree_map(lambda m, g: jnp.where(m, g, jnp.zeros_like(g)), state.mask, updates)
        inner_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
        candidate = optax.apply_updates(params, inner_updates)
        s_t = polynomial_sparsity(
            t,
            target_sparsity,
            initial_sparsity=initial_sparsity,
            begin_step=begin_step,
            end_step=end_step,
        )
        is_step = (
            (t >= begin_step) & (t <= last) & (((t - begin_step) % frequency == 0) | (t == last))
        )
        values, treedef = jtu.tree_flatten(candidate)
        alive = treedef.flatten_up_to(state.mask)
        mask = jax.lax.cond(
            is_step, lambda: _new_mask(values, alive, s_t, scope), lambda: list(alive)
        )
        mask = jtu.tree_unflatten(treedef, mask)
        new_updates = jtu.tree_map(lambda m, u, p: jnp.where(m, u, -p), mask, inner_updates, params)
        return new_updates, MagnitudeState(optax.safe_increment(t), mask, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
