"""NTK Gram matrices for the predictors: validation, layout and eigendecomposition.

Two kernel layouts are accepted everywhere in `nte.predict`:

- *traced* `[n, n]`: one kernel shared by every output dimension, i.e. the full kernel is taken
  to be `Θ ⊗ I_k` and each output column of `y_train` evolves independently under the same `Θ`;
- *full* `[n, n, k, k]`: `Θ[i, j, a, b] = ⟨∂f_a(x_i)/∂θ, ∂f_b(x_j)/∂θ⟩`, exact for a finite
  network (what `nte.empirical_ntk` returns with `trace=False`).

Internally both are handled as a matrix acting on "rows": the train outputs `[n, k]` for a
traced kernel, the flattened `[n·k, 1]` for a full one.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import check_positive


def is_concrete(x) -> bool:
    """Whether every leaf of `x` has a concrete value (so eager checks can run)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _symmetry_tol(dtype) -> float:
    """Relative asymmetry accepted as rounding: `1000·eps` (1.2e-4 in float32, 2e-13 in float64)."""
    return 1000.0 * float(jnp.finfo(dtype).eps)


class Layout(NamedTuple):
    """Static description of a training kernel: `n` examples, `k` outputs, full or traced."""

    n: int
    k: int | None  # None: traced kernel (any number of outputs)

    @property
    def full(self) -> bool:
        return self.k is not None


