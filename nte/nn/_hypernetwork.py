"""A chunked hypernetwork that generates all weights of a target network (von Oswald et al. 2020).

The target's parameters (every floating-point array leaf, in `jax.tree_util` order) are
flattened into one vector of `num_weights` entries and cut into `num_chunks =
⌈num_weights / chunk_size⌉` consecutive chunks. Chunk `c` is produced by one small MLP `h` from
the concatenation of a task embedding `e` and a learned chunk embedding `c_c`:

```
w[c · chunk_size + k] = s_leaf(c, k) · h([e, c_c])_k        k = 0 .. chunk_size − 1
```

The last chunk is padded: its outputs at flat positions `>= num_weights` are generated and
discarded, so every target weight is generated exactly once. `s_leaf` is a fixed (not learned)
per-leaf scale, the standard deviation of that leaf in the template network, so that an
initial hypernetwork with unit-variance outputs generates weights of the template's scale (a
simple form of the "hyperfan" initialisation of Chang et al. 2020).
"""

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import check_module
from .._split import merge, split


def _check_int(value: Any, name: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _he_mlp(in_size: int, hidden: tuple[int, ...], out_size: int, key) -> tuple:
    """Linear layers with He-normal weights (ReLU between) and zero biases."""
    sizes = [in_size, *hidden, out_size]
    keys = jr.split(key, len(sizes) - 1)
    layers = []
    for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys)):
        gain = 1.0 if i == len(sizes) - 2 else 2.0
        layer = eqx.nn.Linear(a, b, key=k)
        w = jr.normal(k, (b, a)) * math.sqrt(gain / a)
        layer = eqx.tree_at(lambda lin: (lin.weight, lin.bias), layer, (w, jnp.zeros(b)))
        layers.append(layer)
    return tuple(layers)


