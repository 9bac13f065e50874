"""Learner implementations: one module per learner (each registers itself on import)."""

from . import _adam, _nte, _optax, _pruning, _scaled_sgd, _sgd  # noqa: F401
