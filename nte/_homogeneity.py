"""Per-parameter homogeneity degrees, read off the network's jaxpr.

The network is traced once (`jax.make_jaxpr`) as a function of its parameter leaves, and every
value in the jaxpr gets an abstract *degree*: the d such that the value is multiplied by c^d
when every parameter leaf ℓ is multiplied by c^{d_ℓ} (c > 0). The input `x` and constants have
degree 0; a product adds degrees; sums, maxima and selections need equal degrees (or an exact
zero: `max(h, 0)` is ReLU); reshapes, sums over axes, pooling and convolutions keep or add
degrees. A parameter leaf has no degree until it meets the signal: multiplied into it, it is a
weight (degree 1); added to a value of degree l, it is a bias of degree l. Anything else that
touches a value of non-zero degree (`tanh`, `exp`, `x + 1`, a LayerNorm's `+ eps`) is not
positively homogeneous and raises one `ValueError` naming the sub-module it happens in.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np
from jax.extend import core as jcore

from ._split import merge, split

_MARK = "nte-path:"
_SHAPE_OPS = {
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "convert_element_type",
    "copy", "copy_p", "neg", "slice", "rev", "reduce_sum", "cumsum", "reduce_precision",
    "reduce_window_sum", "stop_gradient", "dynamic_slice", "gather", "optimization_barrier",
}  # fmt: skip
_POSITIVE_OPS = {
    "abs", "reduce_max", "reduce_min", "reduce_window_max", "reduce_window_min", "cummax",
    "cummin",
}  # fmt: skip
_INVARIANT_OPS = {"sign", "argmax", "argmin", "is_finite"}
_PRODUCTS = {"mul", "dot_general", "conv_general_dilated", "div"}
_SUMS = {"add", "sub", "add_any", "max", "min", "concatenate", "pad", "clamp"}
_SUMS |= {"dynamic_update_slice"}
_COMPARISONS = {"eq", "ne", "ge", "gt", "le", "lt"}
_CONTROL_FLOW = {"scan", "while", "cond"}
_POWERS = {"integer_pow": None, "square": 2.0, "sqrt": 0.5, "rsqrt": -0.5}
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "remat2": "jaxpr"}
_CALLS |= {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "checkpoint": "jaxpr"}


@dataclasses.dataclass(frozen=True)
class _Value:
    degree: int | None = 0  # None: a view of the parameter leaf `leaf`, degree not yet known
    leaf: int | None = None
    known: Any = None  # the concrete value of a parameter-independent constant, if known

    @property
    def zero(self) -> bool:
        return self.known is not None and not np.any(self.known)


class _Analysis:
    """The state of one degree analysis: leaf degrees found so far, and error reporting."""

    def __init__(self, leaf_paths: Sequence[str]):
        self.leaf_paths = list(leaf_paths)
        self.degrees: dict[int, int] = {}

    def read(self, value: _Value) -> _Value:
        if value.degree is None and value.leaf in self.degrees:
            return _Value(self.degrees[value.leaf])
        return value

    def fail(self, scope: "_Scope", what: str):
        raise ValueError(
            f"`model` is not positively homogeneous in its parameters: in {scope.text}, {what}. "
            "Between weight layers only linear maps, convolutions, pooling, reshapes and "
            "positively homogeneous activations (ReLU, leaky ReLU, identity) are allowed."
        )

    def assign(self, value: _Value, degree: int, scope: "_Scope", prim: str) -> None:
        if degree < 1:
            path = self.leaf_paths[value.leaf]
            self.fail(
                scope,
                f"the parameter `model{path}` enters `{prim}` with a value of degree {degree} "
                "(it does not scale with the weights before it), so f is not homogeneous in it",
            )
        self.degrees[value.leaf] = degree


def _free_paths(analysis: _Analysis, values: Sequence[_Value]) -> str:
    return ", ".join(f"`model{analysis.leaf_paths[v.leaf]}`" for v in values if v.degree is None)


def _sum_rule(analysis, values, scope, prim) -> int:
    """Values combined additively must share one degree; exact zeros fit any degree."""
    degrees = {v.degree for v in values if v.degree is not None and not v.zero}
    if len(degrees) > 1:
        parts = sorted(degrees)
        if 0 in degrees and any(v.known is not None and not v.zero for v in values):
            what = f"`{prim}` combines a value of degree {max(parts)} with a non-zero constant"
        else:
            what = f"`{prim}` combines values of different degrees {parts}"
        analysis.fail(scope, what)
    degree = degrees.pop() if degrees else 1  # free leaves combined among themselves: weights
    for v in values:
        if v.degree is None:
            analysis.assign(v, degree, scope, prim)
    return degree


def _weights(analysis, values, scope, prim) -> list[int]:
    """Free parameter leaves that multiply (or are pooled, or take an |·|) are weights."""
    for v in values:
        if v.degree is None:
            analysis.assign(v, 1, scope, prim)
    return [analysis.read(v).degree for v in values]


def _rule(analysis, eqn, values, scope) -> list[_Value]:
    """The degrees of the outputs of one first-order equation."""
    prim = eqn.primitive.name
    if prim in _SHAPE_OPS:
        if any(v.degree != 0 for v in values[1:]):
            analysis.fail(scope, f"`{prim}` is indexed by a value that scales with the weights")
        return [values[0] if values[0].degree is None else _Value(values[0].degree)]
    if prim == "select_n":
        pred, cases = values[0], values[1:]
        if pred.degree != 0:
            analysis.fail(scope, "`select_n` is predicated on a value that depends on parameters")
        if (
            pred.known is not None
            and np.size(pred.known)
            and np.all(pred.known == pred.known.flat[0])
        ):
            return [analysis.read(cases[int(pred.known.flat[0])])]
        return [_Value(_sum_rule(analysis, cases, scope, prim))]
    if prim in _SUMS:
        return [_Value(_sum_rule(analysis, values, scope, prim))]
    if prim in _COMPARISONS:
        _sum_rule(analysis, values, scope, prim)
        return [_Value(0)]
    if prim in _PRODUCTS:
        a, b = _weights(analysis, values, scope, prim)
        return [_Value(a - b if prim == "div" else a + b)]
    if prim in _POSITIVE_OPS:
        return [_Value(d) for d in _weights(analysis, values, scope, prim)]
    if prim in _POWERS and values[0].degree is not None:
        power = _POWERS[prim] if _POWERS[prim] is not None else eqn.params["y"]
        degree = values[0].degree * power
        if degree != int(degree):
            analysis.fail(scope, f"`{prim}` of a value of odd degree {values[0].degree}")
        return [_Value(int(degree))]
    if prim in _INVARIANT_OPS and all(v.degree is not None for v in values):
        return [_Value(0) for _ in eqn.outvars]
    if prim in _CONTROL_FLOW and any(v.degree != 0 for v in values):
        raise ValueError(
            f"`model`: the degree analysis does not follow `{prim}` (control flow) in "
            f"{scope.text}, so the homogeneity degrees cannot be found. Write the network "
            "without it (e.g. `eqx.nn.MLP(..., scan=False)`, the default)."
        )
    if any(v.degree is None for v in values):
        what = f"the parameter {_free_paths(analysis, values)} enters `{prim}`"
        analysis.fail(scope, what + " before it is multiplied into, or added to, the signal")
    if any(v.degree != 0 for v in values):
        degree = max((v.degree for v in values if v.degree), key=abs)
        analysis.fail(scope, f"`{prim}` is applied to a value of degree {degree} in the parameters")
    return [_Value(0) for _ in eqn.outvars]


def _constant(eqn, values) -> list[_Value] | None:
    """Evaluate an equation whose inputs are all known constants (small arrays only)."""
    if any(v.known is None or np.size(v.known) > 65536 for v in values):
        return None
    if any(True for _ in jcore.jaxprs_in_params(eqn.params)):
        return None
    try:
        out = eqn.primitive.bind(*(v.known for v in values), **eqn.params)
    except Exception:  # not evaluable eagerly: the value stays unknown (degree 0)
        return None
    outs = out if eqn.primitive.multiple_results else [out]
    return [_Value(0, known=np.asarray(o)) for o in outs]


@dataclasses.dataclass(frozen=True)
class _Scope:
    text: str = "`model` itself (outside its sub-modules)"
    labeled: bool = False  # from `label_submodules` (a path in the model), not a plain name


def _scope(eqn, outer: _Scope) -> _Scope:
    """Where an equation happens: the innermost labelled sub-module, else a named scope."""
    names = [getattr(s, "name", "") for s in getattr(eqn.source_info.name_stack, "stack", ())]
    marked = [n[len(_MARK) :] for n in names if n.startswith(_MARK)]
    if marked:
        return _Scope(f"`model{marked[-1]}`", True)
    if outer.labeled or not names:
        return outer
    return _Scope(f"the named scope `{'/'.join(names)}`")


def _run(analysis, jaxpr, consts, values, scope: _Scope) -> list[_Value]:
    env: dict = {}

    def read(var):
        if isinstance(var, jcore.Literal):
            return _Value(0, known=np.asarray(var.val))
        return analysis.read(env[var])

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, values))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        here = _scope(eqn, scope)
        outs = _constant(eqn, ins)
        if outs is None and eqn.primitive.name in _CALLS:
            sub = eqn.params[_CALLS[eqn.primitive.name]]
            inner, sub_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, [])
            sub_consts = [_Value(0, known=np.asarray(c)) for c in sub_consts]
            outs = _run(analysis, inner, sub_consts, ins, here)
        elif outs is None:
            outs = _rule(analysis, eqn, ins, here)
        for var, out in zip(eqn.outvars, outs):
            if not isinstance(var, jcore.DropVar):
                env[var] = out
    return [read(v) for v in jaxpr.outvars]


class _Scoped(eqx.Module):
    """A sub-module (or a function field) called inside a named scope that carries its path."""

    inner: Callable
    path: str = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        with jax.named_scope(_MARK + self.path):
            return self.inner(*args, **kwargs)

    def __getattr__(self, name):  # parents may read attributes of their children
        if name in ("inner", "path") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _is_callable_child(node) -> bool:
    if not callable(node) or eqx.is_array(node) or isinstance(node, type):
        return False
    # `lax.max`/`lax.add` as pooling operators are recognised by identity: leave them alone
    return not getattr(node, "__module__", "").startswith("jax._src.lax")


def label_submodules(node, path: str = ""):
    """`node` with every callable descendant (module or function field) wrapped in `_Scoped`."""

    def wrap(key_path, child):
        if not key_path or not _is_callable_child(child):
            return child
        sub = path + jtu.keystr(key_path)
        return _Scoped(label_submodules(child, sub), sub)

    return jtu.tree_map_with_path(
        wrap, node, is_leaf=lambda child: child is not node and _is_callable_child(child)
    )


def _analyse(jaxpr, leaf_paths: Sequence[str]) -> tuple[int, list[int]]:
    analysis = _Analysis(leaf_paths)
    n = len(leaf_paths)
    ins = [_Value(None, leaf=i) for i in range(n)] + [_Value(0)]
    consts = [_Value(0, known=np.asarray(c)) for c in jaxpr.consts]
    outs = _run(analysis, jaxpr.jaxpr, consts, ins, _Scope())
    degrees = {v.degree for v in outs if not v.zero}
    if len(degrees) != 1 or None in degrees or min(degrees) < 1:
        shown = sorted(d for d in degrees if d is not None)
        what = f"the outputs have degrees {shown} (one common degree >= 1 is needed)"
        analysis.fail(_Scope(), what)
    return degrees.pop(), [analysis.degrees.get(i, 1) for i in range(n)]


def _make_jaxpr(model, example):
    params, static = split(model)
    leaves, treedef = jtu.tree_flatten(params)

    def fn(leaves, x):
        return merge(jtu.tree_unflatten(treedef, leaves), static)(x)

    return jax.make_jaxpr(fn)(leaves, example), len(leaves)


def _named_failure(model, example, leaf_paths) -> ValueError | None:
    """The same analysis on the model with its sub-modules labelled by path, for the error."""
    try:
        jaxpr, n = _make_jaxpr(label_submodules(model), example)
        if n == len(leaf_paths):
            _analyse(jaxpr, leaf_paths)
    except ValueError as error:
        return error
    except Exception:  # a module that does not survive relabelling: keep the plain error
        return None
    return None


def trace_degrees(
    model: eqx.Module, example: jax.ShapeDtypeStruct, leaf_paths: Sequence[str]
) -> tuple[int, list[int]]:
    """The degree L of the output and the degree of every parameter leaf (flatten order).

    The analysis runs on the model as it is. Only when it fails is the model traced again with
    each sub-module inside a named scope carrying its path, so the error can name the first
    sub-module (e.g. `model.layers[2]`) where it stops being positively homogeneous.
    Parameter leaves the output does not depend on get degree 1.
    """
    jaxpr, _ = _make_jaxpr(model, example)
    try:
        return _analyse(jaxpr, leaf_paths)
    except ValueError as error:
        raise _named_failure(model, example, leaf_paths) or error from None
