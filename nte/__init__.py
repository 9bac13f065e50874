"""`nte`: the Neural Tangent Ensemble in JAX + Equinox.

The public API lives here and nothing else; code lives in private modules.
"""

# --- harness ---
from . import continual as continual, nn as nn
from ._per_example import per_example_grads as per_example_grads
from ._signs import sign_mask as sign_mask, sign_violations as sign_violations
from ._split import merge as merge, split as split

# --- data ---
# isort: split
from . import data as data

__version__ = "0.1.0"
