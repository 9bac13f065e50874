"""`nte.nn.CNN` in the continual harness: every learner learns split digits (task-incremental)."""

import numpy as np
import pytest
from helpers import slow_except

import nte
from nte import continual

BASE = continual.Config(
    dataset="digits", tasks=2, scenario="task", batch_size=32, epochs=1, seeds=1,
    progress=False,
)  # fmt: skip
LEARNERS = {
    "sgd": dict(learner="sgd", lr=0.05),
    "sgd-momentum": dict(learner="sgd", lr=0.05, momentum=0.9),
    "adam": dict(learner="adam", lr=0.01),
    "nte": dict(learner="nte", beta=0.03),
    "ewc": dict(learner="ewc", lr=0.05, ewc_lambda=1.0),
}


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


def cnn(key):
    return nte.nn.CNN((1, 8, 8), 10, channels=(8, 16), key=key)


@pytest.mark.parametrize("name", slow_except(list(LEARNERS), ("sgd",)))
def test_cnn_learns_with_every_learner(digits, name):
    """After one epoch of each task (5 classes, masked softmax: chance 0.2) the CNN is well
    above chance and above its untrained accuracy on the task just trained."""
    result = continual.run(BASE.replace(**LEARNERS[name]), model=cnn, dataset=digits)
    assert result.finished
    diagonal = np.diagonal(result.R, axis1=1, axis2=2)  # [seeds, T]: task t after task t
    assert np.all(diagonal > 0.2 + 0.3), diagonal
    assert np.all(diagonal > result.baseline + 0.2), (diagonal, result.baseline)
