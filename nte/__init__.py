"""`nte`: the Neural Tangent Ensemble in JAX + Equinox.

The public API lives here and nothing else; code lives in private modules.
"""

from . import nn as nn
from ._per_example import per_example_grads as per_example_grads
from ._signs import sign_mask as sign_mask, sign_violations as sign_violations
from ._split import merge as merge, split as split

# isort: split
# --- pruning ---
from . import pruning as pruning

__version__ = "0.1.0"
