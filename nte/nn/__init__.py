"""Reference models for `nte`: Equinox modules whose `__call__` takes one example."""

from ._mlp import MLP as MLP

# --- baselines ---
# isort: split
from ._hypernetwork import ChunkedHypernetwork as ChunkedHypernetwork
