"""Parts computed from per-example gradients: all at once, or a chunk of examples at a time."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._per_example import batch_size
from .._split import merge
from ._base import Batch, Part
from ._kernels import Stats, merge_stats, tree_stats

CHUNK_ELEMENTS = 2**22
"""The default chunk holds about this many gradient elements (16 MiB in float32)."""


def default_chunk(batch: Batch) -> int:
    """Examples per chunk: about `CHUNK_ELEMENTS` gradient elements (at least 1, at most B)."""
    n = batch_size(batch.x)
    size = sum(int(jnp.size(p)) for p in jtu.tree_leaves(batch.params))
    return max(1, min(n, CHUNK_ELEMENTS // max(size, 1)))


def sign_leaves(batch: Batch) -> list:
    return jtu.tree_structure(batch.params).flatten_up_to(batch.signs)


def _grad_fn(batch: Batch, leaves: tuple[int, ...]):
    """`(diff, grad)`: the parameters at positions `leaves` (None elsewhere) and the
    per-example gradient `grad(diff, x, y)` of `batch.loss_fn` with respect to them."""
    flat, treedef = jtu.tree_flatten(batch.params)
    diff = treedef.unflatten([v if i in leaves else None for i, v in enumerate(flat)])
    fixed = treedef.unflatten([None if i in leaves else v for i, v in enumerate(flat)])

    def single(p, xi, yi):
        return batch.loss_fn(merge(eqx.combine(p, fixed), batch.static), xi, yi)

    return diff, jax.vmap(jax.grad(single), in_axes=(None, 0, 0))


def grads_part(grads: list, signs: list, leaves: tuple[int, ...]) -> Part:
    """A part from materialized per-example gradients (leading batch axis on every leaf)."""
    return Part(leaves, lambda beta: tree_stats(grads, signs, beta))


def all_grads_part(batch: Batch) -> Part:
    """Every leaf, from the per-example gradients of the whole batch (memory B×N)."""
    leaves = tuple(range(len(jtu.tree_leaves(batch.params))))
    diff, grad = _grad_fn(batch, leaves)
    grads = jtu.tree_leaves(grad(diff, batch.x, batch.y))
    return grads_part(grads, sign_leaves(batch), leaves)


def chunked_part(batch: Batch, leaves: tuple[int, ...], chunk: int) -> Part:
    """The leaves at positions `leaves`, from per-example gradients `chunk` examples at a time
    (a `lax.scan`; extra memory O(chunk·N)). The batch is padded with copies of its first
    example, masked out, when `chunk` does not divide it."""
    n = batch_size(batch.x)
    chunk = min(chunk, n)
    num = -(-n // chunk)
    pad = num * chunk - n

    def reshape(a):
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
        return a.reshape((num, chunk) + a.shape[1:])

    xs, ys = jtu.tree_map(reshape, batch.x), jtu.tree_map(reshape, batch.y)
    weight = (jnp.arange(num * chunk) < n).reshape(num, chunk)
    diff, grad = _grad_fn(batch, leaves)
    params = jtu.tree_leaves(diff)
    signs = [sign_leaves(batch)[i] for i in leaves]

    def stats(beta):
        def body(acc, inputs):
            xc, yc, wc = inputs
            g = jtu.tree_leaves(grad(diff, xc, yc))
            return merge_stats(acc, tree_stats(g, signs, beta, wc)), None

        dtype = jnp.result_type(*params)
        zeros = Stats(
            [jnp.zeros_like(p) for p in params],
            jnp.zeros((), dtype),
            [jnp.zeros(p.shape, bool) for p in params],
        )
        return jax.lax.scan(body, zeros, (xs, ys, weight))[0]

    return Part(leaves, stats)
