"""The width sweep's plan follows the authors' protocol; its counts and verdicts are right."""

import numpy as np
import pytest

import nte
from experiments import width_sweep


def _mlp_parameters(width: int) -> int:
    import jax

    model = nte.nn.MLP(784, width, 2, 10, key=jax.random.key(0))
    return sum(x.size for x in jax.tree_util.tree_leaves(model) if hasattr(x, "size"))


@pytest.mark.parametrize("width", [10, 300])
def test_parameter_count_matches_the_model(width):
    assert width_sweep.parameters(width) == _mlp_parameters(width)


def test_plan_is_the_reference_protocol(tmp_path):
    args = width_sweep.parser().parse_args(["--widths", "30,5000", "--out", str(tmp_path)])
    runs = width_sweep.plan(args)
    assert sorted(runs) == sorted(f"{k}-w{w}" for k in ("nte", "sgd", "adam") for w in (30, 5000))
    for name, c in runs.items():
        assert (c.data.tasks, c.data.scenario, c.data.permute_first) == (5, "permuted", True)
        assert (c.training.epochs, c.training.batch_size, c.model.depth) == (2, 128, 2)
        assert c.training.seeds == (3 if c.model.width <= 3000 else 1)
        assert c.training.out == str(tmp_path / name)
    n, s, a = runs["nte-w30"].learner, runs["sgd-w30"].learner, runs["adam-w30"].learner
    assert (n.beta, n.eta, n.max_delta, n.renormalize, n.init_scale) == (0.01, 1.0, 0.1, True, 0.0)
    assert (s.lr, s.momentum) == (0.01, 0.0)
    assert (a.lr, a.b1, a.b2) == (1e-3, 0.9, 0.99)


def test_verdict_needs_a_gap_beyond_the_seed_spread():
    v = width_sweep.verdict
    assert v(np.array([0.80, 0.82, 0.84]), np.array([0.70, 0.71, 0.72])) == "NTE > SGD"
    assert v(np.array([0.70, 0.80, 0.90]), np.array([0.75, 0.76, 0.77])) == "tie"  # std 0.08
    assert v(np.array([0.5]), np.array([0.505])) == "tie"  # one seed: 0.01
    assert v(np.array([0.5]), np.array([0.6])) == "NTE < SGD"
    # gap 0.025 exceeds each std (0.016) but not their sum (0.033): the one rule says tie
    assert v(np.array([0.80, 0.82, 0.84]), np.array([0.775, 0.795, 0.815])) == "tie"


def test_one_seed_spread_rule_for_every_script():
    from experiments import _protocol

    a, b = np.array([0.80, 0.82, 0.84]), np.array([0.70, 0.70, 0.70])
    assert _protocol.seed_spread(a, b) == pytest.approx(np.std(a))
    assert _protocol.seed_spread(a, np.array([0.7])) is None


def test_permute_first_permutes_task_one():
    ds = nte.data.load("digits")
    c = nte.continual.Config(dataset="digits", tasks=2, permute_first=True)
    tasks = nte.continual.load_tasks(c, ds)
    assert not np.array_equal(tasks.permutations[0], np.arange(64))
    assert sorted(tasks.permutations[0]) == list(range(64))
    keep = nte.continual.load_tasks(c.replace(permute_first=False), ds)
    np.testing.assert_array_equal(keep.permutations[0], np.arange(64))
    np.testing.assert_array_equal(keep.permutations[1], tasks.permutations[1])


def test_bad_learner_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        width_sweep.main(["--learners", "nte,foo", "--report-only"])
    assert e.value.code == 2 and "--learners" in capsys.readouterr().err


def _fake_run(path, seeds):
    from nte._internal._io import atomic_write_json

    atomic_write_json(path / "config.json", {"training": {"seeds": seeds, "seed": 0}})


def test_a_run_with_fewer_seeds_is_topped_up_not_retrained(tmp_path):
    _fake_run(tmp_path / "nte-w3000", 1)
    args = width_sweep.parser().parse_args(
        ["--widths", "3000", "--many-seeds-up-to", "3000", "--out", str(tmp_path)]
    )
    runs = width_sweep.plan(args)
    assert list(runs) == ["nte-w3000", "nte-w3000-s1", "sgd-w3000", "adam-w3000"]
    base, top = runs["nte-w3000"].training, runs["nte-w3000-s1"].training
    assert (base.seed, base.seeds, top.seed, top.seeds) == (0, 1, 1, 2)
    assert top.out == str(tmp_path / "nte-w3000-s1")
    assert runs["nte-w3000-s1"].learner == runs["nte-w3000"].learner
    assert runs["sgd-w3000"].training.seeds == 3  # nothing on disk: one run of all seeds


def test_rows_merge_a_cell_in_seed_order(tmp_path, monkeypatch):
    from experiments import _protocol

    _fake_run(tmp_path / "nte-w3000", 1)
    args = width_sweep.parser().parse_args(
        ["--widths", "3000", "--many-seeds-up-to", "3000", "--learners", "nte",
         "--out", str(tmp_path)]
    )  # fmt: skip
    runs = width_sweep.plan(args)

    def metrics(first_by_seed, sps):
        R = [[[0.9, 0, 0], [0.8, 0.9, 0], [f, 0.8, 0.9]] for f in first_by_seed]
        n = len(first_by_seed)
        return {"R": {"per_seed": R}, "ACC": {"per_seed": [0.7] * n},
                "BWT": {"per_seed": [-0.1] * n}, "steps_per_second": sps}  # fmt: skip

    got = {"nte-w3000-s1": metrics([0.62, 0.63], 2.0), "nte-w3000": metrics([0.61], 4.0)}
    monkeypatch.setattr(_protocol, "finished", lambda r: {k: got[k] for k in r if k in got})
    r = width_sweep.rows(runs)[("nte", 3000)]
    np.testing.assert_allclose(r["first"], [0.61, 0.62, 0.63])
    np.testing.assert_allclose(r["peak"], [0.9, 0.9, 0.9])
    assert len(r["ACC"]) == len(r["BWT"]) == 3
    assert r["ms_per_step"] == pytest.approx(250.0)  # the seed-0 run's


def test_plot_caption_names_the_range_of_seed_counts():
    from experiments import _plots

    assert _plots._seeds(1) == "1 seed"
    assert _plots._seeds(3, 3) == "3 seeds"
    assert _plots._seeds(1, 3) == "1–3 seeds"  # widths above --many-seeds-up-to have one
