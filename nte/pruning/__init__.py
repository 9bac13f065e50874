"""Pruning: learning by pruning only, magnitude pruning, which weights are pruned, sparsity and
sign projection."""

from .._signs import (
    KeepSignsState as KeepSignsState,
    keep_signs as keep_signs,
    project_signs as project_signs,
)
from ._magnitude import (
    MagnitudeState as MagnitudeState,
    magnitude as magnitude,
    polynomial_sparsity as polynomial_sparsity,
)
from ._prune_only import PruneOnlyState as PruneOnlyState, prune_only as prune_only
from ._pruned import pruned as pruned
from ._sparsity import sparsity as sparsity
