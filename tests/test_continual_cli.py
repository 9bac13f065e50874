import argparse
import dataclasses
import json

import numpy as np
import pytest

import nte
from experiments import _plots, _reading, continual as cli
from nte import continual
from nte.continual import _cli


def test_flags_parse_into_the_configs_they_name():
    argv = "--learner nte,sgd --tasks 4 --width 8 --depth 1 --epochs 2 --batch-size 16 "
    argv += "--seeds 2 --beta 0.2 --eta 0.5 --max-delta none --lr 0.3 --momentum 0.9 "
    argv += "--scenario task --no-progress --mesh data=1 --devices 1 --out OUT"
    p = cli.parser()
    runs = continual.configs_from_args(p.parse_args(argv.split()), parser=p)
    assert list(runs) == ["nte", "sgd"]
    nte_cfg, sgd_cfg = runs["nte"], runs["sgd"]
    assert nte_cfg.learner == continual.NTEConfig(beta=0.2, eta=0.5, max_delta=None)
    assert sgd_cfg.learner == continual.SGDConfig(lr=0.3, momentum=0.9)
    expected = continual.Config(
        data=continual.DataConfig(tasks=4, scenario="task"),
        model=continual.ModelConfig(width=8, depth=1),
        learner=continual.SGDConfig(lr=0.3, momentum=0.9),
        training=continual.TrainingConfig(
            epochs=2, batch_size=16, seeds=2, progress=False, out="OUT/sgd"
        ),  # fmt: skip
        devices=continual.DevicesConfig(devices=1, mesh="data=1"),
    )
    assert sgd_cfg == expected
    assert nte_cfg.data == sgd_cfg.data and nte_cfg.training.out == "OUT/nte"


def test_cli_defaults_are_the_config_defaults():
    runs = continual.configs_from_args([])
    assert list(runs) == ["nte", "sgd"]
    for name, config in runs.items():
        assert config == continual.Config(learner=name, out=f"runs/continual/{name}")


def test_cli_round_trip_through_config_json():
    argv = "--learner hypernetwork --hidden 8,4 --lr 0.01".split()
    (config,) = continual.configs_from_args(argv).values()
    assert config.learner.hidden == (8, 4) and config.learner.lr == 0.01
    assert continual.Config.from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize(
    "argv, match",
    [
        ("--tasks zero", "argument --tasks: invalid int value: 'zero'"),
        ("--tasks 0", "--tasks must be an int >= 1, got 0"),
        ("--learner sgd --beta 0.1", "--beta: a flag of none of the chosen learners (sgd)"),
        ("--learner nope", "argument --learner: nope: expected comma-separated names"),
        ("--learner nte,foo", "argument --learner: foo:"),
        ("--learner sgd --momentum 1.5", "--momentum must be a finite number >= 0.0 and < 1.0"),
        ("--scenario nope", "argument --scenario: invalid choice: 'nope'"),
        ("--source nope", "argument --source: invalid choice: 'nope'"),
        ("--learner sgd --learner-kwargs {bad", "argument --learner-kwargs: not JSON"),
        ("--learner sgd --learner-kwargs [1]", "expected a JSON object"),
        ('--learner sgd --learner-kwargs {"zzz":1}', "--zzz: a flag of none of the chosen"),
        ("--learner hypernetwork --hidden a,b", "argument --hidden: invalid"),
        ("--mesh bad", "--mesh must look like"),
        ("--devices 0", "--devices must be an int >= 1 or None, got 0"),
        ("--learner nte --invalid nope", "argument --invalid: invalid choice"),
        ("--dataset nope", "--dataset must be one of digits, mnist, fashion_mnist, kmnist"),
        ("--dataset mnist --source sklearn", "--source 'sklearn' does not provide 'mnist'"),
        ("--mesh seed=64 --seeds 64", "--mesh {'seed': 64, 'data': 1} needs 64 devices"),
    ],
)
def test_bad_flags_are_one_line_errors_before_any_work(argv, match, capsys, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the flags were checked")

    monkeypatch.setattr(nte.data, "load", no_data)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli.main(argv.split() + ["--no-progress", "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("usage: python -m experiments.continual")
    assert err[1].startswith("python -m experiments.continual: error: ")
    assert match in err[1]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.dest != "help"}


def test_every_flag_has_help_and_the_help_shows_defaults_and_choices():
    p = cli.parser()
    for dest, action in _actions(p).items():
        assert action.help and action.help.strip(), dest
    text = p.format_help()
    for section in ("data", "model", "training", "devices", "learner nte", "learner sgd"):
        assert f"\n{section}:\n" in text
    for name in continual.available_learners():
        assert f"\nlearner {name}:\n" in text
    flat = " ".join(text.split())
    assert "--seed-mode {auto,vmap,map}" in flat and "--parameterization {standard,ntk}" in flat
    assert "--scenario {permuted,task,domain,class}" in flat
    assert (
        "--invalid {cap,floor,raise,prune}" in flat and "--source {auto,sklearn,idx,tfds}" in flat
    )
    assert "passes over each task (default: 2)" in flat  # the main job's own default
    assert "(default: nte 0.01)" in flat  # --beta: the main job's
    assert "sgd 0.01" in flat and "ewc 0.05" in flat  # --lr: the main job's, or the learner's
    assert "Flags of --learner adam (its defaults): --lr 0.001 --b1 0.9 --b2 0.99" in flat


def test_every_section_flag_defaults_to_the_python_config_default():
    actions = _actions(continual.parser())
    for section, cls in continual._config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name == "out":
                assert actions["out"].default == _cli.OUT
                continue
            assert actions[f.name].default == f.default, (section, f.name)
    assert actions["learner"].default == _cli.LEARNERS


def test_the_main_job_defaults_are_the_papers_protocol_and_flags_still_win():
    runs = continual.configs_from_args([], parser=cli.parser())
    assert list(runs) == ["nte", "sgd", "adam"]
    for name, config in runs.items():
        mine = cli.LEARNER_DEFAULTS[name]
        out = f"runs/continual/{name}"
        assert config == continual.Config(learner=name, out=out, **cli.DEFAULTS, **mine)
    assert runs["adam"].learner.b2 == 0.99 and runs["nte"].learner.max_delta == 0.1
    argv = "--learner sgd,adam,ewc --lr 0.2 --width 8".split()
    runs = continual.configs_from_args(argv, parser=cli.parser())
    assert [c.learner.lr for c in runs.values()] == [0.2, 0.2, 0.2]  # a given flag applies to all
    assert runs["adam"].learner.b2 == 0.99 and runs["ewc"].model.width == 8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"defaults": {"widht": 3}}, "`defaults`: not fields of a Config section: widht"),
        ({"learner_defaults": {"sgdd": {}}}, "`learner_defaults`: 'sgdd' is not a learner"),
        ({"learner_defaults": {"sgd": {"beta": 1.0}}}, "`beta` is not a hyperparameter"),
        ({"learner_defaults": {"sgd": {"lr": -1.0}}}, "`lr`"),
    ],
)
def test_parser_overrides_are_checked_when_the_parser_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        continual.parser(**kwargs)


