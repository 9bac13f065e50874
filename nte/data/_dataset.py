"""The in-memory image-classification dataset returned by [`nte.data.load`][]."""

import dataclasses

import numpy as np
from jaxtyping import Float, Int


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _check_images(x: object, name: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        desc = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x)
        raise ValueError(f"`{name}` must be a float32 numpy array [N, H, W, C], got {desc}.")
    if x.size and not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(f"`{name}` must hold finite values in [0, 1].")


def _check_labels(y: object, n: int, num_classes: int, name: str) -> None:
    if not isinstance(y, np.ndarray) or y.dtype != np.int32 or y.shape != (n,):
        desc = f"{y.dtype} array of shape {y.shape}" if isinstance(y, np.ndarray) else type(y)
        raise ValueError(f"`{name}` must be an int32 numpy array of shape ({n},), got {desc}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"`{name}` must hold labels in [0, {num_classes}), "
            f"got values in [{y.min()}, {y.max()}]."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image-classification dataset held in host memory as read-only numpy arrays.

    Images are float32 in `[0, 1]` with shape `[N, H, W, C]` (channels last; `C = 1` for
    grayscale), labels are int32 in `[0, num_classes)`. Flatten with
    `x.reshape(len(x), -1)` for an MLP. The arrays are read-only views, so a `Dataset` can be
    shared safely; [`nte.data.load`][] builds them, but you may also construct one directly.

    **Fields:**

    - `name`: the dataset's name, e.g. `"fashion_mnist"`.
    - `x_train`: float32 `[n_train, H, W, C]` in `[0, 1]`.
    - `y_train`: int32 `[n_train]`.
    - `x_test`: float32 `[n_test, H, W, C]` in `[0, 1]`.
    - `y_test`: int32 `[n_test]`.
    - `num_classes`: the number of classes (labels lie in `[0, num_classes)`).
    - `source`: where the data came from: `"sklearn"`, `"idx"`, `"tfds"` or your own string.
    - `class_names`: one human-readable name per class, or `None`.
    - `location`: the folder or dataset the arrays were read from, or `None`.

    **Properties:** `image_shape` (`(H, W, C)`), `num_features` (`H * W * C`), `n_train`,
    `n_test`.

    Construction validates shapes, dtypes and ranges and raises `ValueError` naming the field.
    """

    name: str
    x_train: Float[np.ndarray, "_n_train _h _w _c"]
    y_train: Int[np.ndarray, "_n_train"]  # noqa: F821
    x_test: Float[np.ndarray, "_n_test _h _w _c"]
    y_test: Int[np.ndarray, "_n_test"]  # noqa: F821
    num_classes: int
    source: str
    class_names: tuple[str, ...] | None = None
    location: str | None = None

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"`num_classes` must be an int >= 1, got {self.num_classes!r}.")
        _check_images(self.x_train, "x_train")
        _check_images(self.x_test, "x_test")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"`x_train` and `x_test` must have the same image shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}."
            )
        _check_labels(self.y_train, len(self.x_train), self.num_classes, "y_train")
        _check_labels(self.y_test, len(self.x_test), self.num_classes, "y_test")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` must have `num_classes` = {self.num_classes} entries, "
                f"got {len(self.class_names)}."
            )
        for field in ("x_train", "y_train", "x_test", "y_test"):
            object.__setattr__(self, field, _readonly(getattr(self, field)))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape `(H, W, C)` of one image."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        """The number of values in one image, `H * W * C`."""
        return int(np.prod(self.image_shape))

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, source={self.source!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )
