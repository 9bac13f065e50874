"""Expert log-likelihoods L_i = η Σ_b log(1 − β s_i g_{b,i}), and the methods that compute them.

[`nte.expert_log_likelihoods`][] takes a method object in the Diffrax style:
[`nte.likelihood.Vmap`][], [`nte.likelihood.Chunked`][], [`nte.likelihood.Series`][],
[`nte.likelihood.Auto`][] (the default) and [`nte.likelihood.Sharded`][], all
[`nte.likelihood.AbstractMethod`][]s.
"""

from ._auto import Auto as Auto
from ._base import AbstractMethod as AbstractMethod, ExpertLogLikelihoods as ExpertLogLikelihoods
from ._chunked import Chunked as Chunked
from ._compute import expert_log_likelihoods as expert_log_likelihoods
from ._series import Series as Series
from ._sharded import (
    Sharded as Sharded,
    sharded_expert_log_likelihoods as sharded_expert_log_likelihoods,
)
from ._vmap import Vmap as Vmap
