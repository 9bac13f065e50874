"""Learner implementations: one module per family (each registers its sections on import)."""

from . import _basic, _ewc, _hypernetwork, _optax, _pruning  # noqa: F401
