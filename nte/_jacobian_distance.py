"""How far a network's Jacobian moved: the distance between two models' parameter Jacobians.

In the lazy (infinitely wide) regime the Jacobian of the outputs with respect to the
parameters stays at its initial value during training, so the tangent experts stay fixed;
[`nte.jacobian_distance`][] measures how much it moved.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import ArrayLike, Float, PyTree, Scalar, Shaped

from ._model_checks import check_batched, check_chunk, check_same_parameters
from ._split import merge, split


def _squared_norms(params_a, static_a, params_b, static_b, xi):
    """(‖J_a(xi) − J_b(xi)‖_F², ‖J_b(xi)‖_F²) for one example, one Jacobian row at a time."""

    def flat(static):
        return lambda p: ravel_pytree(merge(p, static)(xi))[0]

    out_b, vjp_b = jax.vjp(flat(static_b), params_b)
    _, vjp_a = jax.vjp(flat(static_a), params_a)
    eye = jnp.eye(out_b.size, dtype=out_b.dtype)

    def row(e):  # row k of both Jacobians: O(N) memory, never the whole outputs × N matrix
        (ra,), (rb,) = vjp_a(e), vjp_b(e)
        diff = sum(jnp.sum((u - v) ** 2) for u, v in zip(jtu.tree_leaves(ra), jtu.tree_leaves(rb)))
        return diff, sum(jnp.sum(v**2) for v in jtu.tree_leaves(rb))

    diff, ref = jax.lax.map(row, eye)
    return jnp.sum(diff), jnp.sum(ref)


@eqx.filter_jit
def _mean_norms(model_a, model_b, x, batch_size):
    params_a, static_a = split(model_a)
    params_b, static_b = split(model_b)

    def one(xi):
        diff2, ref2 = _squared_norms(params_a, static_a, params_b, static_b, xi)
        return jnp.sqrt(diff2), jnp.sqrt(ref2)

    diff, ref = jax.lax.map(one, x, batch_size=batch_size)
    return jnp.mean(diff), jnp.mean(ref)


def jacobian_distance(
    model_a: eqx.Module,
    model_b: eqx.Module,
    x: PyTree[Shaped[ArrayLike, "batch ..."]],
    *,
    relative: bool = False,
    batch_size: int | None = None,
) -> Float[Scalar, ""]:
    """Mean distance between two models' parameter Jacobians over a batch of inputs.

    With `J(x) = ∂ vec(f(x)) / ∂θ`, the Jacobian of the flattened outputs with respect to every
    floating-point parameter (those [`nte.split`][] selects), this is

    `d = (1/B) Σ_b ‖J_a(x_b) − J_b(x_b)‖_F`

    and, with `relative=True`, `d / ((1/B) Σ_b ‖J_b(x_b)‖_F)`: the change of the Jacobian
    relative to `model_b`'s (pass the initial model as `model_b`). In the lazy regime of a
    wide network the relative distance between the initial and the trained model shrinks
    like `1/√width`, so the tangent experts barely move
    ([maths: neural tangent experts](../math.md#neural-tangent-experts)).

    Memory is O(N) for N parameters: the examples go through `jax.lax.map` and, per example,
    the Jacobian rows (one per output) are computed and reduced one at a time by
    vector-Jacobian products; no Jacobian is ever stored whole. The cost is `2 · outputs`
    backward passes per example.

    **Arguments:**

    - `model_a`, `model_b`: `eqx.Module`s of identical structure, parameter shapes and dtypes
      (e.g. the same network before and after training), each taking ONE example.
    - `x`: a batch of inputs, leading axis `batch` (`x[0]` must be one valid input).
    - `relative`: divide by the mean Frobenius norm of `model_b`'s Jacobian.
    - `batch_size`: how many examples to vmap over at once (`jax.lax.map`'s `batch_size`);
      `None` processes one example at a time (least memory). Memory grows linearly with it.

    **Returns:**

    A scalar in the parameters' dtype: `d` (or `d` relative). Zero for identical models;
    symmetric in `model_a` and `model_b` unless `relative=True` (which gives `inf` or `nan`
    if `model_b`'s Jacobian is zero on every example).

    **Raises:**

    `TypeError`/`ValueError` naming the argument, before any computation, if `model_b`
    differs from `model_a` in structure or parameter shape/dtype, if `x` has no batch axis
    (`model_a` fails on `x[0]`), or if `batch_size` is not a positive int.

    !!! example

        ```python
        model0 = nte.nn.MLP(784, 1000, 2, 10, key=jax.random.key(0))
        model = train(model0)
        nte.jacobian_distance(model, model0, x_test[:256], relative=True)
        ```
    """
    check_same_parameters(model_a, model_b, "model_b", "model_a")
    if not isinstance(relative, bool):
        raise TypeError(f"`relative` must be a bool, got {type(relative).__name__}.")
    check_chunk(batch_size)
    check_batched(model_a, x, "x", "model_a")
    diff, ref = _mean_norms(model_a, model_b, x, batch_size)
    return diff / ref if relative else diff
