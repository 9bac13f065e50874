"""Reference models for `nte`: Equinox modules whose `__call__` takes one example."""

from ._cnn import CNN as CNN
from ._mlp import MLP as MLP
