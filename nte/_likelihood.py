"""Expert log-likelihoods L_i = η Σ_b log(1 − β s_i g_{b,i}) without the B×N gradient tensor."""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, Int, PyTree, Scalar, Shaped

from . import _series as series
from ._errors import check_callable, check_choice, check_module, check_positive
from ._loglik_core import (
    Stats,
    capped_beta,
    check_invalid,
    count,
    likelihood_from_grads,
    maybe_raise,
    merge_stats,
    tree_stats,
)
from ._per_example import batch_size, per_example_grads
from ._split import merge, split

_METHODS = ("auto", "vmap", "chunked", "series")
_AUTO_BOUND = 0.5
_CHUNK_ELEMENTS = 2**22  # default chunk: about 4M gradient elements (16 MiB in float32)


class ExpertLogLikelihoods(eqx.Module):
    """The log-likelihood of every neural tangent expert on a batch, ready for
    [`nte.scale_by_nte`][].

    **Fields:**

    - `log_likelihoods`: a params-shaped pytree, L_i = η Σ_b log(1 − β s_i g_{b,i}) (−inf marks
      an expert pruned by this batch).
    - `num_invalid`: how many parameters had 1 − β s g < 0 for some example (before the policy).
    - `inv_temperature`: the β actually used (smaller than requested if `invalid="cap"` capped it).
    """

    log_likelihoods: PyTree
    num_invalid: Int[Array, ""]
    inv_temperature: Float[Array, ""]


def _chunked(loss_fn, diff, fixed, static, x, y, signs, beta, chunk: int) -> Stats:
    """Exact stats scanning over batch chunks: peak extra memory O(chunk·N)."""
    n = batch_size(x)
    num = -(-n // chunk)
    pad = num * chunk - n

    def reshape(a):
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
        return a.reshape((num, chunk) + a.shape[1:])

    xs, ys = jtu.tree_map(reshape, x), jtu.tree_map(reshape, y)
    weight = (jnp.arange(num * chunk) < n).reshape(num, chunk)

    def single(p, xi, yi):
        return loss_fn(merge(eqx.combine(p, fixed), static), xi, yi)

    grad = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))

    def body(acc, inputs):
        xc, yc, wc = inputs
        return merge_stats(acc, tree_stats(grad(diff, xc, yc), signs, beta, wc)), None

    dtype = jnp.result_type(*jtu.tree_leaves(diff))
    zeros = Stats(
        jtu.tree_map(jnp.zeros_like, diff),
        jnp.zeros((), dtype),
        jtu.tree_map(lambda p: jnp.zeros(p.shape, bool), diff),
    )
    return jax.lax.scan(body, zeros, (xs, ys, weight))[0]


def _layer_mask(params, i: int):
    """A bool tree: True on the weight and bias of Linear layer `i` only."""
    mask = jtu.tree_map(lambda _: False, params)
    mask = eqx.tree_at(lambda m: series.linear_nodes(m)[i].weight, mask, True)
    if series.linear_nodes(params)[i].bias is not None:
        mask = eqx.tree_at(lambda m: series.linear_nodes(m)[i].bias, mask, True)
    return mask


class _Tapped(NamedTuple):
    """The work of one call: tapped Linear layers `(index, (D, A))` and everything else."""

    loss_fn: Callable
    params: PyTree
    static: PyTree
    x: PyTree
    y: PyTree
    signs: PyTree
    chunk: int
    layers: list
    bound_limit: float  # the series where U < bound_limit (0: never)
    terms: int | None


def _weight_stats(t: _Tapped, i, D, A, beta):
    """(sums, max_u, bad) of tapped layer `i`'s weight: the series where U < `bound_limit`
    (adaptive orders: only where `MAX_TERMS` orders reach the dtype's epsilon), else exact.

    One `lax.switch` on scalars picks the branch: the unrolled series (at most `_BLOCK`
    orders, itself a switch over the order count), the looped series (more orders; only
    when `bound_limit` allows them) or the exact pass."""
    s = series.linear_nodes(t.signs)[i].weight
    U = series.series_bound(beta, D, A)
    exact = lambda: series.exact_sum(D, A, s, beta)
    if t.bound_limit <= 0:  # method="chunked"
        return exact()

    def by(fn, terms):
        return lambda: (fn(D, A, s, beta, terms), U.astype(D.dtype), jnp.zeros(s.shape, bool))

    if t.terms is not None:
        return jax.lax.cond(U < t.bound_limit, by(series.series_sum, t.terms), exact)
    M = series.series_order(U, D.dtype)
    tail = U**series.MAX_TERMS / ((series.MAX_TERMS + 1) * (1 - jnp.minimum(U, 0.999)))
    ok = (U < t.bound_limit) & (tail <= jnp.finfo(D.dtype).eps)
    branches = [by(series.series_sum, M), by(series.looped_series_sum, M), exact]
    index = jnp.where(ok, jnp.where(M <= series._BLOCK, 0, 1), 2)
    return jax.lax.switch(index, branches)