@pytest.mark.parametrize("name", continual.available_learners())
def test_each_learner_gets_its_python_defaults(name):
    (config,) = continual.configs_from_args(["--learner", name, "--out", "X"]).values()
    assert config == continual.Config(learner=name, out=f"X/{name}")
    assert config.learner == type(continual.learner_config(name))()


def test_configs_from_args_is_the_public_generator():
    p = continual.parser(prog="python -m experiments.mine", learners="adam", out="o")
    assert p.prog == "python -m experiments.mine"
    runs = continual.configs_from_args(["--lr", "0.01", "--tasks", "2"], parser=p)
    assert runs == {"adam": continual.Config(learner="adam", lr=0.01, tasks=2, out="o/adam")}
    with pytest.raises(SystemExit) as info:
        continual.configs_from_args(["--tasks", "-1"], parser=p)
    assert info.value.code == 2


def test_table_explains_its_columns_and_prints_the_settings():
    runs = {"sgd": continual.Config(learner="sgd", tasks=2, seeds=2, width=8)}
    stat = {"mean": 0.5, "std": 0.1}
    summary = {k: stat for k in cli.STATS} | {"steps_per_second": 10.0, "wall_time_s": 1.0}
    text = cli.table({"sgd": {"summary": summary}}, runs)
    lines = text.splitlines()
    assert (
        lines[0] == "settings: permuted-digits, 2 tasks, MLP 2×8, 3 epoch(s), batch 32, 2 seed(s)"
    )
    assert lines[1].split()[:5] == ["learner", "ACC", "BWT", "FWT", "forgetting"]
    assert lines[2].startswith("sgd") and lines[2].count("0.500 ± 0.100") == 4
    assert lines[3] == "sgd: lr=0.05, momentum=0.0, nesterov=False, reset_momentum=False"
    legend = " ".join(lines[4:])
    assert legend.startswith("ACC: mean final accuracy") and legend.endswith("std over seeds.")
    for word in ("BWT: backward transfer", "FWT: forward transfer", "forgetting:"):
        assert word in legend


def test_plots_have_integer_task_ticks_the_settings_and_an_error_bar_caption(monkeypatch):
    figures = []
    monkeypatch.setattr(_plots, "_save", lambda fig, path: figures.append(fig))
    R = np.random.default_rng(0).uniform(size=(3, 4, 4))
    _plots.per_task_accuracy(R, None, "sgd: settings")
    _plots.compare({"a": R, "b": R}, None, "settings")
    _plots.accuracy_matrix(R, None, "sgd: settings")
    for fig in figures[:2]:
        (ax,) = fig.axes
        assert list(ax.get_xticks()) == [1, 2, 3, 4]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
        assert "settings" in ax.get_title()
        assert [t.get_text() for t in fig.texts] == ["points: mean, error bars: std over 3 seeds"]
    assert [t.get_text() for t in figures[2].texts] == ["cells: mean over 3 seeds"]


