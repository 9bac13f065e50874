"""The paper sweeps' plans follow the authors' protocol; the selection and reports are right."""

import numpy as np
import pytest

from experiments import _protocol, paper_sweeps


def _args(tmp_path, *argv):
    args = paper_sweeps.parser().parse_args([*argv, "--out", str(tmp_path / "o"),
                                             "--report", str(tmp_path / "r.md"),
                                             "--reference-out", str(tmp_path / "ref")])  # fmt: skip
    return paper_sweeps.resolve(args)


def _protocol_ok(c, width=1000):
    assert (c.data.tasks, c.data.scenario, c.data.permute_first) == (5, "permuted", True)
    assert (c.training.epochs, c.training.batch_size, c.model.depth, c.model.width) == (
        2, 128, 2, width,
    )  # fmt: skip


def test_momentum_plan_keeps_and_resets_the_buffer(tmp_path):
    runs = paper_sweeps.plan_momentum(_args(tmp_path, "momentum"))
    assert len(runs) == 11 and "sgd-m0.0-reset" not in runs
    for name, c in runs.items():
        _protocol_ok(c)
        assert c.learner.lr == 0.01 and c.learner.reset_momentum == name.endswith("-reset")
        assert f"sgd-m{c.learner.momentum}" in name
    assert {c.learner.momentum for c in runs.values()} == set(paper_sweeps.MOMENTA)


def test_beta_eta_plan_is_the_grid_with_the_authors_other_settings(tmp_path):
    runs = paper_sweeps.plan_beta_eta(_args(tmp_path, "beta-eta", "--width", "300"))
    pairs = {(c.learner.beta, c.learner.eta) for c in runs.values()}
    assert pairs == {(b, e) for b in paper_sweeps.BETAS for e in paper_sweeps.ETAS}
    for c in runs.values():
        _protocol_ok(c, 300)
        assert (c.learner.max_delta, c.learner.renormalize) == (0.1, True)


def test_selection_runs_task_one_on_the_validation_split_and_ties_keep_the_authors(tmp_path):
    args = _args(tmp_path, "fair-lr", "--seeds", "3")
    runs = paper_sweeps.plan_select(args)
    for c in runs.values():
        assert (c.data.tasks, c.data.validation, c.training.seeds) == (1, 0.1, 1)
    score = lambda v: {"peak": np.array([v])}  # noqa: E731
    scores = (0.1, 0.5, 0.7, 0.7, 0.2, 0.1, 0.0)
    got = {f"select-sgd-lr{v}": score(s) for v, s in zip(paper_sweeps.GRIDS["sgd"][1], scores)}
    got |= {f"select-nte-beta{v}": score(0.3) for v in paper_sweeps.GRIDS["nte"][1]}
    best = paper_sweeps.chosen(args, got)
    assert best == {"sgd": 0.01, "nte": 0.01}  # both ties include the authors' value
    got["select-sgd-lr0.03"] = score(0.8)
    assert paper_sweeps.chosen(args, got)["sgd"] == 0.03  # adam: not all runs finished
    fair = paper_sweeps.plan_fair(args, {"sgd": 0.03, "nte": 0.01})
    assert fair["reference-sgd"].training.out == str(tmp_path / "ref" / "sgd-w1000")
    assert fair["fair-nte"].training.out == str(tmp_path / "ref" / "nte-w1000")  # the same run
    assert fair["fair-sgd"].learner.lr == 0.03 and fair["fair-sgd"].training.seeds == 3
    assert fair["fair-sgd"].data.validation == 0.0 and "fair-adam" not in fair
    assert (
        fair["reference-adam"].learner
        == _protocol.config("adam", args, width=1000, seeds=3, out=tmp_path).learner
    )


def _metrics(first, peak):
    R = np.zeros((len(first), 2, 2))
    R[:, 0, 0], R[:, 1, 0] = peak, first
    return _protocol.first_task({"R": {"per_seed": R.tolist()},
                                 "ACC": {"per_seed": list(first)}, "BWT": {"per_seed": list(first)},
                                 "steps_per_second": 10.0})  # fmt: skip


