"""`nte`: the Neural Tangent Ensemble in JAX + Equinox.

The public API lives here and nothing else; code lives in private modules.
"""

from . import nn as nn
from ._per_example import per_example_grads as per_example_grads
from ._signs import sign_mask as sign_mask, sign_violations as sign_violations
from ._split import merge as merge, split as split

# --- data ---
# isort: split
from . import data as data

# isort: split
# --- posterior ---
from ._likelihood import (
    ExpertLogLikelihoods as ExpertLogLikelihoods,
    expert_log_likelihoods as expert_log_likelihoods,
)
from ._posterior import ScaleByNTEState as ScaleByNTEState, nte as nte, scale_by_nte as scale_by_nte
from ._scaled_sgd import (
    ScaleByScaledSGDState as ScaleByScaledSGDState,
    scale_by_scaled_sgd as scale_by_scaled_sgd,
)

# isort: split
# --- harness ---
from . import continual as continual

__version__ = "0.1.0"
