"""Tests of `nte/continual/_checkpoint.py` (verified checkpoints) and `nte/_internal/_lock.py`."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nte._internal._lock import FolderLock, FolderLockedError
from nte.continual import _checkpoint as ckpt


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "state": {"w": rng.normal(size=(3, 4)).astype(np.float32), "lam": np.array([-np.inf, 1.0])},
        "R": np.full((2, 2), np.nan, np.float32),  # not-yet-evaluated entries are NaN
        "step": np.array(7, np.int64),
    }


IDENTITY = {"learner": {"name": "sgd", "lr": 0.01}, "tasks": 5}


def _save(folder, tree=None):
    ckpt.save(folder, tree or _tree(), {"task": 1}, identity=IDENTITY)
    return folder / ckpt.STATE_FILE


def _load(folder, identity=IDENTITY):
    return ckpt.load(folder, _tree(1), identity=identity, finite=lambda t: t["state"])


def test_round_trip_is_exact(tmp_path):
    _save(tmp_path)
    out, ref = _load(tmp_path), _tree()
    np.testing.assert_array_equal(out["state"]["w"], ref["state"]["w"])
    np.testing.assert_array_equal(out["state"]["lam"], ref["state"]["lam"])  # −inf kept
    assert np.isnan(out["R"]).all() and int(out["step"]) == 7
    assert ckpt.load(tmp_path / "none", _tree()) is None


@pytest.mark.parametrize("where", [0, 10, -20, -3])
def test_a_flipped_byte_is_refused_naming_the_file(tmp_path, where):
    path = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="corrupt") as info:
        _load(tmp_path)
    assert str(path) in str(info.value) and "--overwrite" in str(info.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ckpt.CheckpointError, match="corrupt") as info:
        _load(tmp_path)
    assert str(path) in str(info.value)


def test_other_config_is_refused_naming_the_field(tmp_path):
    _save(tmp_path)
    other = {"learner": {"name": "sgd", "lr": 0.2}, "tasks": 5}
    with pytest.raises(ckpt.CheckpointError, match=r"learner\.lr: 0\.01 -> 0\.2"):
        _load(tmp_path, identity=other)


def test_other_structure_is_refused(tmp_path):
    _save(tmp_path)
    like = _tree()
    like["state"]["w"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ckpt.CheckpointError, match="structure"):
        ckpt.load(tmp_path, like, identity=IDENTITY)


def test_nan_in_the_state_is_refused(tmp_path):
    tree = _tree()
    tree["state"]["w"][1, 2] = np.nan
    _save(tmp_path, tree)
    with pytest.raises(ckpt.CheckpointError, match=r"NaN or \+inf.*'w'"):
        _load(tmp_path)


def test_check_config_names_the_differences(tmp_path):
    ckpt.check_config(tmp_path, IDENTITY)  # nothing recorded: fine, and writes nothing
    assert not (tmp_path / ckpt.CONFIG_FILE).exists()
    ckpt.write_config(tmp_path, IDENTITY)
    ckpt.check_config(tmp_path, IDENTITY)  # same: fine
    with pytest.raises(ckpt.CheckpointError, match=r"tasks: 5 -> 3"):
        ckpt.check_config(tmp_path, {**IDENTITY, "tasks": 3})
    assert ckpt.differences({"a": 1}, {"b": 1}) == ["a: 1 -> '<absent>'", "b: '<absent>' -> 1"]


def test_lock_excludes_a_second_holder_in_process_and_across_processes(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(FolderLockedError, match="in use"):
            FolderLock(tmp_path).__enter__()
    with FolderLock(tmp_path):  # released: can be taken again
        pass
    holder = textwrap.dedent(f"""
        import time
        from nte._internal._lock import FolderLock
        with FolderLock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        with pytest.raises(FolderLockedError, match=f"PID {proc.pid}"):
            FolderLock(tmp_path).__enter__()
        assert time.perf_counter() - start < 1.0  # fails fast, never waits
    finally:
        proc.kill()
        proc.wait()
    with FolderLock(tmp_path):  # a killed holder leaves no stale lock
        pass


def test_a_field_added_since_the_checkpoint_counts_only_at_its_default(tmp_path):
    from nte import continual

    identity = ckpt._json(continual.Config(learner="sgd", tasks=2).identity())
    older = {**identity, "data": {k: v for k, v in identity["data"].items() if k != "validation"}}
    ckpt.write_config(tmp_path, older)  # written before DataConfig had `validation`
    ckpt.check_config(tmp_path, identity)  # validation=0.0, its default: the same run
    moved = continual.Config(learner="sgd", tasks=2, validation=0.1).identity()
    with pytest.raises(ckpt.CheckpointError, match=r"data.validation: '<absent>' -> 0.1"):
        ckpt.check_config(tmp_path, moved)
    with pytest.raises(ckpt.CheckpointError, match=r"data.tasks: 2 -> 3"):
        ckpt.check_config(tmp_path, continual.Config(learner="sgd", tasks=3).identity())


def test_a_state_file_written_before_a_field_existed_loads_at_its_default(tmp_path):
    from nte import continual

    identity = ckpt._json(continual.Config(learner="sgd", tasks=2).identity())
    older = {**identity, "data": {k: v for k, v in identity["data"].items() if k != "validation"}}
    ckpt.save(tmp_path, _tree(), {"task": 1}, identity=older)
    got = ckpt.load(tmp_path, _tree(1), identity=identity, finite=lambda t: t["state"])
    np.testing.assert_array_equal(got["state"]["w"], _tree()["state"]["w"])
    moved = continual.Config(learner="sgd", tasks=2, validation=0.1).identity()
    with pytest.raises(ckpt.CheckpointError, match=r"data.validation: '<absent>' -> 0.1"):
        ckpt.load(tmp_path, _tree(1), identity=moved, finite=lambda t: t["state"])
