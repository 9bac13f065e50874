"""Subprocess worker for tests/test_parallel.py (forced CPU devices must be set before JAX loads).

Usage (each writes its results as JSON to OUT.json; N forced CPU devices set with
XLA_FLAGS=--xla_force_host_platform_device_count=N):

    python tests/_parallel_worker.py local sgd OUT.json    (N=4) `sgd`/`nte` on 1 and 4 devices
    python tests/_parallel_worker.py checks OUT.json       (N=4) sharded NTE log-likelihoods and
                                                           errors for indivisible batches/seeds
    python tests/_parallel_worker.py dist ID PORT OUT.json (N=2) process ID of a two-process
                                                           `jax.distributed` run on 127.0.0.1
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `nte`


def _dataset():
    import nte

    full = nte.data.load("digits")
    return nte.data.Dataset(
        "digits-small",
        np.asarray(full.x_train[:192]),
        np.asarray(full.y_train[:192]),
        np.asarray(full.x_test[:96]),
        np.asarray(full.y_test[:96]),
        full.num_classes,
        "test",
    )


def _config(learner, **kw):
    from nte.continual import Config

    # 192 training examples per task in batches of 96: two steps per task, four in all
    base = dict(dataset="digits", tasks=2, width=16, depth=1, batch_size=96, learner=learner)
    base.update({"lr": 0.1} if learner == "sgd" else {"beta": 0.05})
    base.update(progress=False, epochs=1, seeds=1)
    return Config(**{**base, **kw})


def _params(result) -> list[float]:
    import equinox as eqx
    import jax

    leaves = jax.tree_util.tree_leaves(eqx.filter(result.state.model, eqx.is_inexact_array))
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in leaves]).tolist()


def _run(learner, data, **kw) -> dict:
    from nte.continual import run

    result = run(_config(learner, **kw), dataset=data)
    return {"R": result.R.tolist(), "params": _params(result), "steps": result.steps}


def _loglik() -> dict:
    """Per-shard sums (a loop over the 4 quarters of the batch) vs one device vs shard_map."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import nte
    from nte.continual import cross_entropy

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    model = nte.nn.MLP(8, 12, 2, 5, key=k1)
    x = jax.random.normal(k2, (16, 8))
    y = (jax.random.randint(k3, (16,), 0, 5), jnp.ones((16, 5), bool))
    signs = nte.sign_mask(nte.split(model)[0])
    mesh = nte.make_mesh("data=4")
    out = {}
    for beta, invalid in ((0.05, "floor"), (0.05, "cap"), (40.0, "cap")):
        kw = dict(signs=signs, inv_temperature=beta, invalid=invalid, method="chunked")
        one = nte.expert_log_likelihoods(cross_entropy, model, x, y, **kw)
        quarter = lambda a, i: jax.tree_util.tree_map(lambda v: v[4 * i : 4 * i + 4], a)
        quarters = [
            nte.expert_log_likelihoods(
                cross_entropy, model, quarter(x, i), quarter(y, i), **kw
            ).log_likelihoods
            for i in range(4)
        ]
        summed = jax.tree_util.tree_map(lambda *a: sum(a), *quarters)
        fn = eqx.filter_jit(
            lambda m, x, y, kw=kw: nte.sharded_expert_log_likelihoods(
                cross_entropy, m, x, y, mesh=mesh, **kw
            )
        )
        sharded = fn(model, x, y)
        flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)])
        out[f"{invalid}-{beta}"] = {
            "one": flat(one.log_likelihoods).tolist(),
            "quarters": flat(summed).tolist(),
            "sharded": flat(sharded.log_likelihoods).tolist(),
            "beta_one": float(one.inv_temperature),
            "beta_sharded": float(sharded.inv_temperature),
            "invalid_one": int(one.num_invalid),
            "invalid_sharded": int(sharded.num_invalid),
        }
    return out


def _held_rows(data) -> dict:
    """The training rows this process holds (data=4 over two processes) and their values."""
    from nte import make_mesh
    from nte.continual import _stripes, load_tasks

    tasks = load_tasks(_config("sgd"), data)
    striped = _stripes.StripedData(tasks, 96, make_mesh("data=4"))
    held, ok = [], True
    for shard in striped.x.addressable_shards:
        d = shard.index[0].start
        rows = striped.shard_rows[d]
        held += rows.tolist()
        ok &= bool(np.array_equal(np.asarray(shard.data)[0, : len(rows)], tasks.x_train[rows]))
    return {"held": sorted(set(held)), "values_match": ok, "total": len(tasks.x_train)}


def _error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return ""


def local(learner: str, out: str) -> None:
    """`learner` on 1 and on 4 devices (the 4-device process runs both)."""
    import jax

    assert jax.device_count() == 4, jax.devices()
    data = _dataset()
    results = {n: _run(learner, data, devices=n, seeds=2) for n in (1, 4)}
    Path(out).write_text(json.dumps(results))


def checks(out: str) -> None:
    """Sharded log-likelihoods and the errors for indivisible batch sizes / seeds."""
    from nte.continual import run

    data = _dataset()
    results = {"loglik": _loglik()}
    results["error_batch"] = _error(lambda: run(_config("sgd", batch_size=30), dataset=data))
    results["error_seeds"] = _error(
        lambda: run(_config("sgd", mesh="seed=2,data=2", seeds=3), dataset=data)
    )
    Path(out).write_text(json.dumps(results))


def dist(process_id: int, port: int, out: str) -> None:
    import functools

    from jax._src.lib import _jax

    # Bind gloo's sockets to the loopback interface only (JAX exposes no option for this).
    _jax.make_gloo_tcp_collectives = functools.partial(
        _jax.make_gloo_tcp_collectives, hostname="127.0.0.1"
    )
    import jax

    import nte

    nte.initialize_distributed(
        f"127.0.0.1:{port}", 2, process_id, bind_address=f"127.0.0.1:{port}", timeout=60
    )
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    data = _dataset()
    results = {"process": jax.process_index(), "main": nte.is_main_process()}
    # the batch split across processes; each process names its own `out`: only process 0 writes
    folder = str(Path(out).parent / f"out{process_id}")
    results["sgd"] = _run("sgd", data, mesh="data=4", seeds=2, out=folder)
    results["nte"] = _run("nte", data, mesh="seed=2,data=2", seeds=2)  # seeds across them
    results["rows"] = _held_rows(data)
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "local":
        local(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "checks":
        checks(sys.argv[2])
    elif sys.argv[1] == "dist":
        dist(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
