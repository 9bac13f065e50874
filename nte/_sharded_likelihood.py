"""Expert log-likelihoods of a batch split over devices: per-shard sums, then a `psum`.

L_i = η Σ_b log(1 − β s_i g_{b,i}) is a sum over the examples of the batch, so each device can
compute it on its slice of the batch ([`nte.expert_log_likelihoods`][], with its memory-saving
methods) and the slices are added across devices. The per-device memory of the per-example
work then falls with the number of devices.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float, PyTree, Scalar, Shaped

from ._distributed import DATA_AXIS, axis_size, check_divisible
from ._likelihood import ExpertLogLikelihoods, expert_log_likelihoods
from ._per_example import batch_size


def sharded_expert_log_likelihoods(
    loss_fn: Callable[[Any, Any, Any], Scalar],
    model: eqx.Module,
    x: PyTree[Shaped[Array, "_batch ..."]],
    y: PyTree[Shaped[Array, "_batch ..."]],
    *,
    signs: PyTree,
    inv_temperature: float | int | Float[Array, ""],
    eta: float | int | Float[Array, ""] = 1.0,
    invalid: str = "cap",
    mesh: jax.sharding.Mesh | None = None,
    axis_name: str = DATA_AXIS,
    **kwargs: Any,
) -> ExpertLogLikelihoods:
    """[`nte.expert_log_likelihoods`][] with the batch split over a device-mesh axis.

    Each device computes the sums of its `batch / devices` examples with
    `nte.expert_log_likelihoods` (inside `jax.shard_map`); the sums are added across devices
    with `jax.lax.psum`. Equal to the single-device value up to float reduction order:

    - `invalid="floor"` / `"raise"`: L is a plain sum over examples, so the psum is exact.
    - `invalid="cap"`: β must be capped by the largest β s g of the WHOLE batch, so the capped
      β of every shard is combined with `pmin` and, only if some shard capped, every shard
      recomputes its sums at that common β (as the single-device code does in its second pass).
    - `num_invalid` is summed over shards: a parameter that is invalid on k shards counts k
      times (it is 0 exactly when the single-device count is 0).
    - `method="auto"` picks series or chunks per layer from a bound computed on each shard, so
      shards may pick differently from one device; both are accurate to float precision.

    Without a mesh (neither `mesh` nor one set by `jax.set_mesh`), or if the mesh axis has
    size 1, this is exactly `nte.expert_log_likelihoods`. Under `jax.vmap` use
    `spmd_axis_name` for the vmapped axis (as the harness does with `"seed"`).

    **Arguments:**

    - `loss_fn`, `model`, `x`, `y`, `signs`, `inv_temperature`, `eta`, `invalid` and the
      keyword arguments `kwargs` (`method`, `chunk_size`, `series_terms`, `filter_spec`): as for
      [`nte.expert_log_likelihoods`][].
    - `mesh`: the device mesh (default: the mesh set with `jax.set_mesh`).
    - `axis_name`: the mesh axis that splits the batch (default `"data"`). The batch size must
      be divisible by its size.

    **Returns:**

    An [`nte.ExpertLogLikelihoods`][], replicated on every device.
    """
    n = axis_size(axis_name, mesh)
    common = dict(signs=signs, inv_temperature=inv_temperature, eta=eta, invalid=invalid)
    if n == 1:
        return expert_log_likelihoods(loss_fn, model, x, y, **common, **kwargs)
    check_divisible(batch_size(x, "x"), axis_name, "batch_size", mesh)
    arrays, static = eqx.partition((model, signs, inv_temperature, eta), eqx.is_array)

    def local(arrays, x, y):
        model, signs, beta, eta = eqx.combine(arrays, static)
        call = lambda b, inv: expert_log_likelihoods(
            loss_fn, model, x, y, signs=signs, inv_temperature=b, eta=eta, invalid=inv, **kwargs
        )
        first = call(beta, invalid)
        loglik, beta_used = first.log_likelihoods, first.inv_temperature
        if invalid == "cap":  # one β for the whole batch: the smallest cap of any shard
            beta_used = jax.lax.pmin(beta_used, axis_name)
            capped = beta_used < jnp.asarray(beta, beta_used.dtype)  # the same on every shard
            again = lambda: call(beta_used, "floor").log_likelihoods
            loglik = jax.lax.cond(capped, again, lambda: first.log_likelihoods)
        loglik = jax.lax.psum(loglik, axis_name)
        num_invalid = jax.lax.psum(first.num_invalid, axis_name)
        return ExpertLogLikelihoods(loglik, num_invalid, beta_used)

    batch_spec = P(axis_name)
    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), batch_spec, batch_spec),
        out_specs=P(),
        check_vma=False,  # the per-shard code mixes invariant and varying loop carries
    )(arrays, x, y)