def check_kernel(ntk, name: str = "ntk_train_train") -> Layout:
    """Validate a train-train kernel's shape and (when concrete) its symmetry."""
    shape = jnp.shape(ntk)
    if len(shape) == 2 and shape[0] == shape[1]:
        layout = Layout(shape[0], None)
    elif len(shape) == 4 and shape[0] == shape[1] and shape[2] == shape[3]:
        layout = Layout(shape[0], shape[2])
    else:
        raise ValueError(
            f"`{name}` must be a square kernel of shape [n, n] (traced) or [n, n, k, k] (full), "
            f"got shape {tuple(shape)}."
        )
    if not jnp.issubdtype(jnp.result_type(ntk), jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got {jnp.result_type(ntk)}.")
    if is_concrete(ntk):
        mat = np.asarray(to_matrix(ntk, layout))
        scale = float(np.max(np.abs(mat))) if mat.size else 0.0
        asym = float(np.max(np.abs(mat - mat.T))) if mat.size else 0.0
        if not np.isfinite(asym) or asym > _symmetry_tol(mat.dtype) * max(scale, 1e-30):
            raise ValueError(
                f"`{name}` must be symmetric up to rounding; its largest asymmetry is "
                f"{asym:.3g} for entries of size {scale:.3g}."
            )
    return layout


def check_targets(y_train, layout: Layout, name: str = "y_train") -> None:
    """`y_train` must be `[n]` or `[n, k]`, with `k` matching a full kernel."""
    shape = jnp.shape(y_train)
    ok = len(shape) in (1, 2) and shape[0] == layout.n
    if ok and layout.full:
        ok = (shape[1:] or (1,))[0] == layout.k
    if not ok:
        want = f"[{layout.n}, {layout.k}]" if layout.full else f"[{layout.n}] or [{layout.n}, k]"
        raise ValueError(f"`{name}` must have shape {want} to match the kernel, got {shape}.")


def check_like(x, y_train, name: str) -> None:
    """`x` (initial train outputs) must have exactly the shape of `y_train`."""
    if jnp.shape(x) != jnp.shape(y_train):
        raise ValueError(
            f"`{name}` must have the shape of `y_train`, {jnp.shape(y_train)}, got {jnp.shape(x)}."
        )


def check_test(fx_test_0, ntk_test_train, y_train, layout: Layout):
    """Validate the test-side arguments; returns `fx_test_0` (zeros when it is `None`)."""
    if ntk_test_train is None:
        if fx_test_0 is not None:
            raise ValueError("`ntk_test_train` is required to predict test outputs `fx_test_0`.")
        return None
    shape = jnp.shape(ntk_test_train)
    want_ndim = 4 if layout.full else 2
    ok = len(shape) == want_ndim and shape[1] == layout.n
    if ok and layout.full:
        ok = shape[2:] == (layout.k, layout.k)
    if not ok:
        want = f"[m, {layout.n}, {layout.k}, {layout.k}]" if layout.full else f"[m, {layout.n}]"
        raise ValueError(f"`ntk_test_train` must have shape {want}, got {tuple(shape)}.")
    out_shape = (shape[0],) + tuple(jnp.shape(y_train)[1:])
    if fx_test_0 is None:
        return jnp.zeros(out_shape, jnp.result_type(y_train))
    if jnp.shape(fx_test_0) != out_shape:
        raise ValueError(f"`fx_test_0` must have shape {out_shape}, got {jnp.shape(fx_test_0)}.")
    return fx_test_0


def check_times(t, name: str = "t", *, allow_inf: bool = True) -> None:
    """Training times must be >= 0 (and finite unless `allow_inf`); checked when concrete."""
    if not is_concrete(t):
        return
    arr = np.asarray(t, dtype=float)
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError(f"`{name}` must be >= 0 (training time or steps), got {t!r}.")
    if not allow_inf and np.any(np.isinf(arr)):
        raise ValueError(f"`{name}` must be finite for this predictor, got {t!r}.")


def check_learning_rate(learning_rate) -> None:
    check_positive(learning_rate, "learning_rate")


def to_matrix(ntk, layout: Layout) -> Float[Array, "r r"]:
    """The kernel as a square matrix on rows (full kernels flattened to `[n·k, n·k]`)."""
    if not layout.full:
        return jnp.asarray(ntk)
    n, k = layout.n, layout.k
    return jnp.transpose(ntk, (0, 2, 1, 3)).reshape(n * k, n * k)


def to_test_matrix(ntk_test_train, layout: Layout) -> Float[Array, "s r"]:
    if not layout.full:
        return jnp.asarray(ntk_test_train)
    m, n, k = ntk_test_train.shape[0], layout.n, layout.k
    return jnp.transpose(ntk_test_train, (0, 2, 1, 3)).reshape(m * k, n * k)


def to_rows(fx, layout: Layout):
    """Outputs `[n]` / `[n, k]` as the rows the kernel matrix acts on."""
    return jnp.reshape(fx, (-1, 1)) if layout.full else fx


class Eigh(NamedTuple):
    """Eigendecomposition of the symmetrized, regularized kernel matrix.

    `null` marks the eigenvalues `λ ≤ 0`: the dynamics leave those directions unchanged
    (pseudo-inverse convention; exact for a zero eigenvalue, a choice for a negative one).
    """

    evals: Float[Array, " r"]
    evecs: Float[Array, "r r"]
    null: Array


def eigh(ntk, layout: Layout, diag_reg, *, name: str = "ntk_train_train") -> Eigh:
    """One `jnp.linalg.eigh` of `(Θ + Θᵀ)/2 + diag_reg·I`; warns if the smallest eigenvalue ≤ 0."""
    mat = to_matrix(ntk, layout)
    mat = 0.5 * (mat + mat.T) + diag_reg * jnp.eye(mat.shape[0], dtype=mat.dtype)
    evals, evecs = jnp.linalg.eigh(mat)
    if is_concrete(evals) and evals.size and float(evals[0]) <= 0:
        warnings.warn(
            f"`{name}` (+ diag_reg) is not positive definite: its smallest eigenvalue is "
            f"{float(evals[0]):.3g}. Directions with eigenvalue <= 0 are left unchanged by the "
            "dynamics (pseudo-inverse); pass `diag_reg > 0` to regularize.",
            stacklevel=4,
        )
    return Eigh(evals, evecs, evals <= 0)


def spectral_apply(eig: Eigh, coeffs, rows):
    """`V diag(coeffs) Vᵀ rows` for `rows` of shape `[r]` or `[r, c]`."""
    proj = eig.evecs.T @ rows
    scale = coeffs.reshape((-1,) + (1,) * (proj.ndim - 1))
    return eig.evecs @ (scale * proj)


def over_times(fn, t):
    """Evaluate `fn(scalar_t)` at a scalar or every entry of an array of times (stacked first)."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return fn(t)
    flat = jax.vmap(fn)(t.reshape(-1))
    return jax.tree_util.tree_map(lambda a: a.reshape(t.shape + a.shape[1:]), flat)
