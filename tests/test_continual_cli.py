import dataclasses
import json

import numpy as np

from experiments import continual as cli
from nte import continual

REQUIRED = (
    "dataset source tasks scenario learner width depth epochs batch-size lr momentum beta eta "
)
REQUIRED += "max-delta seeds out"


def test_every_config_field_is_a_flag():
    flags = {a.dest for a in cli.parser()._actions} - {"help"} - set(cli._scale.FLAGS)
    assert flags == {f.name for f in dataclasses.fields(continual.Config)}
    for name in REQUIRED.split():
        args = cli.parser().parse_args([f"--{name}", "none" if name == "max-delta" else "1"])
        assert hasattr(args, name.replace("-", "_"))
    args = cli.parser().parse_args(["--max-delta", "0.1", "--learner-kwargs", '{"nesterov": true}'])
    assert args.max_delta == 0.1 and args.learner_kwargs == {"nesterov": True}


def test_cli_writes_config_metrics_and_plots(tmp_path):
    argv = "--tasks 2 --width 8 --depth 1 --learner sgd --seeds 2 --epochs 1 --lr 0.1 "
    argv += f"--out {tmp_path} --no-progress"
    overview = cli.main(argv.split())
    folder = tmp_path / "sgd"
    config = continual.Config.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.tasks == 2 and config.seeds == 2 and config.out == str(folder)
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
    momenta = sorted(c.momentum for n, c in runs.items() if n.startswith("a-"))
    assert momenta == [0.0, 0.9, 0.99]
    b = {(c.learner, c.width) for n, c in runs.items() if n.startswith("b-")}
    assert b == {(k, w) for k in ("sgd", "adam", "nte") for w in (100, 400)}
    for c in runs.values():
        assert (c.dataset, c.tasks, c.epochs, c.seeds) == ("fashion_mnist", 5, 1, 3)
        assert c.out.startswith(str(tmp_path))


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