@pytest.mark.slow
def test_cli_writes_config_metrics_and_plots(tmp_path, capsys):
    argv = "--tasks 2 --width 8 --depth 1 --learner sgd --seeds 2 --epochs 1 --lr 0.1 "
    argv += f"--out {tmp_path}"
    overview = cli.main(argv.split())
    printed = capsys.readouterr()
    assert "sgd task 1/2" in printed.err and "sgd task 2/2" in printed.err  # the progress bars
    assert "settings: permuted-digits, 2 tasks, MLP 1×8, 1 epoch(s)" in printed.out
    assert "ACC: mean final accuracy over tasks" in printed.out
    folder = tmp_path / "sgd"
    config = continual.Config.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.data.tasks == 2 and config.training.seeds == 2
    assert config.training.out == str(folder) and config.learner == continual.SGDConfig(lr=0.1)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert np.asarray(metrics["R"]["per_seed"]).shape == (2, 2, 2)
    assert metrics["finished"] and metrics["steps_per_second"] > 0
    for key in ("ACC", "BWT", "FWT", "forgetting", "wall_time_s"):
        assert key in metrics
    R = np.asarray(metrics["R"]["per_seed"])
    np.testing.assert_allclose(metrics["ACC"]["mean"], R[:, -1].mean(), rtol=1e-6)
    for png in ("accuracy_matrix.png", "per_task_accuracy.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "comparison.png").exists() and "sgd" in overview


def test_claims_plan_covers_both_claims(tmp_path):
    from experiments import claims

    args = claims.parser().parse_args(["--widths", "100,400", "--out", str(tmp_path)])
    args.widths = [100, 400]
    runs = claims.plan(args)
    momenta = sorted(c.learner.momentum for n, c in runs.items() if n.startswith("a-"))
    assert momenta == [0.0, 0.9, 0.99]
    b = {(c.learner.name, c.model.width) for n, c in runs.items() if n.startswith("b-")}
    assert b == {(k, w) for k in ("sgd", "adam", "nte") for w in (100, 400)}
    for c in runs.values():
        assert (c.data.dataset, c.data.tasks) == ("fashion_mnist", 5)
        assert (c.training.epochs, c.training.seeds) == (1, 3)
        assert c.training.out.startswith(str(tmp_path))


def test_claims_observations_mark_ties_within_one_std():
    from experiments import claims

    first = {m: None for m in claims.MOMENTA}
    acc = {
        "nte": {2000: np.array([0.76, 0.77, 0.78])},
        "sgd": {2000: np.array([0.765, 0.77, 0.775])},
        "adam": {2000: np.array([0.60, 0.61, 0.62])},
    }
    (line,) = claims._observations(first, acc)
    assert "width 2000" in line
    assert "nte (0.770) ≈ sgd (0.770) > adam (0.610)" in line


def _R(first_after: list[float], peak: float = 0.9, tasks: int = 3) -> np.ndarray:
    """An accuracy matrix per seed with the given first-task accuracy after all tasks."""
    R = np.full((len(first_after), tasks, tasks), peak)
    R[:, -1, 0] = first_after
    return R


def _results(**first: list[float]) -> dict:
    out = {}
    for name, after in first.items():
        R = _R(after)
        bwt = (R[:, -1, :-1] - np.diagonal(R, axis1=1, axis2=2)[:, :-1]).mean(-1)
        out[name] = {"R": R, "finished": True, "summary": {"BWT": {"per_seed": bwt.tolist()}}}
    return out


def test_reading_judges_nte_against_sgd_by_the_seed_spread():
    ahead = _reading.reading(_results(nte=[0.8, 0.81, 0.79], sgd=[0.6, 0.61, 0.59]), 2048)
    assert "first-task accuracy after 3 tasks" in ahead and "NTE 0.800 ± 0.008" in ahead
    assert "+0.200 (beyond the seed spread" in " ".join(ahead.split())
    assert "NTE retains it better than SGD" in " ".join(ahead.split())
    assert "forgets less than SGD is shown by this run" in " ".join(ahead.split())
    tie = " ".join(_reading.reading(_results(nte=[0.6, 0.7], sgd=[0.65, 0.66]), 64).split())
    assert "no difference beyond the seed spread" in tie and "is not shown by this run" in tie
    behind = " ".join(_reading.reading(_results(nte=[0.3, 0.31], sgd=[0.6, 0.61]), 64).split())
    assert "NTE retains it worse than SGD" in behind and "is not shown" in behind
    one = " ".join(_reading.reading(_results(nte=[0.7], sgd=[0.6]), 64).split())
    assert "one seed, no spread to judge by" in one and "is not shown" in one


def test_reading_checks_that_adam_forgets_the_most_and_skips_unfinished_runs():
    text = _results(nte=[0.6, 0.62], sgd=[0.6, 0.61], adam=[0.3, 0.31])
    flat = " ".join(_reading.reading(text, 64).split())
    assert "Adam -0.298" in flat and "the claim that Adam forgets the most holds here" in flat
    text = _results(sgd=[0.2, 0.21], adam=[0.5, 0.51])
    assert "forgets the most does not hold here" in " ".join(_reading.reading(text, 64).split())
    assert _reading.reading({"sgd": {"finished": False, "summary": {}}}, 64) == ""
