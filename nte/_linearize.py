"""Linearization and Taylor expansion of a model around a seed point θ0."""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from ._errors import check_module
from ._function import check_same_params, stop_gradient_arrays, tree_sub
from ._split import merge, split


class AbstractExpansion(eqx.Module):
    """A model expanded around a seed point θ0: its parameters θ are trainable, θ0 is frozen.

    Fields: `params` (θ, the trainable parameters, a tree shaped like
    `nte.split(model, filter_spec)[0]`), `params0` (θ0) and `static` (everything else of the
    seed model). `params0` and every array in `static` pass through `jax.lax.stop_gradient` in
    `__call__`, so their gradients are exactly zero: training the whole module with optax
    (`nte.split(expansion)` or `eqx.partition(expansion, eqx.is_inexact_array)`) only moves θ
    (an optimizer that changes parameters without a gradient, e.g. weight decay, would still
    move them; mask it with `optax.masked` or train `expansion.params` alone).
    """

    params: PyTree
    params0: PyTree
    static: PyTree

    @property
    def model(self) -> Any:
        """The original (non-expanded) model at the current parameters θ."""
        return merge(self.params, self.static)

    @property
    def model0(self) -> Any:
        """The original model at the seed parameters θ0."""
        return merge(self.params0, self.static)

    def _frozen(self) -> tuple[PyTree, PyTree, PyTree]:
        params0 = stop_gradient_arrays(self.params0)
        static = stop_gradient_arrays(self.static)
        return params0, static, tree_sub(self.params, params0)

    @abc.abstractmethod
    def __call__(self, x: Any) -> Any:
        raise NotImplementedError


class Linearized(AbstractExpansion):
    """The first-order Taylor expansion f(θ0, x) + J(θ0, x)(θ − θ0); see [`nte.linearize`][]."""

    def __call__(self, x: Any) -> Any:
        params0, static, delta = self._frozen()
        out0, dout = jax.jvp(lambda p: merge(p, static)(x), (params0,), (delta,))
        return jtu.tree_map(jnp.add, out0, dout)


class TaylorExpansion(AbstractExpansion):
    """The degree-k Taylor expansion Σ_{j≤k} (1/j!) dʲ/dtʲ f(θ0 + tΔ, x)|_{t=0}, Δ = θ − θ0.

    See [`nte.taylor_expand`][].
    """

    degree: int = eqx.field(static=True)

    def __call__(self, x: Any) -> Any:
        params0, static, delta = self._frozen()

        def along_line(t):
            p = jtu.tree_map(lambda a, d: a + t.astype(d.dtype) * d, params0, delta)
            return merge(p, static)(x)

        dtype = jtu.tree_leaves(self.params)[0].dtype if jtu.tree_leaves(self.params) else float
        terms = _derivatives(along_line, jnp.zeros((), dtype), self.degree)
        out = terms[0]
        for j, term in enumerate(terms[1:], start=1):
            out = jtu.tree_map(lambda o, d, j=j: o + d / math.factorial(j), out, term)
        return out


def _derivatives(g, t0: Array, degree: int) -> tuple:
    """`(g(t0), g'(t0), ..., g⁽ᵏ⁾(t0))` of a function of a scalar, by nested `jax.jvp`."""
    fn = lambda t: (g(t),)
    for _ in range(degree):
        fn = _one_more(fn)
    return fn(t0)


def _one_more(fn):
    def next_fn(t):
        primals, tangents = jax.jvp(fn, (t,), (jnp.ones_like(t),))
        return (*primals, tangents[-1])

    return next_fn


def _split_pair(model: Any, model0: Any, filter_spec: Any) -> tuple[PyTree, PyTree, PyTree]:
    check_module(model, "model")
    check_module(model0, "model0")
    params, _ = split(model, filter_spec)
    params0, static = split(model0, filter_spec)
    check_same_params(params, params0, "model0")
    return params, params0, static


def linearize(
    model: eqx.Module, model0: eqx.Module, *, filter_spec: Any = eqx.is_inexact_array
) -> Linearized:
    """Linearize a model around the parameters of `model0`.

    Returns an Equinox module whose call on ONE example is

        f_lin(x; θ) = f(x; θ0) + J(x; θ0) (θ − θ0),

    computed with one `jax.jvp` (the Jacobian is never formed), where θ are the parameters of
    `model` and θ0 those of `model0`. It is itself a model: vmap it, split it, train it with
    optax. θ is the trainable field `params`; θ0 (`params0`) and the rest of `model0`
    (`static`) are frozen by `jax.lax.stop_gradient`, so their gradients are exactly zero.

    **Arguments:**

    - `model`: an `eqx.Module`; its parameters are the initial θ.
    - `model0`: an `eqx.Module` of the same structure; its parameters are the seed θ0, and its
      non-parameter parts (activations, static fields) define the function.
    - `filter_spec`: which leaves are parameters (see [`nte.split`][]); the others are taken
      from `model0` and frozen.

    **Returns:**

    A [`nte.Linearized`][] module. `linearize(model0, model0)(x) == model0(x)`.

    !!! example

        ```python
        lin = nte.linearize(model, model0)
        logits = jax.vmap(lin)(x)
        params, static = nte.split(lin)   # train `params` with optax
        ```
    """
    params, params0, static = _split_pair(model, model0, filter_spec)
    return Linearized(params=params, params0=params0, static=static)


def taylor_expand(
    model: eqx.Module,
    model0: eqx.Module,
    degree: int,
    *,
    filter_spec: Any = eqx.is_inexact_array,
) -> TaylorExpansion:
    """The degree-`degree` Taylor expansion of a model in its parameters around `model0`.

    With Δ = θ − θ0 the call on ONE example is

        f_k(x; θ) = Σ_{j=0..k} (1/j!) dʲ/dtʲ f(x; θ0 + tΔ) |_{t=0},

    computed by `k` nested `jax.jvp`s along the line θ0 + tΔ (cost grows like 2ᵏ forward
    passes; meant for small degrees). `degree=1` is [`nte.linearize`][]. Parameters are
    trainable and θ0 is frozen exactly as for [`nte.linearize`][].

    **Arguments:**

    - `model`, `model0`: `eqx.Module`s of the same structure (θ and θ0).
    - `degree`: the order `k >= 1` of the expansion.
    - `filter_spec`: which leaves are parameters (see [`nte.split`][]).

    **Returns:**

    A [`nte.TaylorExpansion`][] module.
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
        raise ValueError(f"`degree` must be an int >= 1, got {degree!r}.")
    params, params0, static = _split_pair(model, model0, filter_spec)
    return TaylorExpansion(params=params, params0=params0, static=static, degree=degree)
