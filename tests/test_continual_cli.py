import json

import numpy as np
import pytest

from experiments import continual as cli
from nte import continual


def test_flags_parse_into_the_configs_they_name():
    argv = "--learner nte,sgd --tasks 4 --width 8 --depth 1 --epochs 2 --batch-size 16 "
    argv += "--seeds 2 --beta 0.2 --eta 0.5 --max-delta none --lr 0.3 --momentum 0.9 "
    argv += "--scenario task --no-progress --mesh data=1 --devices 1 --out OUT"
    args = vars(cli.parser().parse_args(argv.split()))
    cli._scale.setup(args)
    runs = cli.configs(args)
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
    args = vars(cli.parser().parse_args([]))
    cli._scale.setup(args)
    runs = cli.configs(args)
    assert list(runs) == ["nte", "sgd"]
    for name, config in runs.items():
        assert config == continual.Config(learner=name, out=f"runs/continual/{name}")


def test_cli_round_trip_through_config_json():
    args = vars(cli.parser().parse_args("--learner hypernetwork --hidden 8,4 --lr 0.01".split()))
    cli._scale.setup(args)
    (config,) = cli.configs(args).values()
    assert config.learner.hidden == (8, 4) and config.learner.lr == 0.01
    assert continual.Config.from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize(
    "argv, match",
    [
        ("--tasks zero", "invalid int"),
        ("--learner sgd --beta 0.1", "beta"),  # a flag of no chosen learner
        ("--learner nope", "learner"),
        ("--learner sgd --momentum 1.5", "momentum"),
        ("--scenario nope", "scenario"),
        ("--learner sgd --learner-kwargs {bad", "learner-kwargs"),
    ],
)
def test_bad_flags_fail(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv.split() + ["--no-progress"])
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_cli_writes_config_metrics_and_plots(tmp_path):
    argv = "--tasks 2 --width 8 --depth 1 --learner sgd --seeds 2 --epochs 1 --lr 0.1 "
    argv += f"--out {tmp_path} --no-progress"
    overview = cli.main(argv.split())
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
