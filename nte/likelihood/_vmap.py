"""`Vmap`: per-example gradients of the whole batch, then the sums (the reference)."""

import jax.tree_util as jtu
from jaxtyping import PyTree

from ._base import AbstractMethod, Batch, ExpertLogLikelihoods, Part, apply_policy
from ._grads import all_grads_part, grads_part


class Vmap(AbstractMethod):
    """Per-example gradients of the whole batch (`jax.vmap` of `jax.grad`, as
    [`nte.per_example_grads`][]), then Σ_b log(1 − β s g_b): the reference, memory B×N.

    See [maths: the likelihood methods](../math.md#likelihood-methods).
    """

    def parts(self, batch: Batch) -> list[Part]:
        return [all_grads_part(batch)]


def from_grads(grads: PyTree, signs: PyTree, beta, eta, invalid: str) -> ExpertLogLikelihoods:
    """The likelihood of [`Vmap`][] from given per-example gradients (params-shaped, leading
    batch axis on every leaf), e.g. for [`nte.scale_by_nte`][] (traced)."""
    leaves, treedef = jtu.tree_flatten(grads)
    part = grads_part(leaves, treedef.flatten_up_to(signs), tuple(range(len(leaves))))
    like = treedef.unflatten([g[0] for g in leaves])
    return apply_policy([part], like, beta, eta, invalid)
