"""Closed-form NTK dynamics of gradient descent on the squared error (see `nte.predict`)."""

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Real, Shaped

from .._errors import check_positive
from ._kernel import (
    Eigh,
    Layout,
    check_kernel,
    check_learning_rate,
    check_like,
    check_targets,
    check_test,
    check_times,
    eigh,
    is_concrete,
    over_times,
    spectral_apply,
    to_matrix,
    to_rows,
    to_test_matrix,
)

Kernel = Float[Array, "_n _n"] | Float[Array, "_n _n _k _k"]
TestKernel = Float[Array, "_m _n"] | Float[Array, "_m _n _k _k"]
Targets = Float[Array, "_n"] | Float[Array, "_n _k"]
Times = Real[Array, "*times"] | Real[np.ndarray, "*times"] | float | int
Predictor = Callable[..., tuple[Shaped[Array, "..."], Shaped[Array, "..."] | None]]


def _make_predictor(
    eig: Eigh, layout: Layout, y_train, decay, integral, *, time_name: str, check_t
) -> Predictor:
    """Build `predict(t, fx_train_0, fx_test_0, ntk_test_train)` from spectral coefficients.

    `decay(λ, t)` multiplies the train residual's eigen-components; `integral(λ, t)` gives the
    test update `−Θ_{*,train} V diag(integral) Vᵀ (f_0 − y)`. Null directions: decay 1, integral 0.
    """
    safe = jnp.where(eig.null, 1.0, eig.evals)

    def predict(
        t: Times,
        fx_train_0: Targets,
        fx_test_0: Float[Array, "_m ..."] | None = None,
        ntk_test_train: TestKernel | None = None,
    ) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
        check_t(t)
        check_like(fx_train_0, y_train, "fx_train_0")
        fx_test_0 = check_test(fx_test_0, ntk_test_train, y_train, layout)
        resid = to_rows(fx_train_0 - y_train, layout)
        test_mat = None if ntk_test_train is None else to_test_matrix(ntk_test_train, layout)

        def at(ti):
            d = jnp.where(eig.null, 1.0, decay(safe, ti))
            train = y_train + spectral_apply(eig, d, resid).reshape(jnp.shape(y_train))
            if test_mat is None:
                return train, None
            g = jnp.where(eig.null, 0.0, integral(safe, ti))
            step = test_mat @ spectral_apply(eig, g, resid)
            return train, fx_test_0 - step.reshape(jnp.shape(fx_test_0))

        return over_times(at, jnp.asarray(t, dtype=safe.dtype))

    predict.__doc__ = f"""Train (and test) outputs after training for `{time_name}`.

    **Arguments:**

    - `{time_name}`: a scalar or an array of them (results are stacked on leading axes).
    - `fx_train_0`: the network's train outputs at initialization, shaped like `y_train`.
    - `fx_test_0`: its outputs at the test points (default zeros when `ntk_test_train` is given).
    - `ntk_test_train`: the kernel between test and train points, `[m, n]` or `[m, n, k, k]`.

    **Returns:**

    `(fx_train_t, fx_test_t)`; `fx_test_t` is `None` without `ntk_test_train`.
    """
    return predict


def _validated_eigh(ntk_train_train, y_train, learning_rate, diag_reg):
    layout = check_kernel(ntk_train_train)
    check_targets(y_train, layout)
    check_learning_rate(learning_rate)
    check_positive(diag_reg, "diag_reg", allow_zero=True)
    return layout, eigh(ntk_train_train, layout, diag_reg)


def gradient_descent_mse(
    ntk_train_train: Kernel,
    y_train: Targets,
    *,
    learning_rate: float | int | Float[Array, ""] = 1.0,
    diag_reg: float | int | Float[Array, ""] = 0.0,
) -> Predictor:
    """Outputs of a linearized network trained by continuous-time gradient descent on MSE.

    With the loss `L = ½ Σ_i ‖f(x_i) − y_i‖²` (a sum, see [`nte.predict`][]),
    gradient flow with rate `η` gives, with `Θ = V diag(λ) Vᵀ` and `Θ_* = Θ(x_test, x_train)`,

        f_t  = y + V diag(e^{−ηλt}) Vᵀ (f_0 − y)
        f*_t = f*_0 − Θ_* V diag((1 − e^{−ηλt}) / λ) Vᵀ (f_0 − y)

    computed from one `jnp.linalg.eigh` of the symmetrized kernel `(Θ + Θᵀ)/2 + diag_reg·I`.
    The returned `predict` is jittable and accepts `t = inf` (the end of training: the train
    outputs reach `y_train` when the kernel is full rank).

    **Arguments:**

    - `ntk_train_train`: the NTK on the training inputs: `[n, n]` (a *traced* kernel, applied
      identically and independently to every output dimension, i.e. the full kernel `Θ ⊗ I`) or
      `[n, n, k, k]` (the full kernel of `nte.empirical_ntk` with `trace=False`, exact for
      the linearized network). Note: `nte.empirical_ntk` with `trace=True` *sums* over the
      `k` outputs; divide it by `k` for the per-output kernel of a wide network.
    - `y_train`: targets `[n]` or `[n, k]`.
    - `learning_rate`: `η > 0`; time `t` counts gradient steps (the ODE is `df/dt = −ηΘ(f − y)`).
    - `diag_reg`: `≥ 0`, added to the kernel's diagonal (absolute scale), i.e. ridge
      regularization: at `t = ∞` the predictor becomes kernel ridge regression with ridge
      `diag_reg`. Use it for ill-conditioned kernels. If the smallest eigenvalue of the kernel
      (+ `diag_reg`) is `≤ 0`, a warning is emitted and eigen-directions with eigenvalue `≤ 0`
      are left unchanged (pseudo-inverse convention). Tiny positive eigenvalues (a numerically
      rank-deficient kernel) are used as they are: harmless at finite `t`, but at `t = ∞` they
      amplify rounding errors by `1/λ`, so pass `diag_reg > 0` for such kernels.

    **Returns:**

    `predict(t, fx_train_0, fx_test_0=None, ntk_test_train=None) -> (fx_train_t, fx_test_t)`:
    `t ≥ 0` a scalar or an array (results stacked on its axes in front); `fx_test_t` is `None`
    without `ntk_test_train`.

    !!! example

        ```python
        predict = nte.predict.gradient_descent_mse(k_train, y_train, learning_rate=lr)
        f_train, f_test = predict(jnp.inf, f0_train, f0_test, k_test_train)
        ```
    """
    layout, eig = _validated_eigh(ntk_train_train, y_train, learning_rate, diag_reg)
    eta = learning_rate

    def decay(lam, t):
        return jnp.exp(-eta * lam * t)

    def integral(lam, t):
        return -jnp.expm1(-eta * lam * t) / lam

    return _make_predictor(
        eig, layout, y_train, decay, integral, time_name="t", check_t=lambda t: check_times(t)
    )


