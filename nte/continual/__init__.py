"""`nte.continual`: the continual-learning harness (tasks, learners, training runs, metrics).

See the documentation of [`nte.continual.AbstractLearner`][] for the learner interface.
"""

from . import _learners as _learners  # registers the built-in learners
from ._config import Config as Config
from ._fisher import ewc_penalty as ewc_penalty, fisher_diagonal as fisher_diagonal
from ._learner import (
    AbstractLearner as AbstractLearner,
    Task as Task,
    available_learners as available_learners,
    cross_entropy as cross_entropy,
    make_learner as make_learner,
    masked_log_softmax as masked_log_softmax,
    register_learner as register_learner,
)
from ._learners._adam import adam as adam
from ._learners._ewc import (
    EWCLearner as EWCLearner,
    EWCState as EWCState,
    ewc as ewc,
    online_ewc as online_ewc,
)
from ._learners._hypernetwork import (
    HypernetworkLearner as HypernetworkLearner,
    HypernetworkState as HypernetworkState,
    hypernetwork as hypernetwork,
)
from ._learners._nte import NTELearner as NTELearner, NTEState as NTEState, nte as nte
from ._learners._optax import OptaxLearner as OptaxLearner, OptaxState as OptaxState
from ._learners._pruning import (
    PruneOnlyLearner as PruneOnlyLearner,
    magnitude_sgd as magnitude_sgd,
    prune_only as prune_only,
)
from ._learners._scaled_sgd import (
    ScaledSGDLearner as ScaledSGDLearner,
    ScaledSGDState as ScaledSGDState,
    scaled_sgd as scaled_sgd,
)
from ._learners._sgd import sgd as sgd
from ._metrics import Metrics as Metrics, metrics as metrics
from ._run import Result as Result, load_tasks as load_tasks, run as run
from ._tasks import Tasks as Tasks, permuted_tasks as permuted_tasks, split_tasks as split_tasks
