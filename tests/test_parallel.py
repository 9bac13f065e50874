"""Data parallelism (nte/_distributed.py, nte/likelihood/_sharded.py, nte/continual/_parallel.py).

Forced CPU devices must be configured before JAX starts, so every multi-device check runs in a
subprocess (tests/_parallel_worker.py) with `XLA_FLAGS=--xla_force_host_platform_device_count`;
this process keeps its single CPU device. Tolerances: float32 sums over a batch split over
devices are added in a different order than on one device, so parameters after training agree
to ~1e-6 relative (asserted: atol 1e-5 + rtol 1e-4 after four steps); accuracies are counts of
correct predictions and agree exactly unless a logit tie flips (asserted: 1e-6).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import nte
from nte._distributed import parse_mesh

pytestmark = pytest.mark.slow  # subprocesses / end-to-end runs

WORKER = Path(__file__).with_name("_parallel_worker.py")
TIMEOUT = 240  # seconds per subprocess; about 20-40 s on an idle 2-core machine
PARAMS_TOL = dict(rtol=1e-4, atol=1e-5)


def _env(devices: int) -> dict:
    env = dict(os.environ)
    flags = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()  # kept: the test session's flags (tests/conftest.py)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _worker(tmp_path_factory, devices: int, *args: str) -> dict:
    out = tmp_path_factory.mktemp("parallel") / "out.json"
    cmd = [sys.executable, str(WORKER), *args, str(out)]
    proc = subprocess.run(cmd, env=_env(devices), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def sgd_runs(tmp_path_factory):
    return _worker(tmp_path_factory, 4, "local", "sgd")


@pytest.fixture(scope="module")
def nte_runs(tmp_path_factory):
    return _worker(tmp_path_factory, 4, "local", "nte")


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    return _worker(tmp_path_factory, 4, "checks")


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["steps"] == b["steps"] == 4  # per seed: 2 tasks x 2 steps
    np.testing.assert_allclose(a["R"], b["R"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["params"], b["params"], **PARAMS_TOL)


@pytest.mark.parametrize("learner", ["sgd", "nte"])
def test_four_devices_match_one(learner, request):
    runs = request.getfixturevalue(f"{learner}_runs")
    one, four = runs["1"], runs["4"]
    _assert_same_run(four, one)
    assert np.all(np.isfinite(one["params"]))
    # the run trained something: R is a valid accuracy matrix and not all equal
    R = np.asarray(one["R"])
    assert R.shape == (2, 2, 2) and np.all((R >= 0) & (R <= 1))


def test_sharded_log_likelihoods_sum_of_shards(checks):
    for name in ("floor-0.05", "cap-0.05"):
        v = checks["loglik"][name]
        one, quarters, sharded = (np.asarray(v[k]) for k in ("one", "quarters", "sharded"))
        assert np.all(np.isfinite(one))
        # per-shard sums (computed one quarter at a time) add up to the one-device value
        np.testing.assert_allclose(quarters, one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sharded, one, rtol=1e-5, atol=1e-6)
        assert v["beta_sharded"] == pytest.approx(v["beta_one"])
        assert v["invalid_sharded"] == v["invalid_one"] == 0


def test_sharded_log_likelihoods_capped_beta_is_global(checks):
    # β = 40 makes some experts invalid: the cap must use the largest β s g of the whole batch
    v = checks["loglik"]["cap-40.0"]
    one, sharded = np.asarray(v["one"]), np.asarray(v["sharded"])
    assert v["beta_one"] < 40.0
    assert v["beta_sharded"] == pytest.approx(v["beta_one"], rel=1e-6)
    np.testing.assert_allclose(sharded, one, rtol=1e-4, atol=1e-5)
    # summed over shards: at least the one-device count, and nonzero exactly when it is
    assert v["invalid_sharded"] >= v["invalid_one"] > 0


def test_indivisible_batch_and_seeds_raise(checks):
    assert "`batch_size` (30)" in checks["error_batch"]
    assert "'data' mesh axis (4)" in checks["error_batch"]
    assert "`seeds` (3)" in checks["error_seeds"]
    assert "'seed' mesh axis (2)" in checks["error_seeds"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree(tmp_path, sgd_runs, nte_runs):
    port = _free_port()
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "dist", str(i), str(port), str(outs[i])],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-4000:]
    results = [json.loads(o.read_text()) for o in outs]
    assert [r["process"] for r in results] == [0, 1]
    assert [r["main"] for r in results] == [True, False]
    assert (tmp_path / "out0" / "checkpoint" / "state.eqx").is_file()
    assert not (tmp_path / "out1").exists()  # process 1 wrote nothing
    # each process holds only its slice of the training set: half the rows each, disjoint
    held = [set(r["rows"]["held"]) for r in results]
    total = results[0]["rows"]["total"]
    assert all(r["rows"]["values_match"] for r in results)
    assert not held[0] & held[1] and len(held[0] | held[1]) == total
    assert all(len(h) == total // 2 for h in held)
    for learner, reference in (("sgd", sgd_runs["1"]), ("nte", nte_runs["1"])):
        a, b = results[0][learner], results[1][learner]
        assert a["R"] == b["R"] and a["params"] == b["params"]  # both processes agree exactly
        _assert_same_run(a, reference)  # and with one device, up to reduction order


@pytest.mark.parametrize(
    "spec, sizes",
    [
        (None, {"seed": 1, "data": None}),
        ("data=4", {"seed": 1, "data": 4}),
        ("seed=2, data=2", {"seed": 2, "data": 2}),
        ({"seed": 3}, {"seed": 3, "data": 1}),
    ],
)
def test_parse_mesh(spec, sizes):
    assert parse_mesh(spec) == sizes


@pytest.mark.parametrize("spec", ["data", "data=0", "model=2", "data=2,data=2", {"x": 1}])
def test_parse_mesh_rejects(spec):
    with pytest.raises(ValueError, match="mesh"):
        parse_mesh(spec)


def test_make_mesh_single_device():
    mesh = nte.make_mesh()
    assert mesh.axis_names == ("seed", "data")
    assert mesh.devices.size == len(jax.devices())
    with pytest.raises(ValueError, match="devices"):
        nte.make_mesh("data=64")
    with pytest.raises(ValueError, match="devices"):
        nte.make_mesh(devices=0)


def test_initialize_distributed_arguments():
    assert nte.initialize_distributed() is False  # nothing asked for: a single process
    with pytest.raises(ValueError, match="num_processes"):
        nte.initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match="process_id"):
        nte.initialize_distributed("127.0.0.1:1234", 2, 5)
    with pytest.raises(ValueError, match="coordinator"):
        nte.initialize_distributed("localhost", 2, 0)
