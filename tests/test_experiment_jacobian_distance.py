"""`experiments/jacobian_distance.py` end to end on digits: JSON, PNG, resume."""

import json

import numpy as np
import pytest

from experiments import jacobian_distance as script


def test_runs_and_resumes(tmp_path, monkeypatch, capsys):
    argv = ["--dataset", "digits", "--widths", "4", "16", "--seeds", "2", "--epochs", "1",
            "--eval-examples", "8", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    script.main(argv)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "jacobian_distance.png").stat().st_size > 0
    cells = stored["cells"]
    assert [(c["width"], c["seed"]) for c in cells] == [(4, 0), (4, 1), (16, 0), (16, 1)]
    assert all(c["relative_distance"] > 0 and c["steps"] == 9 for c in cells)
    rows = stored["summary"]["per_width"]
    np.testing.assert_allclose(
        rows[0]["mean"], np.mean([c["relative_distance"] for c in cells[:2]]), rtol=1e-12
    )
    expected = np.polyfit(np.log([4, 16]), np.log([r["mean"] for r in rows]), 1)[0]
    np.testing.assert_allclose(stored["summary"]["slope_vs_width"], expected, rtol=1e-12)
    assert "log-log slope vs width" in capsys.readouterr().out

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(script, "run_cell", fail)
    script.main(argv)  # every cell is in results.json: nothing to train
    assert json.loads((tmp_path / "results.json").read_text())["cells"] == cells
    with pytest.raises(SystemExit, match="was written with config"):
        script.main([*argv, "--lr", "0.1"])
