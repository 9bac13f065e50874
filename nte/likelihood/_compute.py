"""[`nte.expert_log_likelihoods`][]: checks, the method, one compiled call."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float, PyTree, Scalar, Shaped

from .._errors import (
    check_callable,
    check_module,
    check_params_shaped,
    check_positive,
    check_stateless,
)
from .._per_example import batch_size
from .._split import split
from ._base import AbstractMethod, Batch, ExpertLogLikelihoods, check_invalid
from ._names import as_method

_REMOVED = {
    "chunk_size": "method=nte.likelihood.Chunked(chunk_size=...) (or Series/Auto(chunk_size=...))",
    "series_terms": "method=nte.likelihood.Series(terms=...)",
}


def _check_removed(removed: dict) -> None:
    for name in removed:
        if name in _REMOVED:
            raise TypeError(
                f"`{name}` is no longer an argument of nte.expert_log_likelihoods: the method "
                f"holds it, {_REMOVED[name]}."
            )
        raise TypeError(f"nte.expert_log_likelihoods got an unexpected keyword `{name}`.")


def expert_log_likelihoods(
    loss_fn: Callable[[Any, Any, Any], Scalar],
    model: eqx.Module,
    x: PyTree[Shaped[ArrayLike, "_batch ..."]],
    y: PyTree[Shaped[ArrayLike, "_batch ..."]],
    *,
    signs: PyTree,
    inv_temperature: float | int | Float[Array, ""],
    eta: float | int | Float[Array, ""] = 1.0,
    method: AbstractMethod | str = "auto",
    invalid: str = "cap",
    filter_spec: Any = eqx.is_inexact_array,
    **removed: Any,
) -> ExpertLogLikelihoods:
    """The log-likelihood of every neural tangent expert on a batch, without B×N memory.

    Computes L_i = η Σ_b log(1 − β s_i g_{b,i}) with g_b = ∇_θ loss_fn(model, x_b, y_b) taken at
    `model`'s parameters ([maths: the posterior update](../math.md#the-posterior-update)). Pass
    the result to [`nte.scale_by_nte`][] (built without β) instead of per-example gradients.

    **Methods** ([maths: the likelihood methods](../math.md#likelihood-methods)):
    [`nte.likelihood.Vmap`][] (per-example gradients, the reference, memory B×N),
    [`nte.likelihood.Chunked`][] (exact, extra memory O(N)), [`nte.likelihood.Series`][] (a
    power series per dense layer, one matmul per parity of the orders) and
    [`nte.likelihood.Auto`][] (the series where it converges fast, else exact; the default);
    [`nte.likelihood.Sharded`][] splits the batch over devices.

    **Invalid experts** (1 − β s g < 0; [maths: invalid experts](../math.md#invalid-experts))
    follow the same policy for every method: `"cap"` lowers β for the whole batch to
    β(1 − ε)/max(β s g) (ε = 1e-6; for the tapped layers a bound decides first whether any u
    can exceed 1, and only then is the exact max taken in a pass without logs; other leaves are
    recomputed only if β was capped), `"floor"` floors the argument of the log at ε (an exact 0
    still prunes), `"raise"` raises (also under jit, via `eqx.error_if`). The count is
    returned.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, x_single, y_single) -> scalar` on ONE example.
    - `model`: an `eqx.Module`; gradients are taken at its current parameters.
    - `x`, `y`: batched inputs and targets (leading axis `batch`).
    - `signs`: the fixed signs, params-shaped (`state.signs`, or [`nte.sign_mask`][] for the
      origin variant).
    - `inv_temperature`: β > 0. `eta`: η > 0 (the likelihood exponent).
    - `method`: an [`nte.likelihood.AbstractMethod`][], or `"auto"`, `"vmap"`, `"chunked"`,
      `"series"` for that method with its default knobs.
    - `invalid`: `"cap"`, `"floor"` or `"raise"`.
    - `filter_spec`: which parameters are experts (see [`nte.split`][]).

    The former keywords `chunk_size` and `series_terms` live on the methods now
    (`nte.likelihood.Chunked(chunk_size=...)`, `nte.likelihood.Series(terms=...)`); passing
    them raises a `TypeError` that says so.

    **Returns:**

    An [`nte.ExpertLogLikelihoods`][].

    !!! example

        ```python
        lik = nte.expert_log_likelihoods(
            loss_fn, model, x, y, signs=state.signs, inv_temperature=0.01,
            method=nte.likelihood.Chunked(chunk_size=32),
        )
        updates, state = nte.nte().update(lik, state, params)
        ```
    """
    _check_removed(removed)
    check_callable(loss_fn, "loss_fn")
    check_module(model)
    check_stateless(model)
    check_positive(inv_temperature, "inv_temperature")
    check_positive(eta, "eta")
    method = as_method(method)
    check_invalid(invalid)
    n = batch_size(x, "x")
    if batch_size(y, "y") != n:
        raise ValueError(f"`x` and `y` must have the same batch size, got {n} and {batch_size(y)}.")
    method.check(n)
    params, _ = split(model, filter_spec)
    hint = " (e.g. `state.signs` of nte.scale_by_nte, or nte.sign_mask(params))"
    check_params_shaped(signs, params, "signs", hint=hint)
    signs = jtu.tree_map(lambda s: jnp.asarray(s, jnp.int8), signs)
    hyper = jtu.tree_map(lambda h: jnp.asarray(h, jnp.result_type(float)), (inv_temperature, eta))
    return _compute(loss_fn, model, x, y, signs, hyper, filter_spec, method, invalid)


@eqx.filter_jit
def _compute(loss_fn, model, x, y, signs, hyper, filter_spec, method, invalid):
    """The work of `expert_log_likelihoods` (compiled once per shapes and method; β, η traced)."""
    params, static = split(model, filter_spec)
    batch = Batch(loss_fn, params, static, x, y, signs)
    return method.compute(batch, *hyper, invalid)
