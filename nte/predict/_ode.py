"""NTK dynamics of gradient descent (optionally with momentum) on an arbitrary loss.

The function-space ODE of the linearized network is integrated with diffrax:

    no momentum:    df/dt  = −η Θ ∇_f L(f),            df*/dt = −η Θ_* ∇_f L(f)
    heavy ball:     d²f/dτ² = −γ df/dτ − Θ ∇_f L(f),   (same for f* with Θ_*),  f'(0) = 0,

with `t` counted in gradient steps, `τ = t·√η` and friction `γ = (1 − m)/√η`: the continuous
limit of `f_{k+1} = f_k − η Θ ∇L(f_k) + m (f_k − f_{k−1})` (heavy ball, momentum `m`) when
`η → 0` with `(1 − m)/√η` fixed.
"""

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar

from .._errors import check_callable, check_positive
from ._kernel import (
    Layout,
    check_kernel,
    check_learning_rate,
    check_like,
    check_targets,
    check_test,
    check_times,
)
from ._mse import Kernel, Predictor, Targets, TestKernel, Times


def _kernel_apply(ntk, grad, layout: Layout):
    """`Θ ∇L` for a traced (`[m, n]`) or full (`[m, n, k, k]`) kernel."""
    if layout.full:
        return jnp.einsum("mnab,nb->ma", ntk, jnp.reshape(grad, (layout.n, layout.k))).reshape(
            (ntk.shape[0],) + jnp.shape(grad)[1:]
        )
    return ntk @ grad


def _check_momentum(momentum) -> None:
    if momentum is None:
        return
    check_positive(momentum, "momentum", allow_zero=True)
    if isinstance(momentum, int | float) and momentum >= 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")


def _solve(forces, ts, y0, ntk_test, *, momentum, learning_rate, solver, rtol, atol, max_steps):
    """Integrate the (plain or heavy-ball) function-space ODE driven by `forces` and read it
    at the step times `ts`."""
    if momentum is None:
        scale, field = learning_rate, lambda t, y, args: _scale(forces(y[0], args), -1.0)
    else:
        scale = jnp.sqrt(learning_rate)
        field = _heavy_ball_field(forces, (1.0 - momentum) / scale)
        y0 = (y0, jax.tree_util.tree_map(jnp.zeros_like, y0))
    taus = ts * (learning_rate if momentum is None else scale)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        t0=0.0,
        t1=jnp.max(taus),
        dt0=None,
        y0=y0,
        args=ntk_test,
        saveat=diffrax.SaveAt(ts=taus),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return sol.ys if momentum is None else sol.ys[0]


def gradient_descent(
    loss_fn: Callable[[Array, Array], Scalar],
    ntk_train_train: Kernel,
    y_train: Targets,
    *,
    learning_rate: float | int | Float[Array, ""] = 1.0,
    momentum: float | int | Float[Array, ""] | None = None,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_steps: int = 65536,
) -> Predictor:
    """Outputs of a linearized network trained by gradient descent on any loss, by ODE solve.

    Integrates the function-space dynamics (train outputs `f`, test outputs `f*`)

        df/dt  = −η Θ ∇_f L(f, y),    df*/dt = −η Θ_* ∇_f L(f, y)

    or, with `momentum = m`, the heavy-ball limit `d²f/dτ² = −γ df/dτ − Θ ∇_f L` with
    `τ = t·√η`, `γ = (1 − m)/√η` and `df/dτ(0) = 0` (valid for small `η` with `1 − m ~ √η`).
    Time `t` counts gradient steps in both cases. With `loss_fn = ½ Σ (f − y)²` and no momentum
    this is [`nte.predict.gradient_descent_mse`][].

    Solver: `diffrax.Tsit5()` (explicit 5(4) Runge-Kutta) by default, with a
    `diffrax.PIDController(rtol, atol)` adaptive step size; pass an implicit solver such as
    `diffrax.Kvaerno5()` for stiff (badly conditioned) kernels.

    **Arguments:**

    - `loss_fn`: `loss_fn(fx_train, y_train) -> scalar`, the *total* loss on the training set
      (e.g. `0.5 * jnp.sum((f - y) ** 2)` or a summed cross-entropy); differentiated in `f`.
    - `ntk_train_train`: `[n, n]` (traced: applied identically to every output) or `[n, n, k, k]`.
    - `y_train`: targets `[n]` or `[n, k]`.
    - `learning_rate`: `η > 0`.
    - `momentum`: `None` (plain gradient descent) or `m ∈ [0, 1)`.
    - `solver`, `rtol`, `atol`, `max_steps`: passed to `diffrax.diffeqsolve`.

    **Returns:**

    `predict(t, fx_train_0, fx_test_0=None, ntk_test_train=None) -> (fx_train_t, fx_test_t)`
    with finite `t ≥ 0` (scalar or array); jittable.
    """
    check_callable(loss_fn, "loss_fn")
    layout = check_kernel(ntk_train_train)
    check_targets(y_train, layout)
    check_learning_rate(learning_rate)
    _check_momentum(momentum)
    axes = (1, 0, 3, 2) if layout.full else (1, 0)
    ntk = 0.5 * (ntk_train_train + jnp.transpose(ntk_train_train, axes))
    grad_fn = jax.grad(lambda f: loss_fn(f, y_train))
    solver = diffrax.Tsit5() if solver is None else solver

    def forces(f, ntk_test):
        g = grad_fn(f)
        test = None if ntk_test is None else _kernel_apply(ntk_test, g, layout)
        return _kernel_apply(ntk, g, layout), test

    options = dict(
        momentum=momentum, learning_rate=learning_rate, solver=solver, rtol=rtol, atol=atol,
        max_steps=max_steps,
    )  # fmt: skip
    solve = lambda ts, y0, ntk_test: _solve(forces, ts, y0, ntk_test, **options)

    def predict(
        t: Times,
        fx_train_0: Targets,
        fx_test_0: Float[Array, "_m ..."] | None = None,
        ntk_test_train: TestKernel | None = None,
    ) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
        check_times(t, allow_inf=False)
        check_like(fx_train_0, y_train, "fx_train_0")
        fx_test_0 = check_test(fx_test_0, ntk_test_train, y_train, layout)
        t = jnp.asarray(t, dtype=jnp.result_type(fx_train_0, float))
        flat = t.reshape(-1)
        order = jnp.argsort(flat)
        ys = solve(flat[order], (fx_train_0, fx_test_0), ntk_test_train)
        ys = jax.tree_util.tree_map(lambda a: a[jnp.argsort(order)], ys)
        return jax.tree_util.tree_map(lambda a: a.reshape(t.shape + a.shape[1:]), ys)

    return predict


def _scale(tree, c):
    return jax.tree_util.tree_map(lambda a: c * a, tree)


def _heavy_ball_field(forces, gamma):
    def field(tau, state, ntk_test):
        pos, vel = state
        acc = forces(pos[0], ntk_test)
        acc = jax.tree_util.tree_map(lambda a, v: -a - gamma * v, acc, vel)
        return vel, acc

    return field
