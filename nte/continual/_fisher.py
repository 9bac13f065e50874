"""The diagonal Fisher information and the EWC penalty (Kirkpatrick et al., PNAS 2017).

Two estimators of the diagonal Fisher of a classifier `p(y | x, θ) = softmax(f(x; θ))`:

```
empirical:  F_i = (1/n) Σ_b ( ∂_i log p(y_b  | x_b, θ) )²    y_b: the true labels
true:       F_i = (1/n) Σ_b ( ∂_i log p(ŷ_b | x_b, θ) )²    ŷ_b ~ p(· | x_b, θ), one sample each
```

Both use per-example gradients ([`nte.per_example_grads`][]), computed `chunk_size` examples at
a time inside a `lax.scan` (no Python loop, and never more than `chunk_size` per-example
gradients in memory). The EWC penalty keeps the ½ of the Laplace approximation:

```
penalty(θ) = (λ/2) Σ_i F_i (θ_i − θ*_i)²        ∇ penalty = λ F ⊙ (θ − θ*)
```

(many implementations drop the ½, which is the same as doubling λ).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree, Scalar

from .._errors import check_choice, check_module, check_positive
from .._per_example import per_example_grads
from .._split import split
from ._learner import cross_entropy, masked_log_softmax

FISHER_VARIANTS = ("empirical", "true")


def _sample_labels(model, x, mask, key):
    logits = jax.vmap(model)(x)
    return jr.categorical(key, jax.vmap(masked_log_softmax, in_axes=(0, None))(logits, mask))


def fisher_diagonal(
    model: eqx.Module,
    x: Float[Array, "_batch ..."],
    y: Int[Array, " _batch"],
    *,
    mask: Bool[Array, " classes"] | None = None,
    variant: str = "empirical",
    key: PRNGKeyArray | None = None,
    chunk_size: int | None = None,
) -> PyTree[Float[Array, "..."]]:
    """The diagonal Fisher information of a classifier, averaged over a batch of examples.

    `F = (1/n) Σ_b g_b ⊙ g_b` with `g_b = ∇_θ log p(y_b | x_b, θ)` the per-example gradient of
    the log-likelihood under the (masked) softmax of [`nte.continual.cross_entropy`][]:

    - `variant="empirical"`: `y_b` are the given labels (the "empirical Fisher");
    - `variant="true"`: `y_b ~ p(· | x_b, θ)` is sampled once per example from the model's own
      predictive distribution (a one-sample Monte-Carlo estimate of the true Fisher), which
      needs `key`.

    **Arguments:**

    - `model`: an `eqx.Module` mapping one example to logits `[classes]`.
    - `x`: `[n, ...]` inputs.
    - `y`: `[n]` integer labels (ignored, except for their count, when `variant="true"`).
    - `mask`: optional bool `[classes]`: the logits of the task (default: all).
    - `variant`: `"empirical"` or `"true"`.
    - `key`: a PRNG key, required for `variant="true"`.
    - `chunk_size`: the number of per-example gradients held in memory at once (default: all
      `n`). The batch is padded to a multiple of `chunk_size`; padded examples get weight 0.

    **Returns:**

    A pytree shaped like `nte.split(model)[0]` (the parameters) holding `F`.
    """
    check_module(model)
    check_choice(variant, FISHER_VARIANTS, "variant")
    n = x.shape[0]
    if n < 1 or y.shape != (n,):
        raise ValueError(f"`x` and `y` must hold the same number n >= 1 of examples, got {n}.")
    chunk = n if chunk_size is None else chunk_size
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"`chunk_size` must be an int >= 1, got {chunk_size!r}.")
    if mask is None:
        mask = jnp.ones(jax.eval_shape(model, x[0]).shape, bool)
    if variant == "true":
        if key is None:
            raise ValueError('`key` is required for `variant="true"`.')
        y = _sample_labels(model, x, mask, key)
    return _mean_squared_grads(model, x, y, mask, min(chunk, n))


def _mean_squared_grads(model, x, y, mask, chunk):
    n = x.shape[0]
    n_chunks = math.ceil(n / chunk)
    pad = n_chunks * chunk - n
    weight = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)])
    xs = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    ys = jnp.concatenate([y, jnp.zeros(pad, y.dtype)])
    xs, ys, weight = (a.reshape((n_chunks, chunk) + a.shape[1:]) for a in (xs, ys, weight))
    params, _ = split(model)

    def body(total, inputs):
        xc, yc, wc = inputs
        masks = jnp.broadcast_to(mask, yc.shape + mask.shape)
        g = per_example_grads(cross_entropy, model, xc, (yc, masks))
        sq = jax.tree_util.tree_map(lambda gi: jnp.tensordot(wc, gi * gi, axes=1), g)
        return jax.tree_util.tree_map(jnp.add, total, sq), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    total, _ = lax.scan(body, zeros, (xs, ys, weight))
    return jax.tree_util.tree_map(lambda t: t / n, total)


def ewc_penalty(
    params: PyTree[Float[Array, "..."]],
    fisher: PyTree[Float[Array, "..."]],
    anchor: PyTree[Float[Array, "..."]],
    ewc_lambda: float | Scalar,
) -> Scalar:
    """The EWC penalty `(λ/2) Σ_i F_i (θ_i − θ*_i)²`.

    Its gradient with respect to `params` is `λ F ⊙ (θ − θ*)`. The ½ is kept: implementations
    that drop it use twice the λ written here.

    **Arguments:**

    - `params`: `θ`, a pytree of arrays (`None` leaves are skipped).
    - `fisher`: `F`, a pytree with the structure of `params`.
    - `anchor`: `θ*`, a pytree with the structure of `params`.
    - `ewc_lambda`: `λ >= 0`.

    **Returns:**

    A scalar.
    """
    check_positive(ewc_lambda, "ewc_lambda", allow_zero=True)
    terms = jax.tree_util.tree_map(
        lambda p, f, a: jnp.sum(f * (p - a) ** 2), params, fisher, anchor
    )
    return 0.5 * ewc_lambda * sum(jax.tree_util.tree_leaves(terms), jnp.zeros(()))
