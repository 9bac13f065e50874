"""`Chunked`: exact sums without the B×N gradient tensor."""

import equinox as eqx
from jaxtyping import Array

from ._kernels import exact_sum
from ._layers import AbstractTappedMethod


def check_chunk_size(chunk_size) -> None:
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive int or None, got {chunk_size!r}.")


class Chunked(AbstractTappedMethod):
    """Exact sums, no truncation, without the B×N per-example gradient tensor.

    For every `eqx.nn.Linear` layer called once per example the per-example weight gradient is
    the outer product g_{b,kj} = δ_{b,k} a_{b,j}; the layer inputs a_b and output signals δ_b
    are read once (memory O(B·width)) and a `lax.scan` over groups of 16 examples adds the
    logs, extra memory O(N). A group whose bound 16·max|β s g| ≤ 1/4 takes one log per
    parameter: log Π_b(1 − u_b), the product accumulated as 1 + v with v ← v − u_b(1 + v)
    (rounding ≈ 32ε·Σ_b|u_b|, like a float sum of the logs); any other group takes every log
    (exact pruning, invalid experts). Biases use their per-example gradient δ_b. The weights
    of every conv layer (`groups=1`) called once per example are exact from its taps too: the
    per-example gradient g_b = Σ_p δ_b[p] P_b[p]ᵀ (P_b[p]: the input patch at output position
    p) of a small group of examples is formed by one einsum and its logs added in a
    `lax.scan` (extra memory O(max(N_layer, 2^18)) per step; Series and Auto use this pass
    for conv weights as well), its bias from Σ_p δ_b[p]. Every other
    leaf uses per-example gradients `chunk_size` examples at a time (the batch is padded with
    masked copies of its first example when it does not divide), extra memory O(chunk·N).

    See [maths: the likelihood methods](../math.md#likelihood-methods).

    **Arguments:**

    - `chunk_size`: examples per chunk of the per-example-gradient passes (the leaves that are
      not weights or biases of a tapped Linear layer); default: about 4M gradient elements
      (at least 1, at most the batch).
    """

    chunk_size: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        check_chunk_size(self.chunk_size)

    def weight_stats(self, D: Array, A: Array, s: Array, beta):
        return exact_sum(D, A, s, beta)
