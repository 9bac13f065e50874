"""Datasets from tensorflow-datasets (the extra `neural-tangent-ensemble[tfds]`), never downloading.

Uses `tfds.data_source` (random access through ArrayRecord; TensorFlow is not needed) with
`download=False`, so a dataset that is not prepared fails at once instead of retrying a
download for minutes.
"""

import importlib.util
import os

import numpy as np

_INSTALL = 'pip install "neural-tangent-ensemble[tfds]"'


class TFDSNotPrepared(FileNotFoundError):
    """The dataset is not prepared (as ArrayRecord) in the tfds data directory."""


def tfds_available() -> bool:
    """Whether tensorflow-datasets can be imported (without importing it)."""
    return importlib.util.find_spec("tensorflow_datasets") is not None


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"source='tfds' needs tensorflow-datasets: {_INSTALL}.") from e
    return tfds


def _prepare_hint(name: str, data_dir: str | None) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (
        f"With network access, prepare it once with `tfds build {name} "
        f"--file_format=array_record{where}` (nte never downloads by itself)."
    )


def _open(tfds, name: str, split: str, data_dir: str | None):
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:
        if isinstance(e, tfds.core.registered.DatasetNotFoundError):
            raise ValueError(f"`name` {name!r} is not a tensorflow-datasets dataset.") from e
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            prepared, where = builder.is_prepared(), builder.data_dir
        except Exception:
            prepared, where = False, data_dir or "the default tfds data_dir"
        if not prepared:
            raise TFDSNotPrepared(
                f"tensorflow-datasets has no prepared {name!r} in {where}. "
                + _prepare_hint(name, data_dir)
            ) from e
        raise ValueError(
            f"tensorflow-datasets cannot open {name!r} split {split!r} in {where} for random "
            f"access ({type(e).__name__}: {e}). " + _prepare_hint(name, data_dir)
        ) from e


def _to_numpy(source, name: str) -> tuple[np.ndarray, np.ndarray]:
    examples = [source[i] for i in range(len(source))]
    if examples and not {"image", "label"} <= set(examples[0]):
        raise ValueError(f"tfds dataset {name!r} has no 'image' and 'label' features.")
    images = np.stack([np.asarray(ex["image"]) for ex in examples]) if examples else None
    if images is None or images.dtype != np.uint8:
        raise ValueError(f"tfds dataset {name!r} must have uint8 images and >= 1 example.")
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int32)
    return images.astype(np.float32) / np.float32(255.0), labels


def load_tfds(name: str, data_dir: str | os.PathLike | None) -> dict:
    """The fields of a `Dataset` for the tfds dataset `name` (splits `"train"` and `"test"`)."""
    tfds = _import_tfds()
    data_dir = None if data_dir is None else os.fspath(data_dir)
    train, test = (_open(tfds, name, s, data_dir) for s in ("train", "test"))
    x_train, y_train = _to_numpy(train, name)
    x_test, y_test = _to_numpy(test, name)
    builder = tfds.builder(name, data_dir=data_dir)
    label = builder.info.features["label"]
    names = tuple(label.names) if getattr(label, "names", None) else None
    return dict(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(label.num_classes),
        class_names=names,
        location=str(builder.data_dir),
    )
