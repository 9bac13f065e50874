"""The NTE posterior update as an optax transformation: the prior and the projection."""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ._errors import check_params_shaped, check_positive
from ._signs import sign_mask
from .likelihood._base import ExpertLogLikelihoods, check_invalid
from .likelihood._kernels import count_true
from .likelihood._vmap import from_grads


class ScaleByNTEState(NamedTuple):
    """State of [`nte.scale_by_nte`][].

    **Fields:**

    - `signs`: the fixed signs s = sign(Δ) at init, params-shaped `int8` (Dale's law).
    - `log_magnitudes`: λ = log|Δ|, params-shaped (−inf: pruned or dead expert).
    - `log_norm`: log Z, Z = ‖Δ‖₁ at init (fixed).
    - `origin`: θ0, params-shaped, or `None` for the origin variant (θ0 = 0).
    - `num_pruned`: how many experts have λ = −inf (Δ exactly 0), after the last update.
    - `num_invalid`: how many parameter-steps the invalid-expert policy touched, cumulative.
    """

    signs: PyTree
    log_magnitudes: PyTree
    log_norm: Float[Array, ""]
    origin: PyTree | None
    num_pruned: Int[Array, ""]
    num_invalid: Int[Array, ""]


def _logsumexp(leaves: list) -> Array:
    """logsumexp over every element of every leaf; −inf entries are ignored."""
    dtype = jnp.result_type(*leaves)
    m = jnp.asarray(-jnp.inf, dtype)
    for v in leaves:
        m = jnp.maximum(m, jnp.max(v, initial=-jnp.inf))
    shift = jnp.where(jnp.isfinite(m), m, 0)
    total = sum((jnp.sum(jnp.exp(v - shift)) for v in leaves), jnp.zeros((), dtype))
    return jnp.log(total) + shift


def _count(pred, leaves) -> Array:
    return jnp.asarray(sum((count_true(pred(v)) for v in leaves), jnp.int32(0)))


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

    **Numerics.** 1 − βsg = 0 exactly gives λ = −inf: the parameter becomes exactly 0 (θ0 in the
    init variant) and stays there forever (pruned); `logsumexp` ignores it. 1 − βsg < 0 (an
    invalid expert) never produces a NaN and never reaches the logsumexp:

    - `invalid="cap"` (default): β is lowered for this step to β(1 − ε)/max(β s g), ε = 1e-6
      (so the worst argument is ε), for the whole batch;
    - `invalid="floor"`: the argument of the log is floored at ε (an exact 0 still prunes);
    - `invalid="raise"`: an error naming `inv_temperature` is raised; it uses `eqx.error_if`,
      so it raises eagerly and also inside `jax.jit` (as a runtime error when the step runs).

    The state counts the experts pruned and the parameter-steps the policy touched.

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
    - `invalid`: `"cap"` (default), `"floor"` or `"raise"`
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

    def init_fn(params):
        delta, origin = _init_delta(params, init_scale, key)
        signs = sign_mask(delta)
        lam = jtu.tree_map(lambda d: jnp.log(jnp.abs(d)), delta)
        leaves = jtu.tree_leaves(lam)
        log_norm = _logsumexp(leaves) if leaves else jnp.asarray(-jnp.inf)
        pruned = _count(lambda v: v == -jnp.inf, leaves)
        return ScaleByNTEState(signs, lam, log_norm, origin, pruned, jnp.int32(0))

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
        max_delta_ = None if max_delta is None else jnp.asarray(max_delta, jnp.result_type(float))
        policy = "cap" if invalid is None else invalid
        return _update(updates, state, params, data, max_delta_, renormalize, policy)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@eqx.filter_jit
def _update(updates, state, params, data, max_delta, renormalize, invalid):
    """One step ([maths: the posterior update](../math.md#the-posterior-update)), compiled
    once per shapes; β, η, max_delta are traced. `data = (β, η)` with per-example gradients,
    whose likelihood is computed as by [`nte.likelihood.Vmap`][]."""
    if data is not None:
        updates = from_grads(updates, state.signs, *data, invalid)
    lam = jtu.tree_map(
        lambda v, L: (v + L).astype(v.dtype), state.log_magnitudes, updates.log_likelihoods
    )
    lam = _project(lam, state.log_norm, renormalize, max_delta)
    new = _parameters(lam, state.signs, state.origin)
    increments = jtu.tree_map(lambda n, p: (n - p).astype(p.dtype), new, params)
    pruned = _count(lambda v: v == -jnp.inf, jtu.tree_leaves(lam))
    total_invalid = state.num_invalid + jnp.asarray(updates.num_invalid, jnp.int32)
    new_state = state._replace(log_magnitudes=lam, num_pruned=pruned, num_invalid=total_invalid)
    return increments, new_state


def _project(lam, log_norm, renormalize, max_delta):
    """Steps 4–5: renormalize to log Z over all leaves, then clip at log max_delta."""
    if renormalize:
        lse = _logsumexp(jtu.tree_leaves(lam))
        shift = jnp.where(jnp.isfinite(lse), log_norm - lse, 0)  # all pruned: leave as is
        lam = jtu.tree_map(lambda v: (v + shift.astype(v.dtype)).astype(v.dtype), lam)
    if max_delta is not None:
        lam = jtu.tree_map(
            lambda v: jnp.minimum(v, jnp.log(jnp.asarray(max_delta, v.dtype))).astype(v.dtype), lam
        )
    return lam


def _parameters(lam, signs, origin):
    """Step 6: θ = θ0 + s·exp(λ) (θ0 = 0 when `origin` is None)."""
    delta = jtu.tree_map(lambda v, s: s.astype(v.dtype) * jnp.exp(v), lam, signs)
    if origin is None:
        return delta
    return jtu.tree_map(jnp.add, origin, delta)


def nte(
    inv_temperature: float | int | Float[Array, ""] | None = None,
    *,
    eta: float | int | Float[Array, ""] | None = None,
    max_delta: float | int | Float[Array, ""] | None = None,
    renormalize: bool = True,
    init_scale: float | int | Float[Array, ""] = 0.0,
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
        invalid=invalid,
        key=key,
    )
