"""`nte`: the Neural Tangent Ensemble in JAX + Equinox.

The public API lives here and nothing else; code lives in private modules.
"""

from . import (
    continual as continual,
    data as data,
    kernels as kernels,
    likelihood as likelihood,
    nn as nn,
    predict as predict,
    pruning as pruning,
)
from ._alignment import gradient_alignment as gradient_alignment
from ._distributed import (
    initialize_distributed as initialize_distributed,
    is_main_process as is_main_process,
    make_mesh as make_mesh,
    shard_batch as shard_batch,
)
from ._ensemble_stats import EnsembleStats as EnsembleStats, ensemble_stats as ensemble_stats
from ._euler import (
    euler_residual as euler_residual,
    homogeneity_degree as homogeneity_degree,
    parameter_degrees as parameter_degrees,
)
from ._experts import (
    ensemble_probabilities as ensemble_probabilities,
    expert_probabilities as expert_probabilities,
    tangent_experts as tangent_experts,
)
from ._jacobian_distance import jacobian_distance as jacobian_distance
from ._linearize import (
    AbstractExpansion as AbstractExpansion,
    Linearized as Linearized,
    TaylorExpansion as TaylorExpansion,
    linearize as linearize,
    taylor_expand as taylor_expand,
)
from ._nngp import empirical_nngp as empirical_nngp
from ._ntk import empirical_ntk as empirical_ntk
from ._per_example import per_example_grads as per_example_grads
from ._posterior import ScaleByNTEState as ScaleByNTEState, nte as nte, scale_by_nte as scale_by_nte
from ._posterior_pruning import PrunedBy as PrunedBy
from ._scaled_sgd import (
    ScaleByScaledSGDState as ScaleByScaledSGDState,
    scale_by_scaled_sgd as scale_by_scaled_sgd,
)
from ._signs import sign_mask as sign_mask, sign_violations as sign_violations
from ._split import merge as merge, split as split
from .likelihood import (
    ExpertLogLikelihoods as ExpertLogLikelihoods,
    expert_log_likelihoods as expert_log_likelihoods,
    sharded_expert_log_likelihoods as sharded_expert_log_likelihoods,
)

__version__ = "0.1.0"
