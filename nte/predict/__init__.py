"""`nte.predict`: what gradient descent does to a network, predicted from its NTK.

Convention (every predictor): the training loss is the *sum* over examples and outputs

    L(f) = ½ Σ_i ‖f(x_i) − y_i‖²        (no 1/n, no 1/k),

gradient descent is `θ ← θ − η ∇_θ L`, and time `t` counts gradient steps. The linearized
network's outputs then follow, with the empirical NTK `Θ = J Jᵀ` and `Θ_* = Θ(x_test, x_train)`,

    continuous time:  df/dt   = −η Θ (f − y)             →  f_t − y = e^{−η Θ t} (f_0 − y)
    discrete steps:   f_{k+1} = f_k − η Θ (f_k − y)      →  f_k − y = (I − η Θ)^k (f_0 − y)
    test points:      df*/dt  = −η Θ_* (f − y)
                      →  f*_t = f*_0 − Θ_* Θ⁻¹ (I − e^{−η Θ t}) (f_0 − y)

For a loss `½·mean` over the `n·k` entries, use `learning_rate = η_mean / (n·k)`.

Kernels are `[n, n]` (*traced*: the same kernel for every output dimension, i.e. `Θ ⊗ I_k`)
or `[n, n, k, k]` (*full*, exact for a finite network). `nte.empirical_ntk` with
`trace=True` *sums* over the `k` outputs: divide by `k` to get the per-output kernel.

`gradient_descent_mse_ensemble` predicts, under the same convention, the mean and covariance of
the infinite ensemble of infinitely wide networks (from the kernels of `nte.kernels`).
"""

from ._ensemble import gradient_descent_mse_ensemble as gradient_descent_mse_ensemble
from ._mse import (
    discrete_gradient_descent_mse as discrete_gradient_descent_mse,
    gradient_descent_mse as gradient_descent_mse,
    max_learning_rate as max_learning_rate,
)
from ._ode import gradient_descent as gradient_descent
