"""The infinite ensemble of networks trained by gradient flow on MSE (Lee et al. 2019)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Real, Shaped

from .._errors import check_callable, check_choice, check_positive
from ..kernels import _mlp as _kernels
from ..nn import MLP
from ._kernel import Eigh, Layout, check_learning_rate, check_times, eigh, over_times

_GETS = ("nngp", "ntk")
KernelFn = Callable[[Array, Array, str], Float[Array, "n1 n2"]]
Times = Real[Array, "*times"] | Real[np.ndarray, "*times"] | float | int | None


def _as_kernel_fn(kernel_fn: Any) -> KernelFn:
    if isinstance(kernel_fn, MLP):
        model = kernel_fn
        try:  # an unsupported activation fails here, before any work
            _kernels.spec_of(model, ntk=False)
        except ValueError as error:
            raise ValueError(f"`kernel_fn`: {error}") from None
        return lambda x1, x2, get: getattr(_kernels, get)(model, x1, x2)
    check_callable(kernel_fn, "kernel_fn")
    return kernel_fn


def _evaluate(kernel_fn: KernelFn, x1, x2, get: str) -> Array:
    out = jnp.asarray(kernel_fn(x1, x2, get))
    want = (jnp.shape(x1)[0], jnp.shape(x2)[0])
    if out.shape != want:
        raise ValueError(
            f"`kernel_fn(x1, x2, {get!r})` must return a per-output kernel of shape {want}, "
            f"got {out.shape}."
        )
    return out


@eqx.filter_jit
def _moments(eig: Eigh, theta_td, k_td, k_tt, k_dd, y, t, eta, nngp: bool, compute_cov: bool):
    """Mean (and covariance) at one time `t` (`inf` allowed) from the train kernel's eigh."""
    safe = jnp.where(eig.null, 1.0, eig.evals)
    expm1 = lambda s: jnp.expm1(-s * eta * safe * t)  # −1 at t = ∞
    coeff = jnp.where(eig.null, 0.0, -expm1(1.0) / safe)  # (1 − e^{−ηλt}) / λ
    a = (theta_td @ eig.evecs) * coeff @ eig.evecs.T  # Θ*x Θ⁻¹ (I − e^{−ηΘt})
    mean = a @ y
    if not compute_cov:
        return mean, None
    if nngp:  # K** − K*x K⁻¹ (I − e^{−2ηKt}) Kx*: the Bayesian posterior at t = ∞
        coeff2 = jnp.where(eig.null, 0.0, -expm1(2.0) / safe)
        proj = k_td @ eig.evecs
        return mean, k_tt - (proj * coeff2) @ proj.T
    cross = a @ k_td.T
    return mean, k_tt + a @ k_dd @ a.T - (cross + cross.T)


