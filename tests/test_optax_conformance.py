"""Optax conformance: the same checks over every optax transformation the package exports.

In the spirit of optax's own `contrib/_common_test.py`: every transformation keeps the dtype
(float32 and float64), never retraces across steps, works under `optax.chain`,
`optax.inject_hyperparams` (for each numeric hyperparameter: a new value changes the result as
a freshly built transformation with that value would, without retracing) and `optax.masked`
(the masked-out leaves pass through untouched, the others are updated as by the
transformation on those leaves alone).

To add or adapt a transformation, edit `CASES`: `make(**hyper)` builds it from its numeric
hyperparameters (keywords, as `optax.inject_hyperparams` passes them; `make` needs an explicit
signature, e.g. a `functools.partial` that fixes the non-numeric options; callables that are
not schedules go in `static_args`), `alternatives` gives a
second value for each one checked under `inject_hyperparams`, `per_example` says whether it
takes per-example gradients (a leading batch axis on every leaf).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
import pytest
from helpers import assert_trees_close, assert_trees_equal, random_like, trees_equal

import nte

BATCH = 3


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[..., optax.GradientTransformation]
    hyper: dict[str, Any]
    alternatives: dict[str, Any]
    per_example: bool = False
    static_args: tuple[str, ...] = ()
    marks: tuple = ()

    def injected(self, **hyper):
        return optax.inject_hyperparams(self.make, static_args=self.static_args)(**hyper)

    def param(self):
        return pytest.param(self, id=self.name, marks=self.marks)


def _sgd_keep_signs():
    return optax.chain(optax.sgd(0.5), nte.pruning.keep_signs())


def _shrunk(params):
    return jtu.tree_map(lambda x: 0.9 * x, params)


CASES = [
    Case(
        "nte",
        nte.nte,
        dict(inv_temperature=0.05, eta=1.0, max_delta=0.8, prune_below=0.01),
        dict(inv_temperature=0.02, eta=0.5, max_delta=0.3, prune_below=0.04),
        per_example=True,
    ),
    Case(
        "scale_by_nte",
        functools.partial(nte.scale_by_nte, renormalize=False),
        dict(inv_temperature=0.05, eta=1.0),
        dict(inv_temperature=0.02, eta=0.5),
        per_example=True,
    ),
    Case(
        "scale_by_scaled_sgd",
        functools.partial(nte.scale_by_scaled_sgd, renormalize=True),
        dict(learning_rate=0.05, max_delta=0.8),
        dict(learning_rate=0.02, max_delta=0.3),
        per_example=True,
    ),
    Case(
        "prune_only",
        nte.pruning.prune_only,
        dict(rate=0.1, momentum=0.5, degree=3.0),
        dict(rate=0.3, momentum=0.9, degree=1.0),
    ),
    Case(
        "prune_only_init",
        functools.partial(nte.pruning.prune_only, variant="init", center=_shrunk),
        dict(rate=0.1, momentum=0.5),
        dict(rate=0.3, momentum=0.9),
        static_args=("center",),
    ),
    Case(
        "magnitude",
        functools.partial(nte.pruning.magnitude, optax.sgd(0.1, momentum=0.9), end_step=4),
        dict(target_sparsity=0.5, initial_sparsity=0.2),
        dict(target_sparsity=0.7, initial_sparsity=0.4),
    ),
    Case("keep_signs", _sgd_keep_signs, {}, {}),
]


def _params(key, dtype):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w": jax.random.normal(k1, (4, 3), dtype),
        "v": jax.random.normal(k2, (5,), dtype),
        "b": jax.random.normal(k3, (2,), dtype),
    }


def _grads(case, key, params):
    return random_like(key, params, batch=BATCH if case.per_example else None)


def _run(opt, params, keys, case):
    """`len(keys)` steps; returns the updates of every step and the final state."""
    state = opt.init(params)
    history = []
    for key in keys:
        updates, state = opt.update(_grads(case, key, params), state, params)
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history, state, params


def _float_leaves(tree):
    return [x for x in jtu.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


# ---------------------------------------------------------------- dtype


def _check_dtype(case, key, dtype):
    params = _params(key, dtype)
    opt = case.make(**case.hyper)
    keys = jax.random.split(jax.random.fold_in(key, 1), 2)
    history, state, new = _run(opt, params, keys, case)
    for updates in history:
        assert all(u.dtype == dtype for u in jtu.tree_leaves(updates))
    assert all(p.dtype == dtype for p in jtu.tree_leaves(new))
    assert all(x.dtype == dtype for x in _float_leaves(state))
    assert not trees_equal(new, params)  # the check is not vacuous: something moved


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_keeps_float32(case, getkey):
    _check_dtype(case, getkey(), jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_keeps_float64(case, getkey, x64):
    _check_dtype(case, getkey(), jnp.float64)


# ---------------------------------------------------------------- no retrace


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_no_retrace_across_steps(case, getkey):
    params = _params(getkey(), jnp.float32)
    opt = case.make(**case.hyper)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(4):
        params, state = step(_grads(case, getkey(), params), state, params)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jtu.tree_leaves(params))


# ---------------------------------------------------------------- optax.chain


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_under_chain_equals_alone(case, getkey):
    params = _params(getkey(), jnp.float32)
    keys = jax.random.split(getkey(), 3)
    alone, _, _ = _run(case.make(**case.hyper), params, keys, case)
    chained = optax.chain(optax.scale(1.0), case.make(**case.hyper), optax.scale(1.0))
    history, _, _ = _run(chained, params, keys, case)
    for a, b in zip(history, alone):
        assert_trees_close(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- optax.inject_hyperparams


def _hyper_params():
    return [
        pytest.param(c, name, id=f"{c.name}-{name}", marks=c.marks)
        for c in CASES
        for name in c.alternatives
    ]


def _outputs(history, state, params):
    injected = isinstance(state, optax.InjectStatefulHyperparamsState)
    inner = state.inner_state if injected else state
    return history, inner, params


@pytest.mark.parametrize("case, name", _hyper_params())
def test_inject_hyperparams_changes_the_update_without_retrace(case, name, getkey):
    params = _params(getkey(), jnp.float32)
    keys = jax.random.split(getkey(), 2)
    opt = case.injected(**case.hyper)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def update(grads, state, params):
        return opt.update(grads, state, params)

    def run(value):
        state = opt.init(params)
        state.hyperparams[name] = jnp.asarray(value, state.hyperparams[name].dtype)
        p, history = params, []
        for key in keys:
            updates, state = update(_grads(case, key, p), state, p)
            p = optax.apply_updates(p, updates)
            history.append(updates)
        return _outputs(history, state, p)

    original = run(case.hyper[name])
    changed = run(case.alternatives[name])  # same jitted function: no second trace
    fresh = _outputs(
        *_run(case.make(**(case.hyper | {name: case.alternatives[name]})), params, keys, case)
    )
    assert_trees_close(changed, fresh, rtol=1e-5, atol=1e-6)
    assert not trees_equal(changed, original)


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_inject_hyperparams_initial_values_equal_plain(case, getkey):
    params = _params(getkey(), jnp.float32)
    keys = jax.random.split(getkey(), 2)
    injected = _outputs(*_run(case.injected(**case.hyper), params, keys, case))
    plain = _outputs(*_run(case.make(**case.hyper), params, keys, case))
    assert_trees_close(injected, plain, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- optax.masked


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_masked_leaves_untouched(case, getkey):
    params = _params(getkey(), jnp.float32)
    mask = {"w": True, "v": True, "b": False}
    inner = {k: v for k, v in params.items() if mask[k]}
    opt = optax.masked(case.make(**case.hyper), mask)
    reference = case.make(**case.hyper)
    state, ref_state = opt.init(params), reference.init(inner)
    for _ in range(3):
        grads = _grads(case, getkey(), params)
        updates, state = opt.update(grads, state, params)
        ref_updates, ref_state = reference.update({k: grads[k] for k in inner}, ref_state, inner)
        assert_trees_equal(updates["b"], grads["b"])  # passed through untouched
        assert_trees_close({k: updates[k] for k in inner}, ref_updates, rtol=1e-6, atol=1e-7)
        params = {k: params[k] + updates[k] if mask[k] else params[k] for k in params}
        inner = optax.apply_updates(inner, ref_updates)
