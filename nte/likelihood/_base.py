"""The method interface, the result, and the one place where the invalid-expert policy acts."""

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, Int, PyTree

from .._errors import check_choice
from ._kernels import Stats, capped_beta, count, flooring, max_of

INVALID_POLICIES = ("cap", "floor", "raise", "prune")


class ExpertLogLikelihoods(eqx.Module):
    """The log-likelihood of every neural tangent expert on a batch, ready for
    [`nte.scale_by_nte`][].

    **Fields:**

    - `log_likelihoods`: a params-shaped pytree, L_i = η Σ_b log(1 − β s_i g_{b,i}) (−inf marks
      an expert pruned by this batch: 1 − β s g = 0 exactly, or < 0 under `invalid="prune"`;
      NaN marks a parameter with a non-finite per-example gradient, which
      [`nte.scale_by_nte`][] never applies: it skips the step).
    - `num_invalid`: how many parameters had 1 − β s g < 0 for some example (before the policy).
    - `inv_temperature`: the β actually used (smaller than requested if `invalid="cap"` capped it).
    """

    log_likelihoods: PyTree
    num_invalid: Int[Array, ""]
    inv_temperature: Float[Array, ""]


class Batch(NamedTuple):
    """One call's data: `loss_fn(model, x_b, y_b)` on ONE example, the experts `params` and
    the rest `static` of the model, the batch `(x, y)` and the fixed `signs` (params-shaped)."""

    loss_fn: Callable
    params: PyTree
    static: PyTree
    x: PyTree
    y: PyTree
    signs: PyTree


class Part(NamedTuple):
    """Some leaves of the parameters and how their sums are computed.

    - `leaves`: positions of the leaves in `jax.tree_util.tree_leaves(params)`.
    - `stats(β)`: [`Stats`][] of those leaves at β (sums and masks in the order of `leaves`).
    - `bound(β)`: an upper bound U ≥ max β s g known without a pass over the examples, or
      `None` when the max comes only from `stats` (then `stats` runs first at the requested β).
    - `max(β)`: with `bound`, the exact `(max u, number of invalid experts)` without logs.
    """

    leaves: tuple[int, ...]
    stats: Callable[[Array], Stats]
    bound: Callable[[Array], Array] | None = None
    max: Callable[[Array], tuple[Array, Array]] | None = None


class AbstractMethod(eqx.Module):
    """How [`nte.expert_log_likelihoods`][] computes L_i = η Σ_b log(1 − β s_i g_{b,i}).

    A method splits the parameters into parts (`Part`) and says how each one's sums over the
    batch are computed at a given β; the invalid-expert policy, η and the result are the same for
    every method. See [maths: the likelihood methods](../math.md#likelihood-methods).
    """

    @abc.abstractmethod
    def parts(self, batch: Batch) -> list[Part]:
        """The parts of `batch.params` (every leaf in exactly one part), traced."""

    def check(self, batch_size: int) -> None:
        """Eager checks of a call on `batch_size` examples (none; [`Sharded`][] checks that the
        batch divides over its devices)."""
        del batch_size

    def compute(self, batch: Batch, beta, eta, invalid: str) -> ExpertLogLikelihoods:
        """The log-likelihoods of `batch` at β, η under the policy `invalid` (traced)."""
        return apply_policy(self.parts(batch), batch.params, beta, eta, invalid)


def check_invalid(invalid: Any) -> None:
    check_choice(invalid, INVALID_POLICIES, "invalid")