def _rest_stats(t: _Tapped, beta) -> Stats | None:
    """Stats of every leaf outside the tapped layers (per-example gradients in chunks)."""
    mask = jtu.tree_map(lambda _: False, t.params)
    for i, _ in t.layers:
        mask = jtu.tree_map(lambda a, b: a or b, mask, _layer_mask(t.params, i))
    tapped_part, rest = eqx.partition(t.params, mask)
    if not jtu.tree_leaves(rest):
        return None
    rest_signs = eqx.filter(t.signs, jtu.tree_map(lambda m: not m, mask))
    return _chunked(t.loss_fn, rest, tapped_part, t.static, t.x, t.y, rest_signs, beta, t.chunk)


def _bias(t: _Tapped, i, D, beta):
    s = series.linear_nodes(t.signs)[i].bias
    return None if s is None else series.bias_stats(D, s, beta)


def _tapped_stats(t: _Tapped, beta, rest: Stats | None) -> Stats:
    """Stats of every leaf: the tapped layers at β, and `rest` (the other leaves) put in."""
    if rest is None:
        empty = jtu.tree_map(lambda _: None, t.params)
        rest = Stats(empty, jnp.zeros(()), empty)
    sums, bad, max_u = rest.sums, rest.bad, rest.max_u
    for i, (D, A) in t.layers:
        ws, wm, wb = _weight_stats(t, i, D, A, beta)
        bias = _bias(t, i, D, beta)
        bs, bb = (None, None) if bias is None else (bias[0], bias[2])
        max_u = jnp.maximum(max_u, wm if bias is None else jnp.maximum(wm, bias[1]))
        sums, bad = _put(sums, i, ws, bs), _put(bad, i, wb, bb)
    return Stats(sums, max_u, bad)


def _capped(t: _Tapped, beta, rest: Stats | None):
    """`(β_used, num_invalid)` for `invalid="cap"`, decided BEFORE the main pass: the bounds
    U ≥ max u of the tapped weights, the exact max of the biases and of `rest` show whether
    any u can exceed 1; only then (a `lax.cond` on scalars) the exact max over the tapped
    weights is taken (a pass without logs)."""
    dtype = t.layers[0][1][0].dtype
    beta = jnp.asarray(beta, dtype)
    known = jnp.zeros((), dtype) if rest is None else rest.max_u.astype(dtype)
    known_bad = jnp.int32(0) if rest is None else count(rest.bad)
    bound = jnp.zeros((), dtype)
    for i, (D, A) in t.layers:
        bound = jnp.maximum(bound, series.series_bound(beta, D, A))
        bias = _bias(t, i, D, beta)
        if bias is not None:
            known, known_bad = jnp.maximum(known, bias[1]), known_bad + count(bias[2])
    # exact maxima (biases, other leaves) or the rounded weight bounds (with a margin)
    may_cap = (known > 1) | (bound * (1 + 1e-4) > 1)

    def exact():
        max_u, num_bad = known, known_bad
        for i, (D, A) in t.layers:
            s = series.linear_nodes(t.signs)[i].weight
            m, nb = series.exact_max(D, A, s, beta)
            max_u, num_bad = jnp.maximum(max_u, m), num_bad + nb
        return capped_beta(beta, max_u).astype(dtype), num_bad

    return jax.lax.cond(may_cap, exact, lambda: (beta, jnp.int32(0)))


def _put(tree, i, w, b):
    """Write leaves `w`, `b` into Linear layer `i` of a tree whose slots there are None."""
    isnone = lambda v: v is None
    tree = eqx.tree_at(lambda t: series.linear_nodes(t)[i].weight, tree, w, is_leaf=isnone)
    if b is not None:
        tree = eqx.tree_at(lambda t: series.linear_nodes(t)[i].bias, tree, b, is_leaf=isnone)
    return tree


