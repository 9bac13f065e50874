"""A small real end-to-end run of the linearization study (sklearn digits, tiny sizes)."""

import jax
import numpy as np
import pytest

import nte
from experiments._linear_study import make_problem, reference_learning_rate, study_width

pytestmark = pytest.mark.slow  # subprocesses / end-to-end runs


@pytest.fixture(scope="module")
def problem():
    data = nte.data.load("digits")
    return make_problem(data.x_train, data.y_train, data.x_test, data.y_test, 10, 32, 32)


def test_study_wide_network_is_closer_to_its_linearization(problem):
    key = jax.random.key(0)
    lr = reference_learning_rate(problem, width=16, depth=1, key=key)
    rows = [
        study_width(w, problem, depth=1, learning_rate=lr, checkpoints=[0, 5, 40], key=key)
        for w in (16, 1024)
    ]
    narrow, wide = rows
    for row in rows:
        # the exact full-kernel recursion reproduces the trained linearization (float32)
        assert row["rmse_lin_exact"] < 1e-4
        assert row["steps"] == [0, 5, 40] and row["rmse_net_lin_vs_step"][0] < 1e-5
        assert np.isfinite(row["train_loss_net"])
    assert wide["rmse_net_lin"] < 0.5 * narrow["rmse_net_lin"]
    assert wide["ntk_change"] < 0.5 * narrow["ntk_change"]
    assert wide["weight_change"] < narrow["weight_change"]


def test_study_script_writes_metrics_and_plots(tmp_path):
    from experiments.linearization import main

    out = tmp_path / "run"
    result = main(["--widths", "8", "16", "--steps", "4", "--n-train", "16", "--n-test", "8",
                   "--out", str(out)])  # fmt: skip
    assert [row["width"] for row in result["rows"]] == [8, 16]
    for name in ("metrics.json", "rmse_vs_width.png", "rmse_vs_time.png", "change_vs_width.png"):
        assert (out / name).stat().st_size > 0
