"""Positive homogeneity of a network in its parameters, and its Euler identity."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PyTree, Shaped

from ._errors import check_module, check_stateless
from ._function import check_batch
from ._homogeneity import trace_degrees
from ._split import merge, split

_SCALES = (0.5, 2.0, 3.0)  # the numerical check f(x; c^d ⊙ θ) = c^L f(x; θ)
_PROBE_EXAMPLES = 8


def _first_layer(model: eqx.Module):
    is_layer = lambda n: isinstance(n, (eqx.nn.Linear, eqx.nn.Conv))  # noqa: E731
    for path, node in jtu.tree_flatten_with_path(model, is_leaf=is_layer)[0]:
        if is_layer(node):
            return jtu.keystr(path), node
    return None, None


def _expected_shape(model: eqx.Module) -> tuple | None:
    """The shape of one example as far as the model tells it (a str stands for any size)."""
    in_shape, in_size = getattr(model, "in_shape", None), getattr(model, "in_size", None)
    if isinstance(in_shape, tuple) and all(isinstance(s, int) for s in in_shape):
        return in_shape
    if isinstance(in_size, int) or in_size == "scalar":
        return () if in_size == "scalar" else (in_size,)
    _, layer = _first_layer(model)
    if isinstance(layer, eqx.nn.Linear):
        return () if layer.in_features == "scalar" else (layer.in_features,)
    if isinstance(layer, eqx.nn.Conv):
        return (layer.in_channels, *("DHW"[-layer.num_spatial_dims :]))
    return None


def check_input(model: eqx.Module, x) -> Array:
    """`check_batch`, with the shape the first weight layer expects added to the error."""
    try:
        return check_batch(model, x, "x")
    except ValueError as error:
        path, layer = _first_layer(model)
        shape = _expected_shape(model)
        if shape is None:
            raise
        shown = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        origin = f" (its first weight layer `model{path}` is a {type(layer).__name__})"
        raise ValueError(
            f"{error} `x` must hold examples of shape {shown}{origin if layer else ''}."
        ) from None


def _probe_batch(model: eqx.Module, x) -> Array:
    if x is not None:
        return check_input(model, x)[:_PROBE_EXAMPLES]
    shape = _expected_shape(model)
    if shape is None or any(isinstance(s, str) for s in shape):
        raise ValueError(
            "`x`: the input shape of `model` cannot be inferred from its layers; pass an "
            "example batch `x` (e.g. `nte.homogeneity_degree(model, x)`)."
        )
    dtypes = [leaf.dtype for leaf in jtu.tree_leaves(split(model)[0])]
    return check_input(model, jr.normal(jr.key(0), (4, *shape), dtypes[0] if dtypes else None))


@eqx.filter_jit
def _scaled_outputs(params, static, degrees, x):
    """The outputs at c^d ⊙ θ for c in (1, *_SCALES), one forward pass vmapped over c."""
    cs = jnp.asarray((1.0, *_SCALES))

    def f(c):
        p = jtu.tree_map(lambda p, d: p * (c**d).astype(p.dtype), params, degrees)
        return jtu.tree_leaves(jax.vmap(merge(p, static))(x))

    outs = jax.vmap(f)(cs)
    return [o[0] for o in outs], [[o[i] for o in outs] for i in range(1, len(cs))]


def _verify(params, static, degrees, L: int, x: Array) -> None:
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jtu.tree_leaves(params)):
        return  # traced parameters: the numerical check needs concrete values
    base, scaled = _scaled_outputs(params, static, degrees, x)
    size = max((float(jnp.max(jnp.abs(b))) for b in base if b.size), default=0.0)
    for c, outs in zip(_SCALES, scaled):
        for b, s in zip(base, outs):
            eps = float(jnp.finfo(b.dtype).eps) if jnp.issubdtype(b.dtype, jnp.inexact) else 0.0
            error = float(jnp.max(jnp.abs(s - c**L * b), initial=0.0))
            if error > 4 * math.sqrt(eps) * c**L * max(size, np.finfo(np.float32).tiny):
                raise ValueError(
                    f"`model` is not positively homogeneous in its parameters: scaling each "
                    f"parameter leaf by c^d (c = {c}, the degrees found) changes the output by "
                    f"{error:.3g} more than c^{L} f(x) allows."
                )


def analyse(model: eqx.Module, x=None) -> tuple[int, PyTree[int]]:
    """The homogeneity degree L and the params-shaped tree of per-leaf degrees (ints).

    Traces the network once on one example, then checks f(x; c^d ⊙ θ) = c^L f(x; θ)
    numerically for c in (0.5, 2, 3) on (at most 8 examples of) `x`.
    """
    check_module(model)
    check_stateless(model)
    probe = _probe_batch(model, x)
    params, static = split(model)
    leaves_with_paths, treedef = jtu.tree_flatten_with_path(params)
    paths = [jtu.keystr(path) for path, _ in leaves_with_paths]
    example = jax.ShapeDtypeStruct(probe.shape[1:], probe.dtype)
    L, leaf_degrees = trace_degrees(model, example, paths)
    degrees = jtu.tree_unflatten(treedef, leaf_degrees)
    _verify(params, static, degrees, L, probe)
    return L, degrees


def homogeneity_degree(
    model: eqx.Module, x: Shaped[Array | np.ndarray, "n ..."] | None = None
) -> int:
    """The degree L of positive homogeneity of a network in its parameters.

    With every parameter leaf ℓ scaled by c^{d_ℓ} (c > 0; d_ℓ from [`nte.parameter_degrees`][]),
    the output scales by c^L: f(x; c^d ⊙ θ) = c^L f(x; θ). For a bias-free ReLU network L is
    the number of weight layers on the signal path, and scaling every parameter by c scales the
    output by c^L; with biases, the bias of weight layer l has degree l. See
    [maths: neural tangent experts](../math.md#neural-tangent-experts). How the degrees are
    found is described at [`nte.parameter_degrees`][].

    Works for [`nte.nn.MLP`][], [`nte.nn.CNN`][], `eqx.nn.MLP` (ReLU, leaky ReLU or identity
    activations), `eqx.nn.Sequential` of `Linear`/`Conv1d`/`Conv2d`/`MaxPool2d`/`AvgPool2d`/
    `Lambda(jax.nn.relu)`/`Lambda(jnp.ravel)` layers, and modules built from those.

    **Arguments:**

    - `model`: an `eqx.Module` whose `__call__` takes one example.
    - `x`: an example batch `[N, ...]`; optional when the input shape can be read from the
      model (`in_size`/`in_shape`, or a first `eqx.nn.Linear` layer), needed otherwise (e.g.
      for an `eqx.nn.Sequential` that starts with a convolution).

    **Returns:**

    `L`, a Python int.
    """
    return analyse(model, x)[0]


def parameter_degrees(
    model: eqx.Module, x: Shaped[Array | np.ndarray, "n ..."] | None = None
) -> PyTree[int]:
    """The homogeneity degree d_ℓ of every parameter leaf: 1 for weights, l for the bias of layer l.

    The degrees satisfy f(x; c^d ⊙ θ) = c^L f(x; θ) for c > 0 with L =
    [`nte.homogeneity_degree`][], and Euler's identity Σ_i d_i θ_i ∂f/∂θ_i = L f
    ([`nte.euler_residual`][]). The learning-by-pruning rule d ← d/L uses them.

    **How they are found.**
    The degrees are read off the network itself, not its type: the network is traced once
    (`jax.make_jaxpr`, on one example) as a function of its parameter leaves, and every value
    in the trace gets the degree by which it scales. The input has degree 0; a leaf multiplied
    into the signal (by `eqx.nn.Linear`, `eqx.nn.Conv*`, or any product) is a *weight* of degree
    1; a leaf added to a value of degree l is a *bias* of degree l (so the bias of the l-th weight
    layer along the signal path has degree l); products add degrees; ReLU (`max(h, 0)`),
    leaky ReLU, max/average pooling, reshapes and sums keep them. Anything that is not positively
    homogeneous on a value that scales with the parameters (tanh, sigmoid, an additive constant,
    LayerNorm, a residual `h + W h`, a bias added before any weight layer) raises one
    `ValueError` naming the sub-module it happens in (e.g. `model.layers[3]`). The degrees
    found are then checked numerically, f(x; c^d ⊙ θ) = c^L f(x; θ) for c in (0.5, 2, 3).
    Control flow (`lax.scan`, `while_loop`, `cond`) on parameter-dependent values is not
    followed and raises `ValueError`; parameter-independent preprocessing of the input (even
    `tanh(x)`) is allowed. Models with an `eqx.nn.State` (BatchNorm) raise `TypeError`.

    **Arguments:**

    - `model`: an `eqx.Module` whose `__call__` takes one example.
    - `x`: an example batch `[N, ...]` (optional, as for [`nte.homogeneity_degree`][]).

    **Returns:**

    A pytree with the structure of `nte.split(model)[0]` and a Python int at every parameter
    leaf, e.g. `jax.tree.map(lambda d, p: d * p, degrees, params)` is d ⊙ θ.

    !!! example

        ```python
        model = nte.nn.MLP(4, 8, 1, 3, key=jax.random.key(0))
        nte.parameter_degrees(model)  # layers[0]: weight 1, bias 1; layers[1]: weight 1, bias 2
        ```
    """
    return analyse(model, x)[1]


def degree_arrays(params: PyTree, degrees: PyTree[int]) -> PyTree:
    """The degrees as arrays shaped and typed like the parameters they belong to."""
    return jtu.tree_map(lambda p, d: jnp.full_like(p, d), params, degrees)


@eqx.filter_jit
def _residual(params, static, direction, L, x: Array) -> Array:
    def one(xi):
        out, tangent = jax.jvp(lambda p: merge(p, static)(xi), (params,), (direction,))
        return tangent - L * out

    return jax.vmap(one)(x)


def euler_residual(
    model: eqx.Module, x: Shaped[Array | np.ndarray, "n ..."]
) -> Float[Array, "n ..."]:
    """The residual of Euler's identity for a positively homogeneous network, per example.

    Computes Σ_i d_i θ_i ∂f/∂θ_i(x) − L f(x), with one `jax.jvp` per example in the direction
    d ⊙ θ (the parameters scaled by their degrees, [`nte.parameter_degrees`][]); L is
    [`nte.homogeneity_degree`][]. It is zero up to rounding for every network that function
    accepts (ReLU MLPs and CNNs, with or without biases); a network that is not positively
    homogeneous raises instead of returning a large residual.

    **Arguments:**

    - `model`: an `eqx.Module` whose `__call__` takes one example.
    - `x`: a batch of inputs `[N, ...]`.

    **Returns:**

    The residual, shaped like the batched output (`[N, out_size]` for a vector output).
    """
    L, degrees = analyse(model, x)
    x = check_input(model, x)
    params, static = split(model)
    direction = jtu.tree_map(lambda p, d: d * p, params, degrees)
    return _residual(params, static, direction, L, x)
