"""Methods that read layers from their taps: the weights of every `eqx.nn.Linear` layer
called once per example from its inputs a_b and backprop signals δ_b (the per-example weight
gradient is δ_b a_bᵀ), biases from δ_b; the weights of every conv layer called once per example
from its patches and signals (`_conv.py`, exact); every other leaf from per-example gradients
in chunks.
"""

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .. import _taps as taps
from .._split import merge
from ._base import AbstractMethod, Batch, Part
from ._conv import conv_bias_part, conv_weight_part
from ._grads import chunked_part, default_chunk, sign_leaves
from ._kernels import Stats, exact_max, layer_bound, tree_stats


class _Layer(NamedTuple):
    index: int  # the tap index
    output: jax.ShapeDtypeStruct  # of the layer's call
    weight: int  # position of the weight among the parameter leaves
    bias: int | None  # position of the bias (None: no bias, or not an expert)
    conv: bool = False  # a conv layer (its record is the input patches)


def _positions(batch: Batch) -> list:
    """The tappable layers of a tree shaped like `batch.params` whose leaves are their
    positions among the parameter leaves."""
    flat, treedef = jtu.tree_flatten(batch.params)
    return taps.nodes(treedef.unflatten(range(len(flat))))


def find_layers(batch: Batch) -> list[_Layer]:
    """The Linear layers whose 2-D weight is an expert and the conv layers whose weight is an
    expert which the loss calls exactly once per example on an input of the weight's dtype, in
    call order (an abstract pass)."""
    flat = jtu.tree_leaves(batch.params)
    positions = _positions(batch)
    model = taps.tap(merge(batch.params, batch.static))
    if len(positions) != len(taps.nodes(model)):
        return []
    x0, y0 = jtu.tree_map(lambda a: a[0], (batch.x, batch.y))
    rec = taps.discover(lambda: batch.loss_fn(model, x0, y0))
    layers = []
    for i, a, out in zip(rec.calls, rec.inputs, rec.outputs):
        w, conv = positions[i].weight, taps.is_conv(positions[i])
        if w is None or rec.calls.count(i) != 1 or a.dtype != flat[w].dtype:
            continue
        shape = flat[w].shape
        if conv and a.shape[1:] == (jnp.size(flat[w]) // shape[0],):
            layers.append(_Layer(i, out, w, positions[i].bias, True))
        elif not conv and len(shape) == 2 and a.shape == shape[1:]:
            layers.append(_Layer(i, out, w, positions[i].bias))
    return layers


def layer_signals(batch: Batch, layers: list[_Layer]) -> list[tuple[Array, Array]]:
    """Per-example `(D, A)` of each layer: D (batch, out) = δ_b, A (batch, in) = a_b; for a
    conv layer D (batch, positions, out) and A (batch, positions, patch) = the patches."""
    model = taps.tap(merge(batch.params, batch.static), [layer.index for layer in layers])
    outputs = [layer.output for layer in layers]

    def single(x, y):
        loss, vjp, inputs = taps.linearize(lambda: batch.loss_fn(model, x, y), outputs)
        (deltas,) = vjp(jnp.ones_like(loss))
        return deltas, inputs

    deltas, inputs = jax.vmap(single)(batch.x, batch.y)
    n = jtu.tree_leaves(batch.x)[0].shape[0]
    return [
        (taps.conv_signals(d, layer.output) if layer.conv else jnp.reshape(d, (n, -1)), a)
        for layer, d, a in zip(layers, deltas, inputs)
    ]


class AbstractTappedMethod(AbstractMethod):
    """A method that reads dense layers from their taps; subclasses say how a tapped layer's
    weight sums are computed ([`weight_stats`][])."""

    chunk_size: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def weight_stats(self, D: Array, A: Array, s: Array, beta) -> tuple[Array, Array, Array]:
        """`(sums, max_u, bad)` of a tapped layer's weight with signs `s` at β."""

    def parts(self, batch: Batch) -> list[Part]:
        chunk = self.chunk_size or default_chunk(batch)
        layers = find_layers(batch)
        tapped = {layer.weight for layer in layers} | {layer.bias for layer in layers}
        num = len(jtu.tree_leaves(batch.params))
        rest = tuple(i for i in range(num) if i not in tapped)
        parts = [chunked_part(batch, rest, chunk)] if rest else []
        signs = sign_leaves(batch)
        for layer, (D, A) in zip(layers, layer_signals(batch, layers)):
            if layer.conv:
                parts.append(conv_weight_part(D, A, signs[layer.weight], layer.weight))
                if layer.bias is not None:
                    parts.append(conv_bias_part(D, signs[layer.bias], layer.bias))
                continue
            parts.append(self._weight_part(D, A, signs[layer.weight], layer.weight))
            if layer.bias is not None:
                s = signs[layer.bias]
                Db = jnp.reshape(D, D.shape[:1] + s.shape)
                parts.append(Part((layer.bias,), lambda b, Db=Db, s=s: tree_stats([Db], [s], b)))
        return parts

    def _weight_part(self, D, A, s, position: int) -> Part:
        def stats(beta):
            sums, max_u, bad = self.weight_stats(D, A, s, beta)
            return Stats([sums], max_u, [bad])

        bound = lambda beta: layer_bound(beta, D, A)
        return Part((position,), stats, bound, lambda beta: exact_max(D, A, s, beta))