def gradient_descent_mse_ensemble(
    kernel_fn: KernelFn | MLP,
    x_train: Shaped[Array | np.ndarray, "_n ..."],
    y_train: Float[Array | np.ndarray, " _n"] | Float[Array | np.ndarray, "_n _k"],
    *,
    learning_rate: float | int = 1.0,
    diag_reg: float | int = 0.0,
) -> Callable[..., Any]:
    r"""Mean and covariance of an infinite ensemble of infinitely wide networks trained on MSE.

    The neural-tangents function of the same name, for this library's conventions. Over random
    initializations, an infinitely wide network is a Gaussian process with the NNGP `K` at
    initialization and trains as a linear model with the fixed NTK `Θ`; after gradient flow
    for a time `t` on `y_train` its test outputs are Gaussian with (Lee et al. 2019, eqs.
    15–16; [maths: infinite-width kernels](../math.md#infinite-width-kernels)), writing
    `E_t = I − e^{−ηΘt}` for the train-train `Θ`,

        mean(t) = Θ*x Θ⁻¹ E_t Y
        cov(t)  = K** + Θ*x Θ⁻¹ E_t K E_t Θ⁻¹ Θx* − (Θ*x Θ⁻¹ E_t Kx* + transpose)

    (`get="ntk"`: the trained ensemble, which is *not* the Bayesian posterior). With
    `get="nngp"` the dynamics kernel is `K` itself (training only the readout layer of an
    infinitely wide network), `mean(t) = K*x K⁻¹ (I − e^{−ηKt}) Y` and
    `cov(t) = K** − K*x K⁻¹ (I − e^{−2ηKt}) Kx*`: at `t = ∞` the exact GP posterior (kernel
    regression with `K`).

    **Time and learning-rate convention** (that of all of [`nte.predict`][]): the loss is the
    *sum* `L = ½ Σ_i ‖f(x_i) − y_i‖²`, gradient flow `dθ/dt = −η ∇L`, so the train outputs
    follow `df/dt = −η Θ (f − y)` with the per-output kernel and `t` counts gradient steps.
    neural-tangents instead normalizes by the number of targets (loss `½·mean` over the
    `n·k` entries, dynamics `e^{−η_nt Θ t / (n·k)}`): pass
    `learning_rate = η_nt / y_train.size` to reproduce it.

    **Arguments:**

    - `kernel_fn`: `kernel_fn(x1, x2, get) -> [n1, n2]`, the per-output kernel between two
      batches for `get` in `"nngp"`, `"ntk"` (e.g. an empirical kernel divided by the number
      of outputs); or an [`nte.nn.MLP`][], meaning its analytic kernels
      [`nte.kernels.nngp`][] and [`nte.kernels.ntk`][].
    - `x_train`: training inputs `[n, ...]`.
    - `y_train`: targets `[n]` or `[n, k]` (every output column is an independent GP with the
      same kernel).
    - `learning_rate`: `η > 0`.
    - `diag_reg`: `≥ 0`, added to the diagonal of the train-train dynamics kernel (absolute
      scale, as in [`nte.predict.gradient_descent_mse`][]). For `get="nngp"` at `t = ∞` this is
      the GP posterior with observation-noise variance `diag_reg`. Pass `> 0` for an
      ill-conditioned kernel: at `t = ∞` the predictor divides by its eigenvalues
      (eigen-directions with eigenvalue `≤ 0` are left untrained, with a warning).

    **Returns:**

    `predict(t=None, x_test=None, get="ntk", compute_cov=False)`: `t ≥ 0` a scalar or an array
    (results stacked on its axes in front), `None` meaning `t = ∞`; `x_test` `[m, ...]`
    (`None`: the training inputs); `get` `"nngp"`, `"ntk"` or a tuple of them. It returns the
    mean `[m]`/`[m, k]`, or `(mean, cov)` with `cov` `[m, m]` (shared by every output column)
    if `compute_cov`; a dict keyed by `get` if `get` is a tuple. Train-train kernels and their
    eigendecompositions are computed once and cached.

    !!! example

        ```python
        model = nte.nn.MLP(784, 1, 2, 10, parameterization="ntk", key=jax.random.key(0))
        predict = nte.predict.gradient_descent_mse_ensemble(model, x_train, y_train, diag_reg=1e-4)
        mean = predict(x_test=x_test, get="ntk")                      # t = ∞
        mean, cov = predict(100.0, x_test, "nngp", compute_cov=True)  # after 100 steps
        ```
    """
    kernel_fn = _as_kernel_fn(kernel_fn)
    if not hasattr(x_train, "shape") or np.ndim(x_train) < 1 or np.shape(x_train)[0] < 1:
        raise ValueError(
            f"`x_train` must be an array [n, ...] of n >= 1 examples, got {x_train!r:.80}."
        )
    y = jnp.asarray(y_train)
    if y.ndim not in (1, 2) or y.shape[0] != np.shape(x_train)[0]:
        raise ValueError(
            f"`y_train` must have shape [n] or [n, k] with n = {np.shape(x_train)[0]} "
            f"(the number of `x_train` examples), got {y.shape}."
        )
    check_learning_rate(learning_rate)
    check_positive(diag_reg, "diag_reg", allow_zero=True)
    kernels: dict[str, Array] = {}
    eighs: dict[str, Eigh] = {}

    def train(get: str) -> Array:
        if get not in kernels:
            kernels[get] = _evaluate(kernel_fn, x_train, x_train, get)
        return kernels[get]

    def eig_of(get: str) -> Eigh:
        if get not in eighs:
            eighs[get] = eigh(train(get), Layout(y.shape[0], None), diag_reg)
        return eighs[get]

    def predict(
        t: Times = None, x_test=None, get: str | tuple[str, ...] = "ntk", compute_cov=False
    ):
        gets = (get,) if isinstance(get, str) else tuple(get)
        for g in gets:
            check_choice(g, _GETS, "get")
        t = jnp.inf if t is None else t
        check_times(t)
        x_t = x_train if x_test is None else x_test
        k_td = _evaluate(kernel_fn, x_t, x_train, "nngp")
        k_tt = _evaluate(kernel_fn, x_t, x_t, "nngp") if compute_cov else None
        out = {}
        for g in gets:
            theta_td = k_td if g == "nngp" else _evaluate(kernel_fn, x_t, x_train, g)
            args = (eig_of(g), theta_td, k_td, k_tt, train("nngp"), y.astype(k_td.dtype))
            fn = lambda ti, g=g, args=args: _moments(
                *args, ti, learning_rate, g == "nngp", compute_cov
            )
            mean, cov = over_times(fn, jnp.asarray(t, dtype=k_td.dtype))
            out[g] = (mean, cov) if compute_cov else mean
        return out[get] if isinstance(get, str) else out

    return predict
