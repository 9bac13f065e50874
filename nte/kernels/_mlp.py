"""The infinite-width NNGP and NTK of an `nte.nn.MLP`, by the layer recursion.

Per output unit, with `σ_w,l` the weight gain and `σ_b` the bias scale of layer `l`, `d` the
input size and `T`, `Ṫ` the dual activations of `._dual`:

    K¹ = σ_w,1² ⟨x, x'⟩/d + σ_b²,          K^{l+1} = σ_w,l+1² T(K^l) + σ_b²
    Θ¹ = K¹,                               Θ^{l+1} = K^{l+1} + σ_w,l+1² Ṫ(K^l) ⊙ Θ^l

The rows of `x1` are processed in blocks (`jax.lax.map`), so the memory is
`O(block · n2)` besides the `[n1, n2]` result.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Shaped

from ..nn._mlp import ACTIVATIONS, MLP
from ._dual import Activation, dual, recognise

_BLOCK_ENTRIES = 2**21  # a block of rows holds about this many kernel entries per temporary


class Spec(NamedTuple):
    """What the kernels of an MLP depend on (hashable: a static argument of the jitted core)."""

    activation: Activation
    gains: tuple[float, ...]  # σ_w of every layer, readout last
    bias_var: float  # variance of the bias at initialization (enters K)
    bias_grad: float  # (∂z/∂b)², the bias term of the NTK
    in_size: int


def spec_of(model: eqx.Module, *, ntk: bool) -> Spec:
    """Validate `model` for the analytic kernels and read off its `Spec`."""
    if not isinstance(model, MLP):
        raise TypeError(
            "`model` must be an nte.nn.MLP (the architecture whose infinite-width kernels are "
            f"known), got {type(model).__name__}."
        )
    activation = recognise(model.activation)
    if activation is None and model.depth > 0:
        name = getattr(model.activation, "__name__", repr(model.activation))
        raise ValueError(
            f"`model` has activation {name!r}, which has no closed-form kernel; build the MLP "
            f"with one of the activations {tuple(ACTIVATIONS)} (by name)."
        )
    if ntk and model.parameterization != "ntk":
        raise ValueError(
            f"`model` uses parameterization={model.parameterization!r}, whose NTK grows "
            "linearly with width (no infinite-width limit); build it with "
            "parameterization='ntk' (`nte.kernels.nngp` works for both)."
        )
    var = model.bias_std**2 if model.use_bias else 0.0
    return Spec(
        activation=activation or Activation("identity"),  # depth 0: no activation is applied
        gains=tuple(float(g) for g in model.weight_gains),
        bias_var=0.0 if model.zero_bias else var,
        bias_grad=var if model.parameterization == "ntk" else 0.0,
        in_size=model.in_size,
    )


def check_inputs(spec: Spec, x1, x2) -> tuple[Array, Array | None]:
    """`x1` `[n1, ...]` and `x2` `[n2, ...]` as float matrices `[n, in_size]`."""
    x1 = _as_matrix(x1, "x1", spec.in_size)
    if x2 is None:
        return x1, None
    if np.ndim(x2) >= 1 and int(np.prod(np.shape(x2)[1:])) != x1.shape[1]:
        raise ValueError(
            f"`x2` has examples of shape {np.shape(x2)[1:]} ({int(np.prod(np.shape(x2)[1:]))} "
            f"features) but `x1` has {x1.shape[1]} features per example."
        )
    x2 = _as_matrix(x2, "x2", spec.in_size)
    dtype = jnp.result_type(x1, x2)
    return x1.astype(dtype), x2.astype(dtype)


def _as_matrix(x, name: str, in_size: int) -> Array:
    if not hasattr(x, "shape") or np.ndim(x) < 1 or np.shape(x)[0] < 1:
        raise ValueError(
            f"`{name}` must be an array [n, ...] of n >= 1 examples, got {type(x).__name__} "
            f"of shape {np.shape(x) if hasattr(x, 'shape') else None}."
        )
    features = int(np.prod(np.shape(x)[1:]))
    if features != in_size:
        raise ValueError(
            f"`{name}` has examples of shape {np.shape(x)[1:]} ({features} features) but the "
            f"model expects {in_size} (examples are flattened as `nte.nn.MLP` does)."
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return jnp.reshape(x, (x.shape[0], features))


def _diagonal(spec: Spec, x: Float[Array, "n d"]) -> Float[Array, "depth n"]:
    """`K^l(x, x)` for the `L` layers that feed an activation (θ = 0 exactly)."""
    q = spec.gains[0] ** 2 * jnp.sum(x * x, axis=1) / x.shape[1] + spec.bias_var
    out = []
    for gain in spec.gains[1:]:
        out.append(q)
        q = gain**2 * dual(spec.activation, q, q, q)[0] + spec.bias_var
    return jnp.stack(out) if out else jnp.zeros((0, x.shape[0]), x.dtype)


def _row(spec: Spec, want_ntk: bool, x: Array, q1: Array, x2: Array, q2: Array):
    """Kernel row(s) `K(x, x2)` (and `Θ(x, x2)`) for one example `x` with diagonal `q1`."""
    lin = spec.gains[0] ** 2 * (x2 @ x) / x.shape[0]
    k = lin + spec.bias_var
    theta = lin + spec.bias_grad
    for layer, gain in enumerate(spec.gains[1:]):
        t, tdot = dual(spec.activation, q1[layer], q2[layer], k)
        if want_ntk:
            theta = gain**2 * (t + tdot * theta) + spec.bias_grad
        k = gain**2 * t + spec.bias_var
    return theta if want_ntk else k


def _block_size(n1: int, n2: int) -> int:
    """Rows per block: about `_BLOCK_ENTRIES / n2`, preferably dividing `n1` (a remainder
    block makes `lax.map` concatenate, i.e. copy the whole result once more)."""
    target = int(max(1, min(n1, _BLOCK_ENTRIES // n2)))
    for block in range(target, max(1, (target + 1) // 2) - 1, -1):
        if n1 % block == 0:
            return block
    return target


@eqx.filter_jit
def kernel(spec: Spec, x1: Array, x2: Array | None, want_ntk: bool) -> Float[Array, "n1 n2"]:
    """The `[n1, n2]` NNGP (or NTK) of `spec`, tiled over blocks of rows of `x1`."""
    q1 = _diagonal(spec, x1)
    x2, q2 = (x1, q1) if x2 is None else (x2, _diagonal(spec, x2))
    block = _block_size(x1.shape[0], x2.shape[0])
    row = lambda args: _row(spec, want_ntk, args[0], args[1], x2, q2)
    return jax.lax.map(row, (x1, q1.T), batch_size=block)


def nngp(
    model: eqx.Module,
    x1: Shaped[Array | np.ndarray, "n1 ..."],
    x2: Shaped[Array | np.ndarray, "n2 ..."] | None = None,
) -> Float[Array, "n1 n2"]:
    r"""The infinite-width NNGP kernel of an `nte.nn.MLP`, per output unit.

    The covariance `K(x, x') = E[f_k(x) f_k(x')]` of any one output of the network over random
    initializations, in the limit of infinite width (Neal 1996, Lee et al. 2018). It is the
    same for both parameterizations (they define the same distribution at initialization).
    Computed by the layer recursion `K¹ = σ_w,1² ⟨x, x'⟩/d + σ_b²`,
    `K^{l+1} = σ_w,l+1² T(K^l) + σ_b²` with the closed-form dual activations `T` (arc-cosine
    kernels for ReLU and leaky ReLU, the erf kernel, identity, abs), see
    [maths: infinite-width kernels](../math.md#infinite-width-kernels). `σ_b² = 0` for a model
    with `use_bias=False` or `zero_bias=True`.

    Jittable (`eqx.filter_jit`), in the precision of the inputs (float64 under
    `jax_enable_x64`); the rows of `x1` are processed in blocks, so a 10,000 × 10,000 kernel
    needs little memory beyond its result.

    **Arguments:**

    - `model`: an [`nte.nn.MLP`][] (any depth, with or without bias) whose activation is one of
      `"relu"`, `"leaky_relu"` (also `functools.partial(jax.nn.leaky_relu,
      negative_slope=α)`), `"erf"`, `"abs"`, `"identity"`. Its parameter values are not used.
    - `x1`: inputs `[n1, ...]`, each example shaped as the model takes it (flattened to
      `in_size` features as `MLP.__call__` does).
    - `x2`: inputs `[n2, ...]` with the same number of features; `None` means `x1`.

    **Returns:**

    `K(x1, x2)` of shape `[n1, n2]`. Compare with [`nte.empirical_nngp`][]`/ out_size`.

    !!! example

        ```python
        model = nte.nn.MLP(784, 1, 2, 10, activation="relu", key=jax.random.key(0))
        k = nte.kernels.nngp(model, x_train)          # [n, n]
        k_test = nte.kernels.nngp(model, x_test, x_train)
        ```
    """
    spec = spec_of(model, ntk=False)
    x1, x2 = check_inputs(spec, x1, x2)
    return kernel(spec, x1, x2, False)


def ntk(
    model: eqx.Module,
    x1: Shaped[Array | np.ndarray, "n1 ..."],
    x2: Shaped[Array | np.ndarray, "n2 ..."] | None = None,
) -> Float[Array, "n1 n2"]:
    r"""The infinite-width neural tangent kernel of an `nte.nn.MLP`, per output unit.

    The limit `Θ(x, x') = lim ⟨∂f_k(x)/∂θ, ∂f_k(x')/∂θ⟩` of the empirical NTK of one output as
    the width grows (Jacot et al. 2018), by the recursion `Θ¹ = K¹`,
    `Θ^{l+1} = K^{l+1} + σ_w,l+1² Ṫ(K^l) ⊙ Θ^l` over the NNGP layers `K^l` of
    [`nte.kernels.nngp`][] and the derivative dual activations `Ṫ`, see
    [maths: infinite-width kernels](../math.md#infinite-width-kernels). It is the kernel of
    the neural tangent experts of an infinitely wide network: in that limit they do not move.

    Only defined for `parameterization="ntk"`: under the standard parameterization the NTK
    grows linearly with the width. With `zero_bias=True` the biases start at zero (no bias in
    the NNGP) but still contribute `σ_b²` per layer through their gradient.

    **Arguments:**

    - `model`: an [`nte.nn.MLP`][] with `parameterization="ntk"`; activations as for
      [`nte.kernels.nngp`][].
    - `x1`, `x2`: as for [`nte.kernels.nngp`][].

    **Returns:**

    `Θ(x1, x2)` of shape `[n1, n2]`: the limit of
    [`nte.empirical_ntk`][]`(model, x1, x2) / out_size` (which sums over the outputs).
    """
    spec = spec_of(model, ntk=True)
    x1, x2 = check_inputs(spec, x1, x2)
    return kernel(spec, x1, x2, True)
