"""Taps on layers: the per-example inputs a and backprop signals δ of tapped layers.

For a dense layer y = W a + b the derivative of anything computed from y with respect to W is
the outer product δ aᵀ (δ = its derivative with respect to y) and with respect to b it is δ. A
tap wraps the layer: when called it records the layer's input and adds a perturbation ε (zero)
to its output, so the derivative with respect to ε is δ. The structured NTK
([`nte.empirical_ntk`][]) and the likelihood methods of `nte.likelihood` (see
[maths: the likelihood methods](../math.md#likelihood-methods)) read their inputs and signals
this way.

Which layers are tapped is said by tap rules ([`AbstractTapRule`][]), one per layer type:
`eqx.nn.Linear` (records its input a) and `eqx.nn.Conv1d/2d/3d` with `groups=1` (records the
input patches P[p] at every output position p, so the weight gradient is Σ_p δ[p] P[p]ᵀ and
the bias gradient Σ_p δ[p]); a grouped convolution is not tapped (the generic paths take it).
The recording is a trace-time side effect of one forward pass, scoped by a `ContextVar`
([`run`][]), so a tapped model outside [`run`][] is the plain model.
"""

import abc
import contextvars
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


class AbstractTapRule(eqx.Module):
    """How one type of layer is tapped."""

    @abc.abstractmethod
    def matches(self, node: Any) -> bool:
        """Whether `node` (a node of a model's pytree) is a layer of this rule."""

    @abc.abstractmethod
    def record(self, layer: eqx.Module, x: Array) -> Array:
        """What is recorded of the input `x` of one call of `layer`."""


class LinearRule(AbstractTapRule):
    """`eqx.nn.Linear`: records the input, flattened (a `"scalar"` input becomes `(1,)`)."""

    def matches(self, node: Any) -> bool:
        return isinstance(node, eqx.nn.Linear)

    def record(self, layer: eqx.Module, x: Array) -> Array:
        del layer
        return jnp.ravel(x)


class ConvRule(AbstractTapRule):
    """`eqx.nn.Conv` (1-, 2- or 3-D, `groups=1`, any padding mode): records the input patches
    `[positions, in_channels·prod(kernel_size)]` (im2col, respecting stride, padding and
    dilation; features in the order of `weight[o].ravel()`). Its δ, shaped like the output
    `[out_channels, *positions]`, is read by [`conv_signals`][]."""

    def matches(self, node: Any) -> bool:
        return isinstance(node, eqx.nn.Conv) and node.groups == 1

    def record(self, layer: eqx.Module, x: Array) -> Array:
        return conv_patches(layer, x)


def conv_patches(layer: eqx.nn.Conv, x: Array) -> Array:
    """The input patches of `layer` on one example `x` `[in_channels, *spatial]`:
    `[positions, in_channels·prod(kernel_size)]`, so that `layer(x)[:, p]` is
    `weight.reshape(out, -1) @ patches[p] (+ bias)`."""
    if layer.groups != 1:
        raise ValueError(
            f"conv layers with `groups` > 1 are not supported by the taps, got groups="
            f"{layer.groups} (they are not tapped; the generic paths take them)."
        )
    padding = layer.padding
    if layer.padding_mode != "ZEROS":
        x, padding = layer._nonzero_pad(x), "VALID"
    patches = jax.lax.conv_general_dilated_patches(
        x[None],
        layer.kernel_size,
        layer.stride,
        padding,
        rhs_dilation=layer.dilation,
        precision=jax.lax.Precision.HIGHEST,
    )[0]
    return jnp.reshape(patches, (patches.shape[0], -1)).T


def conv_signals(delta: Array, output: jax.ShapeDtypeStruct) -> Array:
    """δ of a conv call shaped `[..., *output.shape]` (`output`: `[out_channels, *positions]`)
    as `[..., positions, out_channels]`."""
    lead = delta.shape[: delta.ndim - len(output.shape)]
    return jnp.swapaxes(jnp.reshape(delta, lead + (output.shape[0], -1)), -1, -2)


