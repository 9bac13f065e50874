"""Pruning: learning by pruning only, magnitude pruning, sparsity and sign projection."""

from ._magnitude import (
    MagnitudeState as MagnitudeState,
    magnitude as magnitude,
    polynomial_sparsity as polynomial_sparsity,
)
from ._prune_only import PruneOnlyState as PruneOnlyState, prune_only as prune_only
from ._signs import (
    KeepSignsState as KeepSignsState,
    keep_signs as keep_signs,
    project_signs as project_signs,
)
from ._sparsity import sparsity as sparsity