def _default_chunk(params, n: int) -> int:
    size = sum(int(jnp.size(p)) for p in jtu.tree_leaves(params))
    return max(1, min(n, _CHUNK_ELEMENTS // max(size, 1)))


def _check_signs(signs, params) -> None:
    p_leaves, treedef = jtu.tree_flatten(params)
    try:
        s_leaves = treedef.flatten_up_to(signs)
    except (ValueError, TypeError) as e:
        raise ValueError(
            "`signs` must have the structure of the model's parameters (e.g. `state.signs` of "
            f"`nte.scale_by_nte` or `nte.sign_mask(params)`): {e}"
        ) from None
    for p, s in zip(p_leaves, s_leaves):
        if jnp.shape(s) != jnp.shape(p):
            raise ValueError(f"`signs` leaf of shape {jnp.shape(s)} for a parameter {p.shape}.")


def expert_log_likelihoods(
    loss_fn: Callable[[Any, Any, Any], Scalar],
    model: eqx.Module,
    x: PyTree[Shaped[Array, "_batch ..."]],
    y: PyTree[Shaped[Array, "_batch ..."]],
    *,
    signs: PyTree,
    inv_temperature: float | int | Float[Array, ""],
    eta: float | int | Float[Array, ""] = 1.0,
    method: str = "auto",
    chunk_size: int | None = None,
    series_terms: int | None = None,
    invalid: str = "cap",
    filter_spec: Any = eqx.is_inexact_array,
) -> ExpertLogLikelihoods:
    """The log-likelihood of every neural tangent expert on a batch, without B×N memory.

    Computes L_i = η Σ_b log(1 − β s_i g_{b,i}) with g_b = ∇_θ loss_fn(model, x_b, y_b) taken at
    `model`'s parameters (design doc §2, step 2). Pass the result to [`nte.scale_by_nte`][]
    instead of per-example gradients.

    **Methods:**

    - `"vmap"`: per-example gradients ([`nte.per_example_grads`][]) then the sum; the reference,
      memory B×N.
    - `"chunked"`: exact, no truncation. For every `eqx.nn.Linear` layer called once per
      example the per-example weight gradient is the outer product g_{b,kj} = δ_{b,k} a_{b,j};
      the layer inputs a_b and output signals δ_b are read once (memory O(B·width)) and a
      `lax.scan` over groups of 16 examples adds the logs, extra memory O(N). A group whose
      bound 16·max|β s g| ≤ 1/4 takes one log per parameter: log Π_b(1 − u_b), the product
      accumulated as 1 + v with v ← v − u_b(1 + v) (rounding ≈ 32ε·Σ_b|u_b|, like a float
      sum of the logs); any other group takes every log (exact pruning, invalid experts).
      Every other leaf uses per-example gradients `chunk_size` examples at a time (the batch
      is padded with masked copies of its first example when it does not divide), extra
      memory O(chunk·N); default chunk: about 4M gradient elements (at least 1, at most B).
    - `"series"`: for the same Linear layers,
      Σ_b log(1 − u_b) = −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ A^{∘m}; as s ∈ {−1, 0, 1}, s^m is s or
      |s|, so all odd orders are ONE matmul over the stacked powers, and all even orders
      another (memory O(B·width·orders)). `series_terms` orders (default: the fewest whose
      truncation bound U^M/((M+1)(1−U)) is below the dtype's epsilon, at most 64), where
      U = β max_b ‖δ_b‖∞‖a_b‖∞ ≥ |β s g|. A layer's weight falls back to the exact
      `"chunked"` pass (decided at run time with `lax.cond`) where U ≥ 1 (the series
      diverges; pruned or invalid experts are possible) or, with adaptive orders, where 64
      orders cannot reach the dtype's epsilon (U ≳ 0.75 in float32). Biases use their exact
      per-example gradient δ_b; every other leaf uses `"chunked"`. Powers are taken of
      per-example rescaled factors (all ≤ 1 in magnitude), so they never overflow. Accurate
      when U is small; with U close to 1 and a small fixed `series_terms` it is not (the
      truncation error is about U^M/((M+1)(1−U)) relative).
    - `"auto"`: like `"series"` but only where U ≤ 0.5 with adaptive orders (float precision,
      at most ~20 orders in float32), the exact `"chunked"` pass elsewhere.

    **Invalid experts** (1 − β s g < 0) follow the same policy as [`nte.scale_by_nte`][]:
    `"cap"` lowers β for the whole batch to β(1 − ε)/max(β s g) (ε = 1e-6; for the Linear
    layers the bound U decides first whether any u can exceed 1, and only then is the exact
    max taken in a pass without logs; other leaves are recomputed only if β was capped),
    `"floor"` floors the argument of the log at ε (an exact 0 still prunes), `"raise"` raises
    (also under jit, via `eqx.error_if`). The count is returned.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, x_single, y_single) -> scalar` on ONE example.
    - `model`: an `eqx.Module`; gradients are taken at its current parameters.
    - `x`, `y`: batched inputs and targets (leading axis `batch`).
    - `signs`: the fixed signs, params-shaped (`state.signs`, or [`nte.sign_mask`][] for the
      origin variant).
    - `inv_temperature`: β > 0. `eta`: η > 0 (the likelihood exponent).
    - `method`: `"auto"`, `"vmap"`, `"chunked"` or `"series"`.
    - `chunk_size`: examples per chunk of the per-example-gradient passes (leaves that are
      not weights of a tapped Linear layer).
    - `series_terms`: the number of series orders (`None`: adaptive).
    - `invalid`: `"cap"`, `"floor"` or `"raise"`.
    - `filter_spec`: which parameters are experts (see [`nte.split`][]).

    **Returns:**

    An [`nte.ExpertLogLikelihoods`][].
    """
    check_callable(loss_fn, "loss_fn")
    check_module(model)
    check_positive(inv_temperature, "inv_temperature")
    check_positive(eta, "eta")
    check_choice(method, _METHODS, "method")
    check_invalid(invalid)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be a positive int or None, got {chunk_size!r}.")
    if series_terms is not None and (not isinstance(series_terms, int) or series_terms < 1):
        raise ValueError(f"`series_terms` must be a positive int or None, got {series_terms!r}.")
    n = batch_size(x, "x")
    if batch_size(y, "y") != n:
        raise ValueError(f"`x` and `y` must have the same batch size, got {n} and {batch_size(y)}.")
    params, _ = split(model, filter_spec)
    _check_signs(signs, params)
    signs = jtu.tree_map(lambda s: jnp.asarray(s, jnp.int8), signs)
    chunk = min(chunk_size or _default_chunk(params, n), n)
    hyper = jtu.tree_map(lambda h: jnp.asarray(h, jnp.result_type(float)), (inv_temperature, eta))
    config = dict(method=method, chunk=chunk, terms=series_terms, invalid=invalid)
    return _compute(loss_fn, model, x, y, signs, hyper, filter_spec, **config)


@eqx.filter_jit
def _compute(loss_fn, model, x, y, signs, hyper, filter_spec, *, method, chunk, terms, invalid):
    """The work of `expert_log_likelihoods` (compiled once per shapes; β, η traced)."""
    inv_temperature, eta = hyper
    params, static = split(model, filter_spec)
    if method == "vmap":
        grads = per_example_grads(loss_fn, model, x, y, filter_spec=filter_spec)
        loglik, num_invalid, beta_used = likelihood_from_grads(
            grads, signs, inv_temperature, eta, invalid
        )
        return ExpertLogLikelihoods(loglik, num_invalid, beta_used)
    indices = series.tappable_layers(loss_fn, params, static, x, y)
    if not indices:  # per-example gradients in chunks for every leaf
        diff, fixed = eqx.partition(params, eqx.is_array)
        run = lambda beta: _chunked(loss_fn, diff, fixed, static, x, y, signs, beta, chunk)
        return _finish(run, inv_temperature, eta, invalid)
    layers = list(zip(indices, series.taps(loss_fn, params, static, x, y, indices)))
    bound_limit = {"auto": _AUTO_BOUND, "series": 1.0, "chunked": 0.0}[method]
    terms = terms if method == "series" else None
    t = _Tapped(loss_fn, params, static, x, y, signs, chunk, layers, bound_limit, terms)
    rest = _rest_stats(t, inv_temperature)
    if invalid != "cap":
        stats = _tapped_stats(t, inv_temperature, rest)
        beta_used = jnp.asarray(inv_temperature, stats.max_u.dtype)
        return _result(stats.sums, count(stats.bad), beta_used, eta, invalid)
    beta_used, num_invalid = _capped(t, inv_temperature, rest)
    if rest is not None:  # only the leaves outside the tapped layers need a second pass
        again = lambda: _rest_stats(t, beta_used)
        rest = jax.lax.cond(beta_used < inv_temperature, again, lambda: rest)
    stats = _tapped_stats(t, beta_used, rest)
    return _result(stats.sums, num_invalid, beta_used, eta, invalid)


def _finish(run, beta, eta, invalid) -> ExpertLogLikelihoods:
    """Run the pass at β; under `invalid="cap"` run it again at the capped β if some
    β s g > 1 (a `lax.cond`: the second pass runs only when needed)."""
    stats = run(beta)
    beta_used = jnp.asarray(beta, stats.max_u.dtype)
    sums = stats.sums
    if invalid == "cap":
        beta_used = capped_beta(beta_used, stats.max_u).astype(beta_used.dtype)
        sums = jax.lax.cond(stats.max_u > 1, lambda: run(beta_used).sums, lambda: stats.sums)
    return _result(sums, count(stats.bad), beta_used, eta, invalid)


def _result(sums, num_invalid, beta_used, eta, invalid) -> ExpertLogLikelihoods:
    loglik = jtu.tree_map(lambda t: (jnp.asarray(eta, t.dtype) * t).astype(t.dtype), sums)
    return ExpertLogLikelihoods(maybe_raise(loglik, num_invalid, invalid), num_invalid, beta_used)