def is_conv(node: Any) -> bool:
    """Whether `node` is a layer tapped by [`ConvRule`][]."""
    return ConvRule().matches(node)


RULES: tuple[AbstractTapRule, ...] = (LinearRule(), ConvRule())
"""The tap rules in use; layers are indexed in flattening order over all of them."""


def _rule(node: Any) -> AbstractTapRule | None:
    return next((r for r in RULES if r.matches(node)), None)


def is_tappable(node: Any) -> bool:
    return _rule(node) is not None


def nodes(tree: PyTree) -> list:
    """Every tappable layer of `tree`, in flattening order (the tap index is the position)."""
    return [n for n in jtu.tree_leaves(tree, is_leaf=is_tappable) if is_tappable(n)]


class Recorder:
    """What one forward pass through tapped layers saw, one entry per call (in call order)."""

    def __init__(self, perturbations: Sequence[Array] | None):
        self.perturbations = perturbations
        self.calls: list[int] = []  # the tap index of each call
        self.inputs: list[Array] = []
        self.outputs: list[jax.ShapeDtypeStruct] = []


_RECORDER: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "nte_tap_recorder", default=None
)


class _Tap(eqx.Module):
    layer: eqx.Module
    index: int = eqx.field(static=True)
    rule: AbstractTapRule = eqx.field(static=True)

    def __call__(self, x, *, key=None):
        y = self.layer(x, key=key)
        rec = _RECORDER.get()
        if rec is None:
            return y
        n = len(rec.calls)
        rec.calls.append(self.index)
        rec.inputs.append(self.rule.record(self.layer, x))
        rec.outputs.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        return y if rec.perturbations is None else y + rec.perturbations[n]


def tap(tree: PyTree, indices: Sequence[int] | None = None) -> PyTree:
    """`tree` with its tappable layers (those in `indices`; default: all) wrapped in taps."""
    counter = itertools.count()

    def wrap(node):
        rule = _rule(node)
        if rule is None:
            return node
        i = next(counter)
        return _Tap(node, i, rule) if indices is None or i in indices else node

    return jtu.tree_map(wrap, tree, is_leaf=is_tappable)


def run(fn: Callable[[], Any], perturbations: Sequence[Array] | None = None):
    """`(fn(), recorder)`: call `fn` (a forward pass through tapped layers) while recording;
    the `n`-th tap call adds `perturbations[n]` to its output (none if `None`)."""
    rec = Recorder(perturbations)
    token = _RECORDER.set(rec)
    try:
        out = fn()
    finally:
        _RECORDER.reset(token)
    return out, rec


def discover(fn: Callable[[], Any]) -> Recorder:
    """Which tapped layers `fn` calls, in which order, with which input and output shapes
    (an abstract pass: no FLOPs)."""
    recs = []

    def forward():
        out, rec = run(fn)
        recs.append(rec)
        return out

    jax.eval_shape(forward)
    return recs[0]


def linearize(fn: Callable[[], Any], outputs: Sequence[jax.ShapeDtypeStruct]):
    """`(out, vjp, inputs)`: `fn()`, its vjp with respect to the perturbations of the tap calls
    (a list, one per call, shaped like `outputs` from [`discover`][]: the backprop signals δ)
    and the recorded inputs."""

    def forward(eps):
        out, rec = run(fn, eps)
        if len(rec.calls) != len(eps):
            raise ValueError("the model called its tapped layers differently between passes.")
        return out, rec.inputs

    eps = [jnp.zeros(s.shape, s.dtype) for s in outputs]
    return jax.vjp(forward, eps, has_aux=True)


def layer_mask(tree: PyTree, indices: Sequence[int]) -> PyTree:
    """A bool tree shaped like `tree`: True on every leaf of the tapped layers `indices`."""
    counter = itertools.count()

    def mark(node):
        if not is_tappable(node):
            return False
        flag = next(counter) in indices
        return jtu.tree_map(lambda _: flag, node)

    return jtu.tree_map(mark, tree, is_leaf=is_tappable)
