"""`Auto`: the series where it converges fast, the exact pass elsewhere."""

from typing import ClassVar

import equinox as eqx
from jaxtyping import Array

from ._chunked import check_chunk_size
from ._layers import AbstractTappedMethod
from ._series import series_or_exact


class Auto(AbstractTappedMethod):
    """[`nte.likelihood.Series`][] with adaptive orders where U < `max_bound` = 0.5 (float
    precision in at most ~20 orders in float32), the exact [`nte.likelihood.Chunked`][] pass
    elsewhere; the default method.

    See [maths: the likelihood methods](../math.md#likelihood-methods).

    **Arguments:**

    - `chunk_size`: as for [`nte.likelihood.Chunked`][].
    """

    chunk_size: int | None = eqx.field(default=None, static=True)
    max_bound: ClassVar[float] = 0.5
    """The series is used where U < `max_bound`."""

    def __check_init__(self):
        check_chunk_size(self.chunk_size)

    def weight_stats(self, D: Array, A: Array, s: Array, beta):
        return series_or_exact(D, A, s, beta, None, self.max_bound)
