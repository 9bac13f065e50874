"""Continual-learning metrics from the accuracy matrix
([maths: continual-learning metrics](../math.md#continual-learning-metrics))."""

from typing import Any, NamedTuple

import numpy as np


class Metrics(NamedTuple):
    """Continual-learning metrics; every field has the leading (e.g. seed) axes of `R`.

    **Fields:**

    - `acc`: average accuracy `A_T = mean_j R[T, j]`.
    - `bwt`: backward transfer `mean_{j<T} (R[T, j] − R[j, j])` (nan when `T = 1`).
    - `fwt`: forward transfer `mean_{j>1} (R[j−1, j] − b_j)` (nan when `T = 1`).
    - `forgetting`: `[..., T − 1]`, `forgetting_j = max_{t<T} R[t, j] − R[T, j]` for `j < T`.
    - `mean_forgetting`: the mean of `forgetting` over tasks (nan when `T = 1`).
    """

    acc: np.ndarray
    bwt: np.ndarray
    fwt: np.ndarray
    forgetting: np.ndarray
    mean_forgetting: np.ndarray


def _mean(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], np.nan)
    return np.asarray(np.mean(x, axis=-1))


def metrics(R: Any, baseline: Any) -> Metrics:
    """Average accuracy, backward/forward transfer and forgetting of an accuracy matrix.

    With tasks numbered `1..T` (code: `0..T−1`) and `R[t, j]` the accuracy on task `j` after
    training task `t` ([maths: continual-learning metrics](../math.md#continual-learning-metrics)):

    ```
    A_T          = mean_j R[T, j]
    BWT          = mean_{j<T} (R[T, j] − R[j, j])
    FWT          = mean_{j>1} (R[j−1, j] − b_j)        b_j: accuracy of the untrained model
    forgetting_j = max_{t<T} R[t, j] − R[T, j]          for j < T
    ```

    **Arguments:**

    - `R`: `[..., T, T]` accuracies (leading axes, e.g. seeds, are kept).
    - `baseline`: `[..., T]` accuracies `b_j` of the untrained model on each task.

    **Returns:**

    A [`nte.continual.Metrics`][] of numpy arrays.
    """
    R = np.asarray(R, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if R.ndim < 2 or R.shape[-1] != R.shape[-2] or R.shape[-1] == 0:
        raise ValueError(f"`R` must have shape [..., T, T] with T >= 1, got {R.shape}.")
    T = R.shape[-1]
    if b.shape != R.shape[:-1]:
        raise ValueError(f"`baseline` must have shape {R.shape[:-1]} ([..., T]), got {b.shape}.")
    last = R[..., T - 1, :]
    diag = np.diagonal(R, axis1=-2, axis2=-1)
    above = np.stack([R[..., j - 1, j] for j in range(1, T)], -1) if T > 1 else last[..., :0]
    forgetting = np.max(R[..., : T - 1, : T - 1], axis=-2) - last[..., : T - 1] if T > 1 else above
    return Metrics(
        acc=np.asarray(np.mean(last, axis=-1)),
        bwt=_mean(last[..., : T - 1] - diag[..., : T - 1]),
        fwt=_mean(above - b[..., 1:]),
        forgetting=forgetting,
        mean_forgetting=_mean(forgetting),
    )
