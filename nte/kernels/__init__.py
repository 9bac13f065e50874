"""`nte.kernels`: the infinite-width kernels of `nte.nn.MLP`, and Monte-Carlo empirical kernels.

At infinite width a randomly initialized network is a Gaussian process with the NNGP kernel
`K`, and its neural tangent kernel is the deterministic `Θ`: the neural tangent experts stop
moving, and gradient descent on the squared error is kernel regression with `Θ`
([`nte.predict.gradient_descent_mse_ensemble`][]). Both kernels are per output unit (every
output of the network is an independent copy), `[n1, n2]`.
"""

from ._mlp import nngp as nngp, ntk as ntk
from ._monte_carlo import monte_carlo as monte_carlo
