"""`Sharded`: a method with the batch split over a device-mesh axis, then a `psum`."""

from typing import Any

import equinox as eqx
import jax
from jax.sharding import Mesh, PartitionSpec as P

from .._distributed import DATA_AXIS, axis_size, check_divisible
from ._base import AbstractMethod, Batch, ExpertLogLikelihoods, Part, apply_policy
from ._compute import expert_log_likelihoods
from ._names import as_method


class Sharded(AbstractMethod):
    """Another method, on the batch split over a device-mesh axis.

    L_i = η Σ_b log(1 − β s_i g_{b,i}) is a sum over examples, so each device computes the
    parts of its `batch / devices` examples with `method` (inside `jax.shard_map`) and the sums
    are added across devices (`jax.lax.psum`). Equal to the single-device value up to float
    reduction order:

    - `invalid="floor"` / `"raise"`: L is a plain sum over examples, so the psum is exact.
    - `invalid="cap"`: β is capped by the largest β s g of the WHOLE batch: each shard's cap
      is combined with `pmin`, and the shards compute their sums at that common β.
    - `num_invalid` is summed over shards: a parameter that is invalid on k shards counts k
      times (it is 0 exactly when the single-device count is 0).
    - [`nte.likelihood.Auto`][] picks series or exact sums per layer from a bound computed on
      each shard, so shards may pick differently from one device; both are accurate to float
      precision.

    Without a mesh (neither `mesh` nor one set by `jax.set_mesh`), or if the mesh axis has
    size 1, this is `method` itself. Under `jax.vmap` use `spmd_axis_name` for the vmapped
    axis (as the harness does with `"seed"`).

    **Arguments:**

    - `method`: the method on each shard (an [`nte.likelihood.AbstractMethod`][] or its name;
      default [`nte.likelihood.Auto`][]).
    - `mesh`: the device mesh (default: the mesh set with `jax.set_mesh`).
    - `axis_name`: the mesh axis that splits the batch (default `"data"`). The batch size must
      be divisible by its size.
    """

    method: AbstractMethod = eqx.field(default="auto", converter=as_method)
    mesh: Mesh | None = eqx.field(default=None, static=True)
    axis_name: str = eqx.field(default=DATA_AXIS, static=True)

    def parts(self, batch: Batch) -> list[Part]:
        return self.method.parts(batch)  # of one shard

    def check(self, batch_size: int) -> None:
        self.method.check(batch_size)
        check_divisible(batch_size, self.axis_name, "batch_size", self.mesh)

    def compute(self, batch: Batch, beta, eta, invalid: str) -> ExpertLogLikelihoods:
        if axis_size(self.axis_name, self.mesh) == 1:
            return self.method.compute(batch, beta, eta, invalid)
        arrays, static = eqx.partition((batch.params, batch.signs, beta, eta), eqx.is_array)

        def local(arrays, x, y):
            params, signs, beta, eta = eqx.combine(arrays, static)
            shard = batch._replace(params=params, signs=signs, x=x, y=y)
            parts = self.method.parts(shard)
            return apply_policy(parts, params, beta, eta, invalid, axis_name=self.axis_name)

        spec = P(self.axis_name)
        return jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(P(), spec, spec),
            out_specs=P(),
            check_vma=False,  # the per-shard code mixes invariant and varying loop carries
        )(arrays, batch.x, batch.y)


def sharded_expert_log_likelihoods(
    *args: Any,
    method: Any = "auto",
    mesh: Mesh | None = None,
    axis_name: str = DATA_AXIS,
    **kwargs: Any,
) -> ExpertLogLikelihoods:
    """[`nte.expert_log_likelihoods`][] with `method=nte.likelihood.Sharded(method, mesh,
    axis_name)`: the batch split over a device-mesh axis (see [`nte.likelihood.Sharded`][]).

    **Arguments:** as for [`nte.expert_log_likelihoods`][], and `mesh`, `axis_name` as for
    [`nte.likelihood.Sharded`][].

    **Returns:**

    An [`nte.ExpertLogLikelihoods`][], replicated on every device.
    """
    sharded = Sharded(method, mesh, axis_name)
    return expert_log_likelihoods(*args, method=sharded, **kwargs)
