"""`nte.continual`: the continual-learning harness (tasks, learners, training runs, metrics).

Learners are built from the registry by name ([`nte.continual.make_learner`][],
[`nte.continual.available_learners`][]); see [`nte.continual.AbstractLearner`][] for the learner
interface and [`nte.continual.LearnerConfig`][] for their hyperparameter sections.
"""

from . import _learners as _learners  # registers the built-in learners
from ._checkpoint import CheckpointError as CheckpointError
from ._cli import (
    HelpFormatter as HelpFormatter,
    configs_from_args as configs_from_args,
    parser as parser,
)
from ._config import (
    Config as Config,
    DataConfig as DataConfig,
    DevicesConfig as DevicesConfig,
    ModelConfig as ModelConfig,
    TrainingConfig as TrainingConfig,
)
from ._fisher import ewc_penalty as ewc_penalty, fisher_diagonal as fisher_diagonal
from ._learner import (
    AbstractLearner as AbstractLearner,
    LearnerConfig as LearnerConfig,
    LearnerContext as LearnerContext,
    Task as Task,
    available_learners as available_learners,
    cross_entropy as cross_entropy,
    learner_config as learner_config,
    make_learner as make_learner,
    masked_log_softmax as masked_log_softmax,
    register_learner as register_learner,
)
from ._learners._basic import (
    AdamConfig as AdamConfig,
    NTEConfig as NTEConfig,
    ScaledSGDConfig as ScaledSGDConfig,
    SGDConfig as SGDConfig,
)
from ._learners._ewc import (
    EWCConfig as EWCConfig,
    EWCLearner as EWCLearner,
    EWCState as EWCState,
    OnlineEWCConfig as OnlineEWCConfig,
)
from ._learners._hypernetwork import (
    HypernetworkConfig as HypernetworkConfig,
    HypernetworkLearner as HypernetworkLearner,
    HypernetworkState as HypernetworkState,
)
from ._learners._optax import (
    AbstractGradientSource as AbstractGradientSource,
    MeanGradient as MeanGradient,
    OptaxLearner as OptaxLearner,
    OptaxState as OptaxState,
    PerExampleGradients as PerExampleGradients,
    TangentLikelihoods as TangentLikelihoods,
)
from ._learners._pruning import (
    MagnitudeConfig as MagnitudeConfig,
    PruneOnlyConfig as PruneOnlyConfig,
    PruneOnlyInitConfig as PruneOnlyInitConfig,
    PruneOnlyLearner as PruneOnlyLearner,
)
from ._metrics import Metrics as Metrics, metrics as metrics
from ._model import initial_model as initial_model
from ._observe import Event as Event, ensemble_observer as ensemble_observer
from ._result import Result as Result
from ._run import run as run
from ._tasks import (
    Tasks as Tasks,
    holdout as holdout,
    load_tasks as load_tasks,
    permuted_tasks as permuted_tasks,
    split_tasks as split_tasks,
)
