"""Learner implementations: one module per learner (each registers itself on import)."""

from . import (  # noqa: F401
    _adam,
    _ewc,
    _hypernetwork,
    _nte,
    _optax,
    _pruning,
    _scaled_sgd,
    _sgd,
)
