"""Every experiment and benchmark script: `--help` runs, names `python -m experiments.<name>` in
its usage, shows defaults, hides internal flags and gives every visible flag a help text."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in [*ROOT.glob("experiments/*.py"), *ROOT.glob("experiments/benchmarks/*.py")]
    if '__name__ == "__main__"' in p.read_text()
)
# One interpreter for all scripts (JAX is imported once): each script's `__main__` with --help.
DRIVER = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv, buf, code = [name, "--help"], io.StringIO(), "no exit"
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
    out[name] = [code, buf.getvalue()]
print("HELP " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, tuple[object, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *SCRIPTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HELP ")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][5:])


def test_the_scripts_are_found():
    assert "experiments.continual" in SCRIPTS and "experiments.benchmarks.nte_step" in SCRIPTS
    assert len(SCRIPTS) >= 15


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs_and_names_the_module(helps, name):
    code, text = helps[name]
    assert code == 0, text
    usage = text.split("\n\n")[0]
    assert usage.startswith(f"usage: python -m {name} "), usage


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_visible_flag_has_help_and_a_default(helps, name):
    # The formatter appends "(default: ...)" only to a non-empty help text, so its presence
    # in a flag's entry shows both.
    _, text = helps[name]
    options = text.split("\noptions:\n", 1)[1]
    entries = [e for e in re.split(r"\n(?=  -)", options) if e.startswith("  --")]
    assert entries, text
    for entry in entries:
        assert "(default:" in " ".join(entry.split()), f"{name}: {entry.split()[0]}"


def test_internal_flags_are_hidden(helps):
    assert "--child" not in helps["experiments.benchmarks.nte_step"][1]
    assert "--worker" not in helps["experiments.benchmarks.ntk"][1]
    assert "--one" not in helps["experiments.benchmarks.scaling"][1]
    assert "main job for now" not in helps["experiments.demo"][1]


def test_descriptions_keep_their_paragraphs(helps):
    text = helps["experiments.continual"][1]
    assert "\n    python -m experiments.continual  " in text  # the indented example lines
    assert "\n\n`--devices N`" in text


def test_scaling_rejects_a_malloc_that_is_not_a_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.scaling",
         "--malloc", str(tmp_path / "x.so")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "--malloc" in proc.stderr and "not a file" in proc.stderr
    assert "learner" not in proc.stdout  # rejected before any configuration is timed


def test_scaling_speedup_line():
    from experiments.benchmarks.scaling import _speedup

    line = _speedup({"step_ms": 30.0}, {"step_ms": 20.0, "malloc": "libtc.so"})
    assert "libtc.so: 1.50x" in line
    assert "failed" in _speedup({"error": "boom"}, {"step_ms": 1.0, "malloc": "m"})
