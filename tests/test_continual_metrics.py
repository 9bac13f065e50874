import numpy as np
import pytest

from nte import continual


def test_metrics_hand_computed():
    R = np.array([[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.5, 0.6, 0.95]])
    b = np.array([0.1, 0.15, 0.05])
    m = continual.metrics(R, b)
    np.testing.assert_allclose(m.acc, (0.5 + 0.6 + 0.95) / 3, rtol=1e-12)
    np.testing.assert_allclose(m.bwt, ((0.5 - 0.9) + (0.6 - 0.8)) / 2, rtol=1e-12)
    np.testing.assert_allclose(m.fwt, ((0.1 - 0.15) + (0.3 - 0.05)) / 2, rtol=1e-12)
    np.testing.assert_allclose(m.forgetting, [0.9 - 0.5, 0.8 - 0.6], rtol=1e-12)
    np.testing.assert_allclose(m.mean_forgetting, 0.3, rtol=1e-12)


def test_metrics_forgetting_uses_the_best_earlier_row():
    # Task 0 peaks after task 1, not right after it was trained.
    R = np.array([[0.6, 0.0, 0.0], [0.9, 0.7, 0.0], [0.4, 0.7, 0.8]])
    m = continual.metrics(R, np.zeros(3))
    np.testing.assert_allclose(m.forgetting, [0.5, 0.0], atol=1e-12)


def test_metrics_leading_axes_match_loop():
    rng = np.random.default_rng(0)
    R, b = rng.random((4, 5, 5)), rng.random((4, 5))
    m = continual.metrics(R, b)
    for s in range(4):
        ms = continual.metrics(R[s], b[s])
        for field in m._fields:
            np.testing.assert_allclose(getattr(m, field)[s], getattr(ms, field), rtol=1e-12)


def test_metrics_single_task_and_errors():
    m = continual.metrics(np.array([[0.8]]), np.array([0.1]))
    assert m.acc == pytest.approx(0.8) and np.isnan(m.bwt) and np.isnan(m.fwt)
    assert m.forgetting.shape == (0,)
    with pytest.raises(ValueError, match="R"):
        continual.metrics(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="baseline"):
        continual.metrics(np.zeros((3, 3)), np.zeros(2))
