"""Reference models for `nte`: Equinox modules whose `__call__` takes one example."""

from .._signs import dale_signs as dale_signs
from ._cnn import CNN as CNN
from ._dale import dale_mlp as dale_mlp
from ._hypernetwork import ChunkedHypernetwork as ChunkedHypernetwork
from ._mlp import MLP as MLP
