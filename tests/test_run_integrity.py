"""Runs that never lie (issue 18): divergence, degenerate runs, verified resumes, write discipline.

Library runs are in-process; the command line is run in-process (`cli.main`) except where the
exit status or a second process is the point.
"""

import dataclasses
import errno
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import numpy as np
import pytest

import nte
from experiments import continual as cli
from nte import continual
from nte._internal._lock import FolderLockedError
from nte.continual import _checkpoint as ckpt

BASE = continual.Config(
    dataset="digits", tasks=2, width=16, depth=1, batch_size=32, lr=0.1, learner="sgd",
    progress=False, epochs=1, seeds=1,
)  # fmt: skip
# SGD with lr 1e6 on a 2-hidden-layer MLP: NaN parameters within the first task.
DIVERGING = dataclasses.replace(BASE, depth=2, lr=1e6)
TINY = "--tasks 2 --width 16 --depth 1 --epochs 1 --seeds 1 --no-progress"


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


def _params(tree):
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))


def _cli(argv: str, out) -> dict:
    overview = cli.main(f"{argv} {TINY} --out {out}".split())
    return overview


def _stamp(path):
    return path.read_bytes(), path.stat().st_mtime_ns


# ------------------------------------------------------------------ divergence, degenerate runs


@pytest.mark.parametrize(
    "kw, name",
    [({"lr": math.inf}, "lr"), ({"learner": "nte", "beta": math.nan}, "beta"),
     ({"learner": "nte", "eta": math.inf}, "eta"), ({"learner": "nte", "max_delta": math.inf},
     "max_delta"), ({"learner": "adam", "lr": -math.inf}, "lr")],
)  # fmt: skip
def test_non_finite_hyperparameters_are_refused(kw, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be a finite number"):
        continual.Config(**{"learner": "sgd", **kw})


def test_non_finite_flag_is_refused_by_the_cli(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main("--learner sgd --lr inf --no-progress".split())
    assert info.value.code == 2 and "--lr must be a finite number" in capsys.readouterr().err


def test_divergence_stops_the_run_at_the_first_non_finite_chunk(digits):
    config = dataclasses.replace(DIVERGING, checkpoint_every=1)  # one step per chunk
    with pytest.warns(RuntimeWarning, match="diverged"):
        r = continual.run(config, dataset=digits)
    assert r.status == "diverged" and not r.finished
    task, step = r.diverged_at
    assert task == 0 and r.steps == step  # stopped at once: no further step was trained
    assert np.isnan(r.R).all() and np.isnan(r.metrics.acc).all()
    s = r.summary()
    assert s["status"] == "diverged" and s["diverged_at"] == {"task": 0, "step": step}
    assert s["ACC"]["mean"] is None and s["R"]["per_seed"] == [[[None] * 2] * 2]
    assert "diverged" in s["warnings"][0] and f"steps {step - 1} and {step}" in s["warnings"][0]
    # Reference: the same run stopped one step earlier is still finite everywhere.
    before = continual.run(dataclasses.replace(config, stop_after_steps=step - 1), dataset=digits)
    assert before.status == "stopped" and before.warnings == []
    assert all(np.isfinite(p).all() for p in _params(before.state))


@pytest.mark.slow
def test_divergence_is_recorded_with_null_accuracies_and_exit_status_1(tmp_path):
    argv = "--learner sgd --lr 1e6 --tasks 2 --width 16 --depth 2 --epochs 1 --seeds 1 "
    argv += f"--no-progress --out {tmp_path}"
    proc = subprocess.run([sys.executable, "-m", "experiments.continual", *argv.split()],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert sum("diverged" in ln.lower() for ln in proc.stdout.splitlines()) == 2  # note, table
    m = json.loads((tmp_path / "sgd" / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["diverged_at"]["task"] == 0 and not m["finished"]
    assert m["ACC"]["mean"] is None and m["BWT"]["mean"] is None
    assert all(v is None for row in m["R"]["per_seed"][0] for v in row)


def test_a_diverging_learner_does_not_stop_the_others(tmp_path, capsys):
    runs = {
        "sgd": dataclasses.replace(DIVERGING, out=str(tmp_path / "sgd")),
        "adam": dataclasses.replace(BASE, learner="adam", out=str(tmp_path / "adam")),
    }
    results = cli.run_all(runs, write=True)
    assert results["sgd"]["summary"]["status"] == "diverged"
    assert results["adam"]["summary"]["status"] == "complete"
    assert cli.exit_code({n: r["summary"] for n, r in results.items()}) == 1
    assert "warning: sgd: diverged" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw, what",
    # max_delta = 1e-30 is below what θ + (Δ' − θ) can resolve in float32, so the increments
    # land every weight exactly on 0: the posterior-pruning rule then counts them as pruned.
    [({"learner": "nte", "max_delta": 1e-30, "width": 8, "batch_size": 64}, "exactly zero"),
     ({"learner": "nte", "eta": 1e6, "width": 8, "batch_size": 64}, "exactly zero")],
)  # fmt: skip
def test_a_degenerate_run_is_warned_about(digits, kw, what):
    config = dataclasses.replace(BASE, tasks=1, **kw)
    with pytest.warns(RuntimeWarning, match=what):
        r = continual.run(config, dataset=digits)
    flat = np.concatenate([np.ravel(p) for p in _params(r.state.model)])
    clip = kw.get("max_delta") if what == "max_delta clip" else None
    fraction = (
        np.mean(np.abs(flat) >= np.float32(clip) * (1 - 1e-6)) if clip else np.mean(flat == 0)
    )
    assert fraction > 0.99  # an independent count on the final weights
    (note,) = r.warnings
    assert what in note and f"{100 * fraction:.2f}%" in note
    assert r.summary()["warnings"] == [note] and r.status == "complete"


def test_a_healthy_run_has_no_warnings(digits):
    r = continual.run(BASE, dataset=digits)
    assert r.status == "complete" and r.warnings == [] and r.diverged_at is None


# ------------------------------------------------------------------ verified resumes


def test_a_flipped_byte_is_refused_naming_the_file_and_the_others_still_run(tmp_path, capsys):
    cli.main(f"--learner sgd,adam --stop-after-steps 10 {TINY} --out {tmp_path}".split())
    state = tmp_path / "sgd" / "checkpoint" / ckpt.STATE_FILE
    data = bytearray(state.read_bytes())
    data[len(data) // 3] ^= 0x10
    state.write_bytes(bytes(data))
    metrics = _stamp(tmp_path / "sgd" / "metrics.json")
    capsys.readouterr()
    overview = _cli("--learner sgd,adam", tmp_path)
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error: sgd:")]
    assert str(state) in line and "corrupt" in line and "--overwrite" in line
    assert overview["sgd"]["status"] == "error" and overview["adam"]["status"] == "complete"
    assert cli.exit_code(overview) == 1 and "Traceback" not in err
    assert _stamp(tmp_path / "sgd" / "metrics.json") == metrics


def test_a_config_swap_is_refused_naming_the_field(digits, tmp_path):
    config = dataclasses.replace(BASE, out=str(tmp_path), stop_after_steps=5)
    continual.run(config, dataset=digits)
    recorded = tmp_path / "checkpoint" / ckpt.CONFIG_FILE
    recorded.unlink()  # only the checkpoint's own trailer knows the config now
    written = _stamp(tmp_path / "config.json")
    with pytest.raises(ckpt.CheckpointError, match=r"learner\.lr: 0\.1 -> 0\.2") as info:
        continual.run(dataclasses.replace(config, lr=0.2), dataset=digits)
    assert str(tmp_path / "checkpoint" / ckpt.STATE_FILE) in str(info.value)
    # Nothing was written by the refused run: no record of lr 0.2 anywhere.
    assert not recorded.exists() and _stamp(tmp_path / "config.json") == written


# ------------------------------------------------------------------ write discipline


def test_finished_metrics_are_never_rewritten_unless_overwrite(tmp_path, capsys):
    _cli("--learner sgd --lr 0.1", tmp_path)
    folder = tmp_path / "sgd"
    metrics = _stamp(folder / "metrics.json")
    capsys.readouterr()
    overview = _cli("--learner sgd --lr 0.1", tmp_path)  # a plain rerun: not retrained
    assert f"already complete: {folder} (use --overwrite to retrain)" in capsys.readouterr().out
    assert _stamp(folder / "metrics.json") == metrics and cli.exit_code(overview) == 0
    overview = _cli("--learner sgd --lr 0.2", tmp_path)  # another config: refused
    err = capsys.readouterr().err
    assert "learner.lr: 0.1 -> 0.2" in err and "--overwrite" in err
    assert _stamp(folder / "metrics.json") == metrics and cli.exit_code(overview) == 1
    assert json.loads((folder / "config.json").read_text())["learner"]["lr"] == 0.1
    overview = _cli("--learner sgd --lr 0.2 --overwrite", tmp_path)  # retrained
    new = json.loads((folder / "metrics.json").read_text())
    old = json.loads(metrics[0])
    assert cli.exit_code(overview) == 0 and new["status"] == "complete"
    assert json.loads((folder / "config.json").read_text())["learner"]["lr"] == 0.2
    assert new["R"]["per_seed"] != old["R"]["per_seed"]  # trained again, with lr 0.2


_HOLDER = """
import sys, time
from nte._internal._lock import FolderLock
with FolderLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_fails_fast_naming_the_holder(digits, tmp_path, capsys):
    folder = tmp_path / "sgd"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        with pytest.raises(FolderLockedError, match=f"PID {proc.pid}"):
            continual.run(dataclasses.replace(BASE, out=str(folder)), dataset=digits)
        assert time.perf_counter() - start < 2.0
        overview = _cli("--learner sgd", tmp_path)
        assert overview["sgd"]["status"] == "error" and cli.exit_code(overview) == 1
        assert f"PID {proc.pid}" in capsys.readouterr().err
        assert not (folder / "config.json").exists()  # nothing written
    finally:
        proc.kill()
        proc.wait()


def test_orphan_temporaries_are_removed_at_start(digits, tmp_path):
    (tmp_path / "checkpoint").mkdir()
    orphans = [tmp_path / "checkpoint" / ".state.eqx.tmp4242", tmp_path / ".metrics.json.tmp7"]
    for path in orphans:
        path.write_bytes(b"torn")
    keep = tmp_path / ".notes.tmpx"  # not a writer's temporary (no pid): kept
    keep.write_text("mine")
    r = continual.run(dataclasses.replace(BASE, out=str(tmp_path), stop_after_steps=3),
                      dataset=digits)  # fmt: skip
    assert r.status == "stopped"
    assert not any(p.exists() for p in orphans) and keep.read_text() == "mine"


def test_timings_accumulate_across_resumes(digits, tmp_path):
    config = dataclasses.replace(BASE, out=str(tmp_path))
    part = continual.run(dataclasses.replace(config, stop_after_steps=20), dataset=digits)
    full = continual.run(config, dataset=digits)
    assert full.status == "complete" and full.steps > part.steps == 20
    assert full.train_time > part.train_time > 0 and full.wall_time > part.wall_time
    assert full.steps_per_second == pytest.approx(full.steps / full.train_time, rel=1e-12)
    again = continual.run(config, dataset=digits)  # finished: nothing to train
    assert again.train_time == full.train_time and again.steps == full.steps
    assert again.steps_per_second == full.steps_per_second > 0


def test_a_failed_save_names_the_file_and_why(tmp_path, capsys, monkeypatch):
    class FullDisk(io.BytesIO):  # a file on a full disk: every write fails
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    hashing = ckpt._Hashing.__init__
    monkeypatch.setattr(ckpt._Hashing, "__init__", lambda h, f: hashing(h, FullDisk()))
    overview = _cli("--learner sgd", tmp_path)
    err = capsys.readouterr().err
    path = tmp_path / "sgd" / "checkpoint" / ckpt.STATE_FILE
    assert f"error: sgd: [Errno {errno.ENOSPC}] could not write {path}: No space left" in err
    assert "Traceback" not in err and cli.exit_code(overview) == 1
    assert not (tmp_path / "sgd" / "metrics.json").exists()


# ------------------------------------------------------------------ kills at random moments

_KILLED_RUN = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np, equinox as eqx, jax
    from nte._internal import _io
    from nte.continual import _checkpoint as ckpt
    from nte import continual

    out, at, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, write = [0], _io.atomic_write

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def atomic_write(path, fn, *, binary):  # SIGKILL inside the `at`-th atomic write
        count[0] += 1
        if count[0] != at:
            return write(path, fn, binary=binary)
        if phase == "torn":  # part of the bytes in the temporary file
            return write(path, lambda f: (f.write(b"x" * 64 if binary else "x"), f.flush(), die()),
                         binary=binary)
        if phase == "written":  # the temporary file complete, not yet moved into place
            return write(path, lambda f: (fn(f), f.flush(), os.fsync(f.fileno()), die()),
                         binary=binary)
        write(path, fn, binary=binary)  # "moved": in place, the next file not yet written
        die()

    _io.atomic_write = ckpt.atomic_write = atomic_write
    config = continual.Config(
        dataset="digits", tasks=3, width=32, depth=1, batch_size=32, lr=0.1, learner="sgd",
        momentum=0.5, progress=False, epochs=1, seeds=1, eval_every=20, checkpoint_every=7,
        out=out, compile_cache=sys.argv[4],
    )
    r = continual.run(config)
    leaves = jax.tree_util.tree_leaves(eqx.filter(r.state, eqx.is_inexact_array))
    np.savez(os.path.join(out, "result.npz"), R=r.R, baseline=r.baseline, history=r.history,
             **{f"p{i}": v for i, v in enumerate(leaves)})
""")


def _segment(out, cache, at=0, phase="none", delay=None):
    cmd = [sys.executable, "-c", _KILLED_RUN, str(out), str(at), phase, str(cache)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=delay if delay is not None else 600)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err.decode(), time.perf_counter() - start


def _kill_points(n: int, seed: int, seconds: float):
    """`n` kill points: SIGKILL inside the k-th atomic write of a segment (torn, written, moved),
    or from outside at a random moment of a segment that lasts `seconds` uninterrupted.

    The reference run makes 56 atomic writes. A kill in one of the first 4 writes of each
    segment lets a resumed run advance by at most ~4 writes, so even 10 kills in a row land
    before the run finishes; a timed kill is drawn inside the uninterrupted segment's duration.
    """
    rng = np.random.default_rng(seed)
    phases = ["torn", "written", "moved", "time"]
    drawn = phases[: min(n, 3)] + list(rng.choice(phases, max(n - 3, 0)))
    return [
        (0, "time", float(rng.uniform(0.2, 0.9) * seconds))
        if phase == "time"
        else (int(rng.integers(1, 5)), str(phase), None)
        for phase in drawn
    ]


KILLS = [pytest.param(3, id="3-kills"), pytest.param(10, id="10-kills", marks=pytest.mark.slow)]


@pytest.mark.slow
@pytest.mark.parametrize("kills", KILLS)
def test_random_kills_including_mid_save_give_identical_results(tmp_path, kills):
    cache = tmp_path / "xla"
    rc, err, _ = _segment(tmp_path / "reference", cache)  # fills the compile cache
    assert rc == 0, err
    rc, err, seconds = _segment(tmp_path / "timing", cache)  # a warm uninterrupted segment
    assert rc == 0, err
    for at, phase, delay in _kill_points(kills, seed=kills, seconds=seconds):
        rc, err, _ = _segment(tmp_path / "killed", cache, at, phase, delay)
        # SIGKILL, or (a timed kill only) the segment finished just before its moment
        assert rc == -9 or (rc == 0 and phase == "time"), (phase, at, rc, err)
        if rc == -9 and phase in ("torn", "written"):
            assert _orphans(tmp_path / "killed")  # killed mid-save: its temporary is left...
    rc, err, _ = _segment(tmp_path / "killed", cache)
    assert rc == 0, err
    assert _orphans(tmp_path / "killed") == []  # ...and removed by the next run
    ref = np.load(tmp_path / "reference" / "result.npz")
    got = np.load(tmp_path / "killed" / "result.npz")
    assert sorted(ref.files) == sorted(got.files)
    for name in ref.files:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def _orphans(folder):
    from nte._internal._io import orphan_temporaries

    return orphan_temporaries(folder)