@pytest.mark.parametrize("sweep", paper_sweeps.SWEEPS)
def test_reports_show_finished_runs_and_mark_the_missing(tmp_path, sweep):
    from experiments import _sweep_reports

    args = _args(tmp_path, sweep)
    runs = {"momentum": paper_sweeps.plan_momentum, "beta-eta": paper_sweeps.plan_beta_eta,
            "fair-lr": paper_sweeps.plan_select}[sweep](args)  # fmt: skip
    first = next(iter(runs))
    got = {first: _metrics([0.5, 0.7], [0.9, 0.9])}
    _sweep_reports.write(args, "CMD", runs, got, {})
    text = (tmp_path / "r.md").read_text()
    key = f"paper_sweeps_{sweep.replace('-', '_')}_w{args.width}"
    assert f"<!-- {key}:begin -->" in text and "CMD" in text
    assert "not run" in text
    if sweep == "fair-lr":
        assert "0.900" in text  # the selection accuracy is the peak (task 1 on validation)
    else:
        assert "0.600 ± 0.100" in text or "0.600" in text
        assert (tmp_path / "results").is_dir() and any((tmp_path / "results").iterdir())


def test_a_diverged_selection_run_is_the_worst_value_and_reported_as_such(tmp_path):
    from experiments import _sweep_reports

    args = _args(tmp_path, "fair-lr")
    runs = paper_sweeps.plan_select(args)
    got = {name: {"peak": np.array([0.5])} for name in runs}
    got["select-adam-lr3e-05"] = {"peak": np.array([np.nan])}  # NaN: the worst
    got["select-adam-lr0.0001"] = {"peak": np.array([0.4])}
    got["select-adam-lr0.003"] = {"diverged": True}
    got["select-adam-lr0.001"] = {"peak": np.array([0.45])}
    got["select-adam-lr0.0003"] = {"peak": np.array([0.6])}
    assert paper_sweeps.chosen(args, got)["adam"] == 0.0003
    got["select-adam-lr0.0003"] = {"diverged": True}
    assert paper_sweeps.chosen(args, got)["adam"] == 0.001
    every = {k: ({"diverged": True} if "adam" in k else v) for k, v in got.items()}
    assert "adam" not in paper_sweeps.chosen(args, every)  # all diverged: none chosen
    _sweep_reports.write(args, "CMD", runs, got, {"reference-adam": {"diverged": True}})
    text = (tmp_path / "r.md").read_text()
    assert "| adam | lr = 0.003 | diverged |" in text
    assert "| adam | authors' | lr = 0.001 | diverged |" in text


def test_printed_command_drops_the_flags_that_do_not_change_results():
    argv = ["fair-lr", "--width", "10000", "--stop-after-steps", "20", "--no-progress",
            "--report-only", "--stop-after-steps=5", "--seeds", "1"]  # fmt: skip
    assert _protocol.command("experiments.paper_sweeps", argv) == (
        "python -m experiments.paper_sweeps fair-lr --width 10000 --seeds 1"
    )


@pytest.mark.parametrize("text", ["", "10,x", "0,10", ","])
def test_width_lists_must_be_positive_integers(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="integers >= 1"):
        _protocol.int_list(text)
    assert _protocol.int_list("10, 3000") == [10, 3000]


def test_each_width_keeps_its_own_section(tmp_path):
    from experiments import _sweep_reports

    for width in (300, 1000):
        args = _args(tmp_path, "beta-eta", "--width", str(width))
        runs = paper_sweeps.plan_beta_eta(args)
        _sweep_reports.write(args, f"CMD-{width}", runs, {}, {})
    text = (tmp_path / "r.md").read_text()
    for width in (300, 1000):
        assert text.count(f"<!-- paper_sweeps_beta_eta_w{width}:begin -->") == 1
        assert f"CMD-{width}" in text
