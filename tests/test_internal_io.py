"""Tests of `nte/_internal/_io.py`: atomic writes, JSON, orphaned temporaries."""

import json
import os

import numpy as np
import pytest

from nte._internal import _io


def test_text_json_and_bytes_round_trip(tmp_path):
    _io.atomic_write_text(tmp_path / "a" / "t.txt", "hello")
    assert (tmp_path / "a" / "t.txt").read_text() == "hello"
    _io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    obj = {"b": [1, 2.5], "a": np.float32(0.5), "n": np.arange(3)}
    _io.atomic_write_json(tmp_path / "c.json", obj)
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "a": 0.5,
        "b": [1, 2.5],
        "n": [0, 1, 2],
    }
    assert _io.read_json(tmp_path / "c.json")["n"] == [0, 1, 2]
    assert list(tmp_path.rglob(".*tmp*")) == []


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    _io.atomic_write_json(path, {"old": 1})

    def boom(f):
        f.write("partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        _io.atomic_write(path, boom, binary=False)
    assert _io.read_json(path) == {"old": 1}
    assert _io.orphan_temporaries(tmp_path) == []


def test_oserror_names_the_file(tmp_path):
    target = tmp_path / "dir_not_file"
    target.mkdir()
    with pytest.raises(OSError, match="dir_not_file"):
        _io.atomic_write_text(target, "x")  # os.replace onto a directory fails


def test_read_json_names_a_corrupt_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        _io.read_json(tmp_path / "bad.json")


def test_orphan_temporaries_finds_only_writer_leftovers(tmp_path):
    (tmp_path / "sub").mkdir()
    orphan = tmp_path / "sub" / f".state.eqx.tmp{os.getpid() + 1}"
    orphan.write_bytes(b"torn")
    (tmp_path / ".hidden").write_text("user file")
    (tmp_path / "data.tmp").write_text("not ours")
    assert _io.orphan_temporaries(tmp_path) == [orphan]
    assert _io.orphan_temporaries(tmp_path / "missing") == []


def test_atomic_savefig_writes_a_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    _io.atomic_savefig(fig, tmp_path / "f.png", dpi=50)
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
