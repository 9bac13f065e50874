"""The NTE posterior update as an optax transformation: the prior and the projection."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from . import _posterior_pruning as pruning
from ._errors import check_params_shaped, check_positive
from ._posterior_pruning import PrunedBy
from ._signs import sign_mask
from .likelihood._base import ExpertLogLikelihoods, check_invalid
from .likelihood._vmap import from_grads


class ScaleByNTEState(NamedTuple):
    """State of [`nte.scale_by_nte`][].

    **Fields:**

    - `signs`: the fixed signs s = sign(Δ) at init, params-shaped `int8` (Dale's law).
    - `log_magnitudes`: λ = log|Δ|, params-shaped (−inf: pruned or dead expert).
    - `log_norm`: log Z, Z = ‖Δ‖₁ at init (fixed).
    - `origin`: θ0, params-shaped, or `None` for the origin variant (θ0 = 0).
    - `num_pruned`: how many experts are pruned (λ = −inf: the parameter is exactly 0, θ0 in
      the init variant, for good), after the last update; `int32`.
    - `num_invalid`: how many parameter-steps had an invalid expert (1 − β s g < 0 on some
      example), cumulative.
    - `pruned_by`: a [`nte.PrunedBy`][]: `num_pruned` split by cause (`likelihood`,
      `threshold`, `zero`; they add up to `num_pruned`).
    - `num_skipped`: how many steps were skipped because a per-example gradient was not finite
      (NaN or ±inf): parameters and the rest of the state were left unchanged.
    """

    signs: PyTree
    log_magnitudes: PyTree
    log_norm: Float[Array, ""]
    origin: PyTree | None
    num_pruned: Int[Array, ""]
    num_invalid: Int[Array, ""]
    pruned_by: PrunedBy
    num_skipped: Int[Array, ""]


def _logsumexp(leaves: list) -> Array:
    """logsumexp over every element of every leaf; −inf entries are ignored."""
    dtype = jnp.result_type(*leaves)
    m = jnp.asarray(-jnp.inf, dtype)
    for v in leaves:
        m = jnp.maximum(m, jnp.max(v, initial=-jnp.inf))
    shift = jnp.where(jnp.isfinite(m), m, 0)
    total = sum((jnp.sum(jnp.exp(v - shift)) for v in leaves), jnp.zeros((), dtype))
    return jnp.log(total) + shift


def _init_delta(params, init_scale, key):
    """(Δ, θ0): Δ = θ, θ0 = None (origin) or Δ = σ·N(0,1) with a fresh key per leaf."""
    try:
        origin_variant = float(init_scale) == 0.0
    except TypeError:  # traced init_scale: the key decides
        origin_variant = key is None
    if origin_variant:
        return params, None
    if key is None:
        raise ValueError("`key` is required when `init_scale` > 0 (Δ = init_scale·N(0, 1)).")
    leaves, treedef = jtu.tree_flatten(params)
    keys = jr.split(key, max(len(leaves), 1))
    deltas = [
        (jnp.asarray(init_scale, p.dtype) * jr.normal(k, p.shape, p.dtype)).astype(p.dtype)
        for p, k in zip(leaves, keys)
    ]
    origin = [p - d for p, d in zip(leaves, deltas)]
    return treedef.unflatten(deltas), treedef.unflatten(origin)


def _check_grads(updates, params) -> None:
    """Eager: per-example gradients match `params` with one extra leading axis."""
    hint = " (per-example gradients: a leading batch axis on every leaf)"
    leaves = check_params_shaped(updates, params, "updates", hint=hint, batched=True)
    sizes = {jnp.shape(g)[0] for g in leaves}
    if len(sizes) > 1:
        raise ValueError(f"Every leaf of `updates` must share one batch size, got {sorted(sizes)}.")


_DATA_TERMS = ("inv_temperature", "eta", "invalid")
"""The hyperparameters of the likelihood (the data term): used only with per-example gradients."""


def _check_prune_below(prune_below) -> None:
    if prune_below is None:
        return
    number = isinstance(prune_below, (int, float, np.number, np.ndarray, jax.Array))
    if number and not isinstance(prune_below, bool) and np.ndim(prune_below) == 0:
        try:
            tau = float(prune_below)
        except TypeError:  # a tracer (optax.inject_hyperparams): cannot be checked eagerly
            return
        if 0 < tau < 1:
            return
    raise ValueError(
        "`prune_below` (τ, the posterior weight |Δ_i|/‖Δ‖₁ below which an expert is removed) "
        f"must be None or a number with 0 < τ < 1, got {prune_below!r}."
    )


def _check_hyperparameters(inv_temperature, eta, max_delta, init_scale, invalid) -> None:
    if inv_temperature is not None:
        check_positive(inv_temperature, "inv_temperature")
    if eta is not None:
        check_positive(eta, "eta")
    if max_delta is not None:
        check_positive(max_delta, "max_delta")
    check_positive(init_scale, "init_scale", allow_zero=True)
    if invalid is not None:
        check_invalid(invalid)


def _check_data_terms(updates, given: dict) -> None:
    """Eager: β, η and the invalid policy are given exactly when `updates` are per-example
    gradients (an [`nte.ExpertLogLikelihoods`][] already holds its own)."""
    if isinstance(updates, ExpertLogLikelihoods):
        named = [name for name in _DATA_TERMS if given[name] is not None]
        if named:
            raise ValueError(
                f"`{named[0]}` was given to nte.scale_by_nte, but `update` received "
                "nte.ExpertLogLikelihoods, whose β, η and invalid policy were chosen by "
                "nte.expert_log_likelihoods and would be ignored here: build the optimizer "
                f"without {', '.join(f'`{n}`' for n in named)} (e.g. `nte.nte()`)."
            )
    elif given["inv_temperature"] is None:
        raise ValueError(
            "`inv_temperature` (β) is required when `update` receives per-example gradients: "
            "build the optimizer with it (e.g. `nte.nte(0.01)`), or pass "
            "nte.expert_log_likelihoods(...) to `update` instead."
        )


def scale_by_nte(
    inv_temperature: float | int | Float[Array, ""] | None = None,
    *,
    eta: float | int | Float[Array, ""] | None = None,
    max_delta: float | int | Float[Array, ""] | None = None,
    renormalize: bool = True,
    init_scale: float | int | Float[Array, ""] = 0.0,
    prune_below: float | int | Float[Array, ""] | None = None,
    invalid: str | None = None,
    key: PRNGKeyArray | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The neural tangent ensemble posterior update as an optax transformation: the prior
    (the ensemble weights) and the projection; the data term is the likelihood.

    With fixed signs s, log-magnitudes λ = log|Δ| and the fixed norm Z = ‖Δ‖₁, one step on a
    batch does

        L_i = η Σ_b log(1 − β s_i g_{b,i})            (sum over the batch, not mean)
        λ  ← λ + L
        λ  ← λ + log Z − logsumexp(λ)                  (if renormalize; over all leaves)
        λ_i ← −inf where exp(λ_i)/‖Δ‖₁ < τ, renormalize (if prune_below = τ)
        λ  ← min(λ, log max_delta)                     (if max_delta)
        θ  = θ0 + s·exp(λ)

    ([maths: the posterior update](../math.md#the-posterior-update)). To first order in β this
    is SGD with per-parameter learning rate ηβ|Δ_i|, projected back onto the L1 sphere:
    Δ' − Δ ≈ −ηβ|Δ|⊙G + ηβΔ⟨Δ, G⟩/Z with G = Σ_b g_b
    ([maths: first-order form](../math.md#first-order-form)).

    `update(updates, state, params)` takes either

    - an [`nte.ExpertLogLikelihoods`][] (L computed without B×N memory by
      [`nte.expert_log_likelihoods`][], which holds β, η and the invalid policy): build this
      transformation WITHOUT `inv_temperature`, `eta` and `invalid` (`nte.nte()`); giving any
      of them raises a `ValueError` naming it, since it would be ignored;
    - or per-example gradients with a leading batch axis on every leaf (the
      `optax.contrib.dpsgd` convention; e.g. [`nte.per_example_grads`][]): then
      `inv_temperature` is required and L is computed here by the same code as
      [`nte.likelihood.Vmap`][] (`eta` defaults to 1, `invalid` to `"cap"`).

    It returns increments: after `optax.apply_updates(params, updates)` the parameters are
    θ0 + s·exp(λ'). `params` is required.

    **Pruning** ([maths: pruning](../math.md#pruning)). An expert with λ = −inf is pruned: its
    parameter is exactly 0 (θ0 in the init variant) after `optax.apply_updates` and stays there
    for good; `logsumexp` ignores it. Three causes, counted in `state.pruned_by`
    ([`nte.PrunedBy`][]) and in total in `state.num_pruned`:

    - `likelihood`: 1 − βsg = 0 exactly on some example (any policy), or ≤ 0 under
      `invalid="prune"`: the posterior is exactly 0;
    - `threshold`: with `prune_below=τ`, a posterior weight |Δ_i|/‖Δ‖₁ < τ after
      renormalization (then the rest is renormalized again);
    - `zero`: the parameter reads exactly 0 (θ0) when `update` is called (dead experts at init,
      or set to it from outside), or θ0 + s·exp(λ) would read θ0 after `optax.apply_updates`
      (exp(λ) underflows, or is lost to rounding). The increments are computed so that
      `params + increments` lands exactly on θ0 + s·exp(λ) (one rounding correction), so what
      the parameters read and what λ says agree.

    **Invalid experts** (1 − βsg < 0) never produce a NaN and never reach the logsumexp; every
    valid expert gets its exact log(1 − βsg), however close to 0:

    - `invalid="cap"` (default): β is lowered for this step to β(1 − ε)/max(β s g), ε = 1e-6
      (so the worst argument is ε), for the whole batch;
    - `invalid="prune"`: an invalid expert is pruned (its posterior is 0);
    - `invalid="floor"`: the argument of the log is floored at ε for every expert (an exact 0
      still prunes);
    - `invalid="raise"`: an error naming `inv_temperature` is raised; it uses `eqx.error_if`,
      so it raises eagerly and also inside `jax.jit` (as a runtime error when the step runs).

    **Non-finite gradients** (NaN or ±inf) never change parameters silently: with
    `invalid="raise"` the step raises naming the parameter leaf; otherwise (and for an
    [`nte.ExpertLogLikelihoods`][] with a NaN) the step returns zero increments, leaves the
    state unchanged and counts it in `state.num_skipped`.

    **Arguments:**

    - `inv_temperature`: β > 0, multiplies the gradient (injectable); only with per-example
      gradients.
    - `eta`: η > 0, the likelihood exponent (injectable; default 1, the plain posterior); only
      with per-example gradients.
    - `max_delta`: optional clip on |Δ| (after renormalization), > 0.
    - `renormalize`: keep ‖Δ‖₁ = Z (step 4).
    - `init_scale`: σ ≥ 0. σ = 0 is the origin variant (Δ = θ, θ0 = 0; parameters exactly 0
      are dead experts, s = 0, that stay 0). σ > 0 draws Δ = σ·N(0, 1) with a fresh key per
      leaf (`jax.random.split(key, num_leaves)`, in leaf order) and θ0 = θ − Δ.
    - `prune_below`: τ with 0 < τ < 1, or `None` (default: no threshold). Experts whose
      posterior weight |Δ_i|/‖Δ‖₁ falls below τ are removed for good (injectable: under
      `optax.inject_hyperparams` a number becomes a hyperparameter, `None` stays off).
    - `invalid`: `"cap"` (default), `"prune"`, `"floor"` or `"raise"`
      ([maths: invalid experts](../math.md#invalid-experts)); only with per-example gradients.
    - `key`: a PRNG key, required when `init_scale > 0` (unused otherwise).

    **Returns:**

    An `optax.GradientTransformationExtraArgs` with state [`nte.ScaleByNTEState`][].

    !!! example

        ```python
        opt = nte.nte()  # the likelihood holds β
        state = opt.init(params)
        lik = nte.expert_log_likelihoods(
            loss_fn, model, x, y, signs=state.signs, inv_temperature=0.01
        )
        updates, state = opt.update(lik, state, params)
        params = optax.apply_updates(params, updates)

        opt = nte.nte(0.01)  # or: per-example gradients, β given here
        grads = nte.per_example_grads(loss_fn, model, x, y)
        updates, state = opt.update(grads, state, params)
        ```
    """
    _check_hyperparameters(inv_temperature, eta, max_delta, init_scale, invalid)
    _check_prune_below(prune_below)

    def init_fn(params):
        delta, origin = _init_delta(params, init_scale, key)
        signs = sign_mask(delta)
        lam = jtu.tree_map(lambda d: jnp.log(jnp.abs(d)), delta)
        leaves = jtu.tree_leaves(lam)
        log_norm = _logsumexp(leaves) if leaves else jnp.asarray(-jnp.inf)
        dead = pruning.count_pruned(lam)
        by = PrunedBy(jnp.int32(0), jnp.int32(0), jnp.array(dead, copy=True))  # no aliasing:
        # a state whose buffers are distinct can be donated
        return ScaleByNTEState(signs, lam, log_norm, origin, dead, jnp.int32(0), by, jnp.int32(0))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("`params` is required by nte.scale_by_nte's update.")
        _check_data_terms(updates, dict(inv_temperature=inv_temperature, eta=eta, invalid=invalid))
        if isinstance(updates, ExpertLogLikelihoods):
            check_params_shaped(updates.log_likelihoods, params, "updates.log_likelihoods")
            data = None
        else:
            _check_grads(updates, params)
            data = (inv_temperature, 1.0 if eta is None else eta)
            data = jtu.tree_map(lambda h: jnp.asarray(h, jnp.result_type(float)), data)
        bounds = jtu.tree_map(
            lambda h: None if h is None else jnp.asarray(h, jnp.result_type(float)),
            (max_delta, prune_below),
        )
        policy = "cap" if invalid is None else invalid
        return _update(updates, state, params, data, bounds, renormalize, policy)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@eqx.filter_jit
def _update(updates, state, params, data, bounds, renormalize, invalid):
    """One step ([maths: the posterior update](../math.md#the-posterior-update)), compiled
    once per shapes; β, η, max_delta, τ are traced. `data = (β, η)` with per-example gradients,
    whose likelihood is computed as by [`nte.likelihood.Vmap`][]; `bounds = (max_delta, τ)`."""
    if data is not None:
        updates = from_grads(updates, state.signs, *data, invalid)
    max_delta, prune_below = bounds
    lam, by_zero = pruning.prune_read_zero(state.log_magnitudes, params, state.origin)
    lam, by_likelihood = pruning.add_likelihood(lam, updates.log_likelihoods)
    lam = _renormalize(lam, state.log_norm, renormalize)
    by_threshold = jnp.int32(0)
    if prune_below is not None:
        lse = _logsumexp(jtu.tree_leaves(lam))
        lam, by_threshold = pruning.prune_threshold(lam, lse, prune_below)
        lam = _renormalize(lam, state.log_norm, renormalize)
    lam = _clip(lam, max_delta)
    lam, increments, by_landing = pruning.land(lam, state.signs, params, state.origin)
    by = state.pruned_by
    by = PrunedBy(
        by.likelihood + by_likelihood, by.threshold + by_threshold, by.zero + by_zero + by_landing
    )
    new_state = state._replace(
        log_magnitudes=lam,
        num_pruned=pruning.count_pruned(lam),
        num_invalid=state.num_invalid + jnp.asarray(updates.num_invalid, jnp.int32),
        pruned_by=by,
    )
    return _skip_unless_finite(updates.log_likelihoods, increments, new_state, state)


def _skip_unless_finite(loglik, increments, new_state, state):
    """A step whose likelihood comes from a non-finite gradient changes nothing: zero
    increments, the old state with `num_skipped` + 1."""
    ok = pruning.finite_likelihood(loglik)
    increments = jtu.tree_map(lambda d: jnp.where(ok, d, jnp.zeros_like(d)), increments)
    kept = state._replace(num_skipped=state.num_skipped + 1)
    new_state = jtu.tree_map(lambda a, b: jnp.where(ok, a, b), new_state, kept)
    return increments, new_state


def _renormalize(lam, log_norm, renormalize):
    """Step 4: λ + log Z − logsumexp(λ) over all leaves (all pruned: left as is)."""
    if not renormalize:
        return lam
    lse = _logsumexp(jtu.tree_leaves(lam))
    shift = jnp.where(jnp.isfinite(lse), log_norm - lse, 0)
    return jtu.tree_map(lambda v: (v + shift.astype(v.dtype)).astype(v.dtype), lam)


def _clip(lam, max_delta):
    """Step 5: λ ← min(λ, log max_delta)."""
    if max_delta is None:
        return lam
    return jtu.tree_map(
        lambda v: jnp.minimum(v, jnp.log(jnp.asarray(max_delta, v.dtype))).astype(v.dtype), lam
    )


def nte(
    inv_temperature: float | int | Float[Array, ""] | None = None,
    *,
    eta: float | int | Float[Array, ""] | None = None,
    max_delta: float | int | Float[Array, ""] | None = None,
    renormalize: bool = True,
    init_scale: float | int | Float[Array, ""] = 0.0,
    prune_below: float | int | Float[Array, ""] | None = None,
    invalid: str | None = None,
    key: PRNGKeyArray | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The NTE posterior optimizer: the user-facing alias of [`nte.scale_by_nte`][].

    Same arguments and behaviour; see [`nte.scale_by_nte`][]. Its updates are increments
    to add with `optax.apply_updates`.
    """
    return scale_by_nte(
        inv_temperature,
        eta=eta,
        max_delta=max_delta,
        renormalize=renormalize,
        init_scale=init_scale,
        prune_below=prune_below,
        invalid=invalid,
        key=key,
    )