def apply_policy(
    parts: list[Part], like: PyTree, beta, eta, invalid: str, axis_name: str | None = None
) -> ExpertLogLikelihoods:
    """L = η Σ_b log(1 − β s g_b) from `parts`, under the invalid-expert policy `invalid`.

    The one place where the policy acts ([maths: invalid experts](../math.md#invalid-experts)):
    `"cap"` lowers β for the whole batch to β(1 − ε)/max(β s g) (deciding from the parts'
    bounds and exact maxima before the main pass, and re-running a part only if β was capped),
    `"floor"` traces the sums with the logs floored at ε, `"prune"` keeps −inf for every expert
    with 1 − β s g ≤ 0 on some example, `"raise"` raises (also under jit) if any expert is
    invalid or any gradient is not finite (naming the leaf). Every valid expert
    (0 < 1 − β s g) gets its exact log except under `"floor"`.
    With `axis_name` (inside `jax.shard_map`, the batch split over that axis) the capped β is the
    smallest over the shards and the sums and counts are added across them.

    **Arguments:** `like`: the params-shaped tree of the result (structure and dtypes).
    """
    leaves, treedef = jtu.tree_flatten(like)
    beta = jnp.asarray(beta, jnp.result_type(float, *leaves))
    with flooring(invalid == "floor"):
        if invalid == "cap":
            sums, beta_used, num_invalid = _capped(parts, beta, axis_name)
        else:
            stats = [p.stats(beta) for p in parts]
            sums = [s.sums for s in stats]
            beta_used = beta
            num_invalid = sum((count(s.bad) for s in stats), jnp.int32(0))
    out = [None] * len(leaves)
    for part, values in zip(parts, sums):
        for i, v in zip(part.leaves, values):
            out[i] = v
    if axis_name is not None:
        out, num_invalid = jax.lax.psum((out, num_invalid), axis_name)
    loglik = treedef.unflatten([(jnp.asarray(eta, v.dtype) * v).astype(v.dtype) for v in out])
    num_invalid = jnp.asarray(num_invalid, jnp.int32)
    if invalid == "raise":
        loglik = raise_if_not_finite(_raise_if(loglik, num_invalid), like)
    return ExpertLogLikelihoods(loglik, num_invalid, beta_used)


def not_finite(v: Array) -> Array:
    """Where a log-likelihood comes from a non-finite gradient: NaN (or +inf, which finite
    gradients cannot give: every factor's log is finite or −inf)."""
    return jnp.isnan(v) | (v == jnp.inf)


def raise_if_not_finite(loglik: PyTree, like: PyTree) -> PyTree:
    """`eqx.error_if` per leaf: a non-finite per-example gradient raises, naming the leaf's path
    in `like` (also under jit, as a runtime error when the step runs)."""
    paths = [jtu.keystr(path) for path, _ in jtu.tree_flatten_with_path(like)[0]]
    leaves, treedef = jtu.tree_flatten(loglik)
    checked = [
        eqx.error_if(
            v,
            jnp.any(not_finite(v)),
            f"non-finite (NaN or infinite) per-example gradient in the parameter leaf {path}: "
            "the step would change parameters from it (invalid='raise').",
        )
        for v, path in zip(leaves, paths)
    ]
    return treedef.unflatten(checked)


def _capped(parts: list[Part], beta, axis_name):
    """`invalid="cap"`: `(sums per part, β_used, num_invalid)`. Parts without a bound run at β
    first (their max is exact); the bounds of the others show whether any u can exceed 1, and
    only then (a `lax.cond` on scalars) their exact maxima are taken in a pass without logs."""
    first = [None if p.bound else p.stats(beta) for p in parts]
    known = max_of([f.max_u for f in first if f is not None])
    known_bad = sum((count(f.bad) for f in first if f is not None), jnp.int32(0))
    bound = max_of([p.bound(beta) for p in parts if p.bound])
    may_cap = (known > 1) | (bound * (1 + 1e-4) > 1)  # bounds are rounded: a margin

    def exact():
        maxima = [p.max(beta) for p in parts if p.bound]
        max_u = max_of([known] + [m for m, _ in maxima])
        num_bad = sum((c for _, c in maxima), known_bad)
        return capped_beta(beta, max_u).astype(beta.dtype), jnp.asarray(num_bad, jnp.int32)

    beta_used, num_invalid = jax.lax.cond(may_cap, exact, lambda: (beta, known_bad))
    if axis_name is not None:  # one β for the whole batch: the smallest cap of any shard
        beta_used = jax.lax.pmin(beta_used, axis_name)
    capped = beta_used < beta
    sums = []
    for p, f in zip(parts, first):
        if f is None:
            sums.append(p.stats(beta_used).sums)
        else:
            again = lambda p=p: p.stats(beta_used).sums
            sums.append(jax.lax.cond(capped, again, lambda f=f: f.sums))
    return sums, beta_used, num_invalid


def _raise_if(tree: PyTree, num_invalid: Array) -> PyTree:
    return eqx.error_if(
        tree,
        num_invalid > 0,
        "invalid experts: 1 − β·s·g < 0 for some parameter; `inv_temperature` (β) is too large "
        "for this batch (use invalid='cap', 'floor' or 'prune', or a smaller β).",
    )