def _check_steps(k) -> None:
    check_times(k, "k")
    if is_concrete(k):
        arr = np.asarray(k, dtype=float)
        finite = arr[np.isfinite(arr)]
        if np.any(finite != np.floor(finite)):
            raise ValueError(f"`k` must be a whole number of steps (or inf), got {k!r}.")


def _power(base, k):
    """`base ** k` for whole `k ≥ 0` (including `inf`) and any real `base`."""
    mag = jnp.where(k == 0, 1.0, jnp.exp(k * jnp.log(jnp.abs(base))))
    odd = jnp.isfinite(k) & (jnp.mod(k, 2) == 1)
    return jnp.where((base < 0) & odd, -mag, mag)


def discrete_gradient_descent_mse(
    ntk_train_train: Kernel,
    y_train: Targets,
    *,
    learning_rate: float | int | Float[Array, ""] = 1.0,
    diag_reg: float | int | Float[Array, ""] = 0.0,
) -> Predictor:
    """Outputs of a linearized network after `k` discrete gradient-descent steps on MSE.

    The exact recursion `f_{k+1} = f_k − η Θ (f_k − y)`, `f*_{k+1} = f*_k − η Θ_* (f_k − y)` of
    full-batch gradient descent on `L = ½ Σ_i ‖f(x_i) − y_i‖²` for the linearized network:

        f_k  = y + V diag((1 − ηλ)^k) Vᵀ (f_0 − y)
        f*_k = f*_0 − Θ_* V diag((1 − (1 − ηλ)^k) / λ) Vᵀ (f_0 − y)

    It converges iff `η < 2/λ_max` ([`nte.predict.max_learning_rate`][]); it tends to the
    continuous-time [`nte.predict.gradient_descent_mse`][] at time `t = k` as `η → 0`.

    **Arguments:** as for [`nte.predict.gradient_descent_mse`][].

    **Returns:**

    `predict(k, fx_train_0, fx_test_0=None, ntk_test_train=None) -> (fx_train_k, fx_test_k)`
    with `k` a whole number of steps `≥ 0` (or `inf`), a scalar or an array.
    """
    layout, eig = _validated_eigh(ntk_train_train, y_train, learning_rate, diag_reg)
    eta = learning_rate

    def decay(lam, k):
        return _power(1.0 - eta * lam, k)

    def integral(lam, k):
        base = 1.0 - eta * lam
        smooth = -jnp.expm1(k * jnp.log1p(-eta * jnp.minimum(lam, 0.5 / eta))) / lam
        return jnp.where(base > 0.5, smooth, (1.0 - _power(base, k)) / lam)

    return _make_predictor(
        eig, layout, y_train, decay, integral, time_name="k", check_t=_check_steps
    )


def max_learning_rate(
    ntk_train_train: Kernel, *, diag_reg: float | int | Float[Array, ""] = 0.0
) -> Float[Array, ""]:
    """The largest stable learning rate of discrete gradient descent on MSE: `2 / λ_max`.

    For the sum loss `L = ½ Σ_i ‖f(x_i) − y_i‖²` the linearized step multiplies the train
    residual by `I − η Θ`, which contracts iff `0 < η < 2/λ_max(Θ + diag_reg·I)`. For a `½·mean`
    loss over the `n·k` entries multiply the result by `n·k`.

    **Arguments:**

    - `ntk_train_train`: the kernel, `[n, n]` (traced) or `[n, n, k, k]` (full).
    - `diag_reg`: `≥ 0`, added to the diagonal as in [`nte.predict.gradient_descent_mse`][].

    **Returns:**

    The scalar `2 / λ_max`.
    """
    layout = check_kernel(ntk_train_train)
    check_positive(diag_reg, "diag_reg", allow_zero=True)
    mat = to_matrix(ntk_train_train, layout)
    mat = 0.5 * (mat + mat.T) + diag_reg * jnp.eye(mat.shape[0], dtype=mat.dtype)
    return 2.0 / jnp.linalg.eigvalsh(mat)[-1]
