"""Internals shared across `nte` and its scripts (not public API; may change without notice)."""
