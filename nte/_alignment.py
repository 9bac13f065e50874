"""Whether the gradients still point where they did at initialization: gradient alignment.

The tangent experts are fixed only while the per-example gradients keep their initial
direction (the lazy regime); [`nte.gradient_alignment`][] measures how far they turned.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float, PyTree, Scalar, Shaped

from ._errors import check_callable
from ._model_checks import (
    check_batch_sizes,
    check_batched,
    check_chunk,
    check_same_parameters,
)
from ._split import merge, split


def _cosine(u: Array, v: Array) -> Array:
    """`<u, v> / (‖u‖ ‖v‖)`, and 0 when either vector is exactly zero."""
    nu, nv = jnp.sqrt(jnp.sum(u * u)), jnp.sqrt(jnp.sum(v * v))
    safe = jnp.where((nu > 0) & (nv > 0), nu * nv, 1)
    return jnp.where((nu > 0) & (nv > 0), jnp.sum(u * v) / safe, 0)


@eqx.filter_jit
def _leaf_cosines(loss_fn, model, model0, x, y, batch_size):
    """Per example, per parameter leaf: the cosine of the two loss gradients, shape (B, L)."""
    params, static = split(model)
    params0, static0 = split(model0)

    def grad(p, static, xi, yi):
        return jax.grad(lambda q: loss_fn(merge(q, static), xi, yi))(p)

    def one(xy):
        xi, yi = xy
        g, g0 = grad(params, static, xi, yi), grad(params0, static0, xi, yi)
        pairs = zip(jtu.tree_leaves(g), jtu.tree_leaves(g0))
        return jnp.stack([_cosine(u, v) for u, v in pairs])

    return jax.lax.map(one, (x, y), batch_size=batch_size)


def _check_loss(loss_fn, model, x, y) -> None:
    first = jtu.tree_map(lambda a: a[0], (x, y))
    try:
        out = eqx.filter_eval_shape(loss_fn, model, *first)
    except Exception as e:
        raise ValueError(
            f"`loss_fn(model, x[0], y[0])` failed: {type(e).__name__}: {e}. `loss_fn` must take "
            "a model and ONE example (x_single, y_single) and return a scalar."
        ) from None
    if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ValueError(
            f"`loss_fn` must return a floating-point scalar, got {getattr(out, 'shape', out)}."
        )


def gradient_alignment(
    loss_fn: Callable[[Any, Any, Any], Scalar],
    model: eqx.Module,
    model0: eqx.Module,
    x: PyTree[Shaped[ArrayLike, "_batch ..."]],
    y: PyTree[Shaped[ArrayLike, "_batch ..."]],
    *,
    batch_size: int | None = None,
) -> Float[Scalar, ""]:
    """Mean cosine between the per-example loss gradients at `model` and at `model0`.

    For each example `b` and each parameter leaf `l` (every floating-point array, as
    [`nte.split`][] selects), with `g = ∇_l loss_fn(model, x_b, y_b)` and
    `g⁰ = ∇_l loss_fn(model0, x_b, y_b)`,

    `c_bl = <g, g⁰> / (‖g‖ ‖g⁰‖)`,

    averaged over the examples, then over the leaves weighted by their sizes `n_l`:
    `A = Σ_l n_l c̄_l / Σ_l n_l`. `A = 1` while training is lazy (the gradients, hence the
    tangent experts, keep their initial direction) and falls as they turn
    ([maths: neural tangent experts](../math.md#neural-tangent-experts)).

    **Zero gradients:** the cosine of a leaf whose gradient is exactly zero at either model
    (e.g. a layer behind dead ReLUs) is taken as `0`, the convention of PyTorch's
    `cosine_similarity`: such a pair counts as unaligned, and `A` never becomes NaN.

    Memory is that of one example's two gradients (O(N)) times `batch_size`: the examples go
    through `jax.lax.map`, and per-example gradients are never stored for the whole batch.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, x_single, y_single) -> scalar`, on ONE example.
    - `model`: the current model.
    - `model0`: the reference model (e.g. at initialization), of the same structure,
      parameter shapes and dtypes.
    - `x`, `y`: batched inputs and targets (leading axis `batch`, equal sizes).
    - `batch_size`: how many examples to vmap over at once; `None`: one at a time.

    **Returns:**

    A scalar in `[-1, 1]`.

    **Raises:**

    `TypeError`/`ValueError` naming the argument, before any computation, if `model0` differs
    from `model` in structure or parameter shape/dtype, if `x` has no batch axis (`model`
    fails on `x[0]`), if `x` and `y` differ in batch size, or if `loss_fn` does not map one
    example to a scalar.
    """
    check_callable(loss_fn, "loss_fn")
    check_same_parameters(model, model0, "model0", "model")
    check_chunk(batch_size)
    n = check_batched(model, x, "x", "model")
    check_batch_sizes(n, y, "y", "x")
    _check_loss(loss_fn, model, x, y)
    cosines = jnp.mean(_leaf_cosines(loss_fn, model, model0, x, y, batch_size), axis=0)
    sizes = jnp.asarray([a.size for a in jtu.tree_leaves(split(model)[0])], cosines.dtype)
    return jnp.sum(sizes * cosines) / jnp.sum(sizes)
