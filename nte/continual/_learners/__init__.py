"""Learner implementations: one module per learner (each registers itself on import)."""

from . import _adam, _nte, _optax, _scaled_sgd, _sgd  # noqa: F401

# --- baselines ---
# isort: split
from . import _ewc, _hypernetwork  # noqa: F401
