"""`nte.data.load`: one entry point over the sklearn, IDX and tfds sources."""

import dataclasses
import os
from pathlib import Path

from .._errors import check_choice
from ._dataset import Dataset
from ._idx import load_idx_folder, missing_files
from ._sklearn import load_digits
from ._tfds import TFDSNotPrepared, load_tfds, tfds_available

SOURCES = ("auto", "sklearn", "idx", "tfds")
DEBIAN_DIR = Path("/usr/share/datasets")
ENV_VAR = "NTE_DATA_DIR"

_DIGITS = tuple(str(i) for i in range(10))


@dataclasses.dataclass(frozen=True)
class _Spec:
    sources: tuple[str, ...]  # local sources, tried in order before tfds
    num_classes: int
    class_names: tuple[str, ...]
    tfds: bool  # whether tensorflow-datasets has it under the same name


_SPECS = {
    "digits": _Spec(("sklearn",), 10, _DIGITS, False),
    "mnist": _Spec(("idx",), 10, _DIGITS, True),
    "fashion_mnist": _Spec(
        ("idx",),
        10,
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        True,
    ),
    "kmnist": _Spec(
        ("idx",), 10, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), True
    ),
}


def _folder_names(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((name, name.replace("_", "-"))))


def check_data_dirs(data_dir: str | os.PathLike | None) -> None:
    """Raise `FileNotFoundError` if `data_dir` (or `$NTE_DATA_DIR`, when `data_dir` is None)
    names a folder that does not exist: a typo must not fall back to another source."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"`data_dir` {str(data_dir)!r} is not an existing folder.")
    elif os.environ.get(ENV_VAR) and not Path(os.environ[ENV_VAR]).is_dir():
        raise FileNotFoundError(
            f"${ENV_VAR} is {os.environ[ENV_VAR]!r}, which is not an existing folder; fix or "
            "unset it."
        )


def idx_candidates(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders searched for IDX files, in order (see [`nte.data.load`][])."""
    names = _folder_names(name)
    if data_dir is not None:
        root = Path(data_dir)
        return [root] + [root / n for n in names]
    out = []
    if os.environ.get(ENV_VAR):
        out += [Path(os.environ[ENV_VAR]) / n for n in names]
    return out + [DEBIAN_DIR / n for n in names]


def _from_idx(name: str, spec: _Spec, data_dir) -> Dataset | None:
    for folder in idx_candidates(name, data_dir):
        missing = missing_files(folder)
        if not missing:
            arrays = load_idx_folder(folder, spec.num_classes)
            return _make(name, "idx", spec, arrays, str(folder))
        if len(missing) < 4:  # a partial folder is a mistake, not "somewhere else"
            raise FileNotFoundError(
                f"IDX folder {str(folder)!r} lacks {', '.join(missing)} (plain or .gz) for "
                f"dataset {name!r}."
            )
    return None


def _make(name: str, source: str, spec: _Spec, arrays, location: str | None) -> Dataset:
    x_train, y_train, x_test, y_test = arrays
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=spec.num_classes,
        source=source,
        class_names=spec.class_names,
        location=location,
    )


def _not_found(name: str, data_dir, tried: list[str]) -> FileNotFoundError:
    folders = ", ".join(repr(str(p)) for p in idx_candidates(name, data_dir))
    lines = [f"Dataset {name!r} not found.", *tried]
    lines += [
        "Put the four MNIST-format IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; optionally .gz) in one of: {folders}; "
        f"or pass `data_dir=`, or set ${ENV_VAR} to a folder holding a {name!r} subfolder.",
    ]
    if name == "fashion_mnist":
        lines.append("On Debian/Ubuntu: apt install dataset-fashion-mnist.")
    if not tfds_available():
        lines.append(
            'Or install tensorflow-datasets (pip install "neural-tangent-ensemble[tfds]") and '
            "prepare it."
        )
    return FileNotFoundError(" ".join(lines))


def _load_auto(name: str, spec: _Spec | None, data_dir) -> Dataset:
    tried = []
    if spec is not None and "sklearn" in spec.sources:
        return _make(name, "sklearn", spec, load_digits(), None)
    if spec is not None and "idx" in spec.sources:
        found = _from_idx(name, spec, data_dir)
        if found is not None:
            return found
        tried.append("No IDX files found.")
    if spec is None or spec.tfds:
        if tfds_available():
            try:
                return Dataset(name=name, source="tfds", **load_tfds(name, data_dir))
            except TFDSNotPrepared as e:
                tried.append(str(e))
        else:
            tried.append("tensorflow-datasets is not installed.")
    raise _not_found(name, data_dir, tried)


