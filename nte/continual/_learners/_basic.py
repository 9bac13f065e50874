"""The learner sections of SGD, Adam, scaled SGD and the NTE posterior update.

Each is a [`nte.continual.LearnerConfig`][] whose fields are the learner's hyperparameters and
whose `build` returns an [`nte.continual.OptaxLearner`][] (a transformation and a gradient
source).
"""

import dataclasses
import functools
from typing import ClassVar

import optax
from jaxtyping import PRNGKeyArray

from ..._posterior import nte as nte_optimizer
from ..._scaled_sgd import scale_by_scaled_sgd
from .._fields import choice, integer, number, of_type, option
from .._learner import LearnerConfig, LearnerContext, register_learner
from .._observe import ensemble_observer
from ._optax import OptaxLearner, PerExampleGradients, ResettingOptaxLearner, TangentLikelihoods

LEARNING_RATE = "the step size"
MOMENTUM = "heavy-ball momentum in [0, 1); 0 is plain SGD"


def sgd_transformation(lr: float, momentum: float, nesterov: bool = False):
    """`optax.sgd` (momentum 0 means none), shared by every SGD-based learner."""
    return optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)


@register_learner
@dataclasses.dataclass(frozen=True)
class SGDConfig(LearnerConfig):
    """SGD (`optax.sgd`) on the mean-batch masked cross-entropy (`learner="sgd"`)."""

    name: ClassVar[str] = "sgd"
    lr: float = option(0.05, LEARNING_RATE, number())
    momentum: float = option(0.0, MOMENTUM, number(strict=False, below=1.0))
    nesterov: bool = option(False, "Nesterov momentum", of_type(bool))
    reset_momentum: bool = option(
        False, "zero the momentum buffer at every task end (the paper's Fig. 4 variant)",
        of_type(bool),
    )  # fmt: skip

    def build(self, context: LearnerContext) -> OptaxLearner:
        cls = ResettingOptaxLearner if self.reset_momentum else OptaxLearner
        return cls(sgd_transformation(self.lr, self.momentum, self.nesterov))


@register_learner
@dataclasses.dataclass(frozen=True)
class AdamConfig(LearnerConfig):
    """Adam (`optax.adam`) on the mean-batch masked cross-entropy (`learner="adam"`)."""

    name: ClassVar[str] = "adam"
    lr: float = option(1e-3, LEARNING_RATE, number())
    b1: float = option(0.9, "decay rate of the first moment", number(strict=False, below=1.0))
    b2: float = option(0.999, "decay rate of the second moment", number(strict=False, below=1.0))
    eps: float = option(1e-8, "denominator offset", number())

    def build(self, context: LearnerContext) -> OptaxLearner:
        return OptaxLearner(optax.adam(self.lr, b1=self.b1, b2=self.b2, eps=self.eps))


MAX_DELTA = "optional clip of |Δ_i| (None: no clip)"


@register_learner
@dataclasses.dataclass(frozen=True)
class ScaledSGDConfig(LearnerConfig):
    """Scaled SGD, per example `Δ ← Δ − lr·|Δ|⊙g_b` ([`nte.scale_by_scaled_sgd`][];
    [maths: scaled SGD](../math.md#scaled-sgd)) on per-example gradients
    (`learner="scaled_sgd"`)."""

    name: ClassVar[str] = "scaled_sgd"
    lr: float = option(0.05, LEARNING_RATE, number())
    renormalize: bool = option(False, "rescale Δ to its initial L1 norm", of_type(bool))
    max_delta: float | None = option(None, MAX_DELTA, number(optional=True))

    def build(self, context: LearnerContext) -> OptaxLearner:
        tx = scale_by_scaled_sgd(self.lr, renormalize=self.renormalize, max_delta=self.max_delta)
        return OptaxLearner(tx, PerExampleGradients())


def nte_transformation(section: "NTEConfig", key: PRNGKeyArray | None):
    """The optimizer of the NTE learner: the prior and the projection."""
    # β, η and `invalid` belong to the likelihood (`TangentLikelihoods`), not to the optimizer.
    return nte_optimizer(
        max_delta=section.max_delta,
        prune_below=section.prune_below,
        renormalize=section.renormalize,
        init_scale=section.init_scale,
        key=key,
    )


@register_learner
@dataclasses.dataclass(frozen=True)
class NTEConfig(LearnerConfig):
    """The NTE posterior update ([`nte.nte`][] on [`nte.expert_log_likelihoods`][];
    [maths: the posterior update](../math.md#the-posterior-update)) (`learner="nte"`)."""

    name: ClassVar[str] = "nte"
    observers: ClassVar[tuple] = (ensemble_observer,)  # pruned, effective size, mass per leaf
    beta: float = option(0.03, "β > 0, the inverse temperature of the likelihood", number())
    eta: float = option(1.0, "η > 0, the likelihood exponent (1: the plain posterior)", number())
    max_delta: float | None = option(None, MAX_DELTA, number(optional=True))
    renormalize: bool = option(True, "keep ‖Δ‖₁ fixed", of_type(bool))
    init_scale: float = option(
        0.0, "0: origin variant; σ > 0: Δ = σ·N(0, 1)", number(0.0, strict=False)
    )
    invalid: str = option("cap", "invalid-expert policy", choice("cap", "floor", "raise", "prune"))
    prune_below: float | None = option(
        None,
        "remove experts whose posterior weight |Δ_i|/‖Δ‖₁ falls below this τ (0 < τ < 1)",
        number(0.0, below=1.0, optional=True),
    )
    method: str = option("auto", "likelihood method", choice("auto", "vmap", "chunked", "series"))
    chunk_size: int | None = option(
        None, "examples per chunk of the likelihood", integer(1, optional=True)
    )

    def build(self, context: LearnerContext) -> OptaxLearner:
        source = TangentLikelihoods(self.beta, self.eta, self.invalid, self.method, self.chunk_size)
        return OptaxLearner(functools.partial(nte_transformation, self), source)