class ChunkedHypernetwork(eqx.Module):
    """Generates every parameter of a target network, one chunk at a time, from an embedding.

    `hnet(e)` returns the target network (an `eqx.Module` like `target`) whose parameters are
    `hnet.weights(e)`, a flat vector assembled from `num_chunks` chunks (see the module docs:
    padded last chunk, fixed per-leaf output scales).

    **Arguments:**

    - `target`: a template `eqx.Module` (e.g. an [`nte.nn.MLP`][]); its floating-point arrays
      are generated, everything else is kept.
    - `embedding_size`: the size of the (task) embedding `e` given to `__call__`.
    - `chunk_size`: the number of target weights per chunk (>= 1).
    - `chunk_embedding_size`: the size of each learned chunk embedding (>= 1).
    - `hidden`: the hidden-layer widths of the MLP `h` (ReLU).
    - `key`: a `jax.random` key (keyword-only).

    **Fields:** `layers` (the MLP `h`), `chunk_embeddings` (`[num_chunks,
    chunk_embedding_size]`, initialised `N(0, 1)`), `scales` (the fixed per-leaf output scales,
    `max(std(template leaf), 0.01)`; not trained: use `filter_spec()` to select the trainable
    leaves), and static bookkeeping.
    """

    layers: tuple[eqx.nn.Linear, ...]
    chunk_embeddings: Float[Array, "chunks chunk_embedding_size"]
    scales: Float[Array, " leaves"]
    target_static: Any
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    embedding_size: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    num_weights: int = eqx.field(static=True)

    def __init__(
        self,
        target: eqx.Module,
        embedding_size: int,
        *,
        chunk_size: int,
        chunk_embedding_size: int = 32,
        hidden: Sequence[int] = (100, 100),
        key: PRNGKeyArray,
    ):
        check_module(target, "target")
        _check_int(embedding_size, "embedding_size")
        _check_int(chunk_size, "chunk_size")
        _check_int(chunk_embedding_size, "chunk_embedding_size")
        if not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden` must be a tuple of ints >= 1, got {hidden!r}.")
        params, static = split(target)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if not leaves:
            raise ValueError("`target` has no floating-point parameters to generate.")
        self.num_weights = sum(int(np.prod(p.shape)) for p in leaves)
        n_chunks = math.ceil(self.num_weights / chunk_size)
        ckey, mkey = jr.split(key)
        self.layers = _he_mlp(
            embedding_size + chunk_embedding_size, tuple(hidden), chunk_size, mkey
        )
        self.chunk_embeddings = jr.normal(ckey, (n_chunks, chunk_embedding_size))
        self.target_static = static
        self.treedef = treedef
        self.shapes = tuple(tuple(p.shape) for p in leaves)
        self.scales = jnp.stack([jnp.maximum(jnp.std(p), 1e-2) for p in leaves])
        self.embedding_size = embedding_size
        self.chunk_size = chunk_size

    @property
    def num_chunks(self) -> int:
        """`⌈num_weights / chunk_size⌉`."""
        return self.chunk_embeddings.shape[0]

    def _h(self, z):
        for i, layer in enumerate(self.layers):
            z = layer(z)
            if i < len(self.layers) - 1:
                z = jax.nn.relu(z)
        return z

    def chunks(self, embedding: Float[Array, " embedding_size"]) -> Float[Array, "chunks size"]:
        """The raw (unscaled) chunk outputs `h([e, c_c])`, `[num_chunks, chunk_size]`."""
        return self._chunks_batch(embedding[None])[0]

    def _chunks_batch(self, embeddings: Float[Array, "k embedding_size"]) -> Array:
        # One vmap over all (embedding, chunk) rows: a single matrix product per layer (a vmap
        # over embeddings of a vmap over chunks compiles to much slower code on CPU).
        k, n = embeddings.shape[0], self.num_chunks
        rows = jnp.concatenate(
            [jnp.repeat(embeddings, n, axis=0), jnp.tile(self.chunk_embeddings, (k, 1))], axis=-1
        )
        return jax.vmap(self._h)(rows).reshape(k, n, self.chunk_size)

    def filter_spec(self) -> Any:
        """The trainable leaves: every floating-point array except the fixed `scales`."""
        spec = jax.tree_util.tree_map(eqx.is_inexact_array, self)
        return eqx.tree_at(lambda h: h.scales, spec, False)

    def _slices(self) -> list[tuple[int, int]]:
        ends = np.cumsum([int(np.prod(s)) for s in self.shapes]).tolist()
        return list(zip([0] + ends[:-1], ends))

    def weights(self, embedding: Float[Array, " embedding_size"]) -> Float[Array, " num_weights"]:
        """The flat target parameters: `(chunks(e) flattened)[:num_weights]`, each leaf's
        segment multiplied by its fixed scale."""
        return self.weights_batch(embedding[None])[0]

    def weights_batch(
        self, embeddings: Float[Array, "k embedding_size"]
    ) -> Float[Array, "k num_weights"]:
        """[`weights`][nte.nn.ChunkedHypernetwork.weights] for `k` embeddings at once."""
        flat = self._chunks_batch(embeddings).reshape(embeddings.shape[0], -1)
        scales = jax.lax.stop_gradient(self.scales).astype(flat.dtype)
        parts = [flat[:, a:b] * scales[i] for i, (a, b) in enumerate(self._slices())]
        return jnp.concatenate(parts, axis=-1)

    def assemble(self, flat: Float[Array, " num_weights"]) -> eqx.Module:
        """The target network whose parameters are the flat vector `flat` (no scaling)."""
        leaves = [flat[a:b].reshape(s) for (a, b), s in zip(self._slices(), self.shapes)]
        return merge(jax.tree_util.tree_unflatten(self.treedef, leaves), self.target_static)

    def __call__(self, embedding: Float[Array, " embedding_size"]) -> eqx.Module:
        """The target network generated from `embedding`."""
        return self.assemble(self.weights(embedding))