def load(name: str, *, source: str = "auto", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load an image-classification dataset into host memory, offline.

    Never downloads anything: a dataset that is not on disk fails within seconds with a
    `FileNotFoundError` saying where to put the files or what to install.

    **Names:** `"digits"` (scikit-learn's 1797 8×8 digits: a deterministic stratified split, per
    class ⌊n_c/3⌋ test examples chosen by `numpy.random.default_rng(0)`, giving 1201 train and
    596 test images), `"mnist"`, `"fashion_mnist"` and `"kmnist"` (28×28, 60000 train and
    10000 test images). With `source="tfds"` any tensorflow-datasets name with uint8 `image`
    and `label` features and `train`/`test` splits also works (e.g. `"cifar10"`).

    **Sources:**

    - `"sklearn"`: `sklearn.datasets.load_digits` (bundled with scikit-learn, no download);
      pixels `0..16` are scaled to `[0, 1]`.
    - `"idx"`: a folder of MNIST-format IDX files `train-images-idx3-ubyte`,
      `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
      plain or gzipped (`.gz`); pixels `uint8 / 255`. Folders searched, first match wins:
      if `data_dir` is given, `data_dir` itself then `data_dir/<name>` (only these);
      otherwise `$NTE_DATA_DIR/<name>` (if the variable is set), then Debian's
      `/usr/share/datasets/<name>` (`<name>` also tried with `-` for `_`, so
      `fashion_mnist` finds Debian's `dataset-fashion-mnist` at
      `/usr/share/datasets/fashion-mnist`). A `data_dir` or `$NTE_DATA_DIR` that is not an
      existing folder is an error (never a silent fallback); so is a folder holding some but
      not all four files (the message names the missing ones). Corrupt or truncated files
      (bad magic number, wrong length, broken gzip, image/label count mismatch) raise a
      `ValueError` naming the file and the problem. When both a plain file and its `.gz`
      exist, the one that validates is used; if both validate but differ, it refuses.
    - `"tfds"`: tensorflow-datasets (extra `neural-tangent-ensemble[tfds]`) through
      `tfds.data_source` with `download=False` and `data_dir` as the tfds data directory;
      the dataset must already be prepared in ArrayRecord format
      (`tfds build <name> --file_format=array_record`).
    - `"auto"`: `"sklearn"` for digits; otherwise `"idx"`, then `"tfds"` if installed and
      the dataset is prepared.

    **Arguments:**

    - `name`: the dataset name (see above).
    - `source`: one of `"auto"`, `"sklearn"`, `"idx"`, `"tfds"`.
    - `data_dir`: a folder to read from (IDX folder or tfds data directory), or `None`.

    **Returns:**

    A [`nte.data.Dataset`][] with float32 images `[N, H, W, C]` in `[0, 1]` and int32 labels.

    !!! example

        ```python
        data = nte.data.load("fashion_mnist")   # Debian's files, or $NTE_DATA_DIR
        x = data.x_train.reshape(data.n_train, -1)  # [60000, 784] for an MLP
        ```
    """
    check_choice(source, SOURCES, "source")
    check_data_dirs(data_dir)
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string, got {type(name).__name__}.")
    spec = _SPECS.get(name)
    if spec is None and source != "tfds":
        raise ValueError(
            f"`name` must be one of {tuple(_SPECS)} (or any tensorflow-datasets name with "
            f"source='tfds'), got {name!r}."
        )
    if source == "auto":
        return _load_auto(name, spec, data_dir)
    if source == "tfds":
        return Dataset(name=name, source="tfds", **load_tfds(name, data_dir))
    if source not in spec.sources:
        raise ValueError(f"`source` {source!r} does not provide {name!r}; use {spec.sources}.")
    if source == "sklearn":
        return _make(name, "sklearn", spec, load_digits(), None)
    found = _from_idx(name, spec, data_dir)
    if found is None:
        raise _not_found(name, data_dir, ["No IDX files found."])
    return found
