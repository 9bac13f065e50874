"""The permuted-task pruning comparison: its plan and its report of finished runs."""

import json

import numpy as np

from experiments import pruning_forgetting as pf


def _args(tmp_path, *argv):
    base = ["--dataset", "digits", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.md")]
    return pf.parser().parse_args([*base, *argv])


def test_plan_puts_every_learner_on_the_same_tasks(tmp_path):
    runs = pf.plan(_args(tmp_path))
    assert list(runs) == ["sgd", *(f"nte-tau{t}" for t in pf.TAUS),
                          *(f"magnitude-{s}" for s in pf.TARGETS), "prune_only"]  # fmt: skip
    data = {(c.data, c.model, c.training.seeds, c.training.batch_size) for c in runs.values()}
    assert len(data) == 1
    c = runs["nte-tau8e-06"]
    assert (c.model.depth, c.model.use_bias, c.data.tasks, c.training.epochs) == (1, False, 5, 1)
    assert (c.learner.prune_below, c.learner.beta) == (8e-6, 0.03)
    m = runs["magnitude-0.9"].learner
    assert m.target_sparsity == 0.9 and m.end_step == int(0.75 * 5 * (1201 // 128))
    assert runs["prune_only"].learner.rate == 0.01


def test_report_reads_sparsity_per_task_end_and_marks_missing_runs(tmp_path):
    args = _args(tmp_path, "--tasks", "2", "--taus", "1e-3", "--targets", "0.5")
    runs = pf.plan(args)
    R = np.array([[[0.9, 0.1], [0.6, 0.8]], [[0.8, 0.1], [0.4, 0.7]]])
    obs = [{"kind": "task_end", "task": t, "step": 9 * (t + 1), "sparsity": [s, s + 0.1]}
           for t, s in enumerate((0.2, 0.5))]  # fmt: skip
    metrics = {"finished": True, "R": {"per_seed": R.tolist()}, "ACC": {"per_seed": [0.7, 0.55]},
               "BWT": {"per_seed": [-0.3, -0.4]}, "steps_per_second": 5.0}  # fmt: skip
    metrics["observations"] = obs
    out = tmp_path / "o" / "nte-tau0.001"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(metrics))
    text = pf.report(args, runs, "CMD")
    row = next(line for line in text.splitlines() if line.startswith("| nte-tau0.001"))
    assert row.split(" | ")[1:3] == ["0.250", "0.550"]  # mean over seeds per task end
    assert "0.500 ± 0.100" in row and "0.850 ± 0.050" in row  # first task after all, peak
    assert (
        "| sgd | not run |" in text and (tmp_path / "results" / "pruning_forgetting.png").exists()
    )
