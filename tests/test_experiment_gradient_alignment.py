"""The Fig. 3 experiment's observer measures alignment against the seed's own initial model."""

import equinox as eqx
import jax
import numpy as np
import optax

import nte
from experiments import gradient_alignment as ga
from nte import continual


def _config(**kw):
    args = ga.parser().parse_args(["--dataset", "digits", "--widths", "8", "--out", "unused"])
    return ga.plan(args)["nte-w8"].replace(**kw)


def test_plan_is_the_protocol_with_observations():
    c = _config()
    assert (c.data.tasks, c.data.permute_first, c.training.epochs, c.training.batch_size) == (
        2, True, 2, 128,
    )  # fmt: skip
    assert c.training.observe_every == 47 and c.learner.beta == 0.01


def test_observer_is_one_at_the_start_and_matches_a_direct_computation():
    config = _config()
    observe = ga.alignment_observer(config, 16, chunk=4)
    event = lambda seed: continual.Event("step", 0, 0, seed)  # noqa: E731
    start = continual.initial_model(config, 0)
    np.testing.assert_allclose(observe(start, None, event(0))["alignment"], 1.0, rtol=1e-5)
    moved = jax.tree.map(lambda v: v * 1.7 + 0.05 if eqx.is_inexact_array(v) else v, start)
    x, y = ga.probe(config, 16)
    loss = lambda m, xi, yi: optax.softmax_cross_entropy_with_integer_labels(m(xi), yi)  # noqa: E731
    expected = nte.gradient_alignment(loss, moved, start, x, y)
    got = observe(moved, None, event(0))["alignment"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got < 0.999
    other = observe(moved, None, event(1))["alignment"]  # seed 1 starts elsewhere
    np.testing.assert_allclose(
        other, nte.gradient_alignment(loss, moved, continual.initial_model(config, 1), x, y),
        rtol=1e-5,
    )  # fmt: skip


def test_probe_is_task_one_as_the_task_sees_it():
    config = _config()
    x, y = ga.probe(config, 5)
    tasks = continual.load_tasks(config)
    np.testing.assert_array_equal(x, tasks.x_train[:5][:, tasks.permutations[0]])
    np.testing.assert_array_equal(y, tasks.y_train[:5])
