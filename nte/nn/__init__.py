"""Reference models for `nte`: Equinox modules whose `__call__` takes one example."""

from ._cnn import CNN as CNN
from ._mlp import MLP as MLP

# isort: split
# --- pruning ---
from ._dale import dale_mlp as dale_mlp, dale_signs as dale_signs
