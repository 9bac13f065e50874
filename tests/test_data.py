import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest

import nte.data
from nte.data import _load, _tfds

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file for a uint8 array, header written by hand with `struct`."""
    magic = 0x00000800 | arr.ndim
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def _write(folder: Path, stem: str, data: bytes, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (stem + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _tiny(folder: Path, *, gz: bool = False, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    raw = {
        "train_x": rng.integers(0, 256, (6, 3, 4), dtype=np.uint8),
        "train_y": rng.integers(0, 10, (6,), dtype=np.uint8),
        "test_x": rng.integers(0, 256, (2, 3, 4), dtype=np.uint8),
        "test_y": rng.integers(0, 10, (2,), dtype=np.uint8),
    }
    raw["train_x"][0, 0, :2] = (0, 255)  # both ends of the range
    for key, arr in raw.items():
        _write(folder, STEMS[key], _idx_bytes(arr), gz)
    return raw


def _check_tiny(data: nte.data.Dataset, raw: dict) -> None:
    assert data.x_train.shape == (6, 3, 4, 1) and data.x_test.shape == (2, 3, 4, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        np.testing.assert_array_equal(x[..., 0], raw[f"{split}_x"].astype(np.float32) / 255)
        np.testing.assert_array_equal(y, raw[f"{split}_y"].astype(np.int32))
    assert data.x_train[0, 0, 0, 0] == 0.0 and data.x_train[0, 0, 1, 0] == 1.0
    assert data.image_shape == (3, 4, 1) and data.num_features == 12


# --- real data ---------------------------------------------------------------------------


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist absent")
def test_debian_fashion_mnist(monkeypatch):
    monkeypatch.delenv("NTE_DATA_DIR", raising=False)
    data = nte.data.load("fashion_mnist")
    assert data.source == "idx" and data.location == str(DEBIAN_FASHION)
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data.y_test), np.full(10, 1000))
    # Published first training labels: ankle boot, T-shirt, T-shirt, dress, T-shirt, ...
    np.testing.assert_array_equal(data.y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    assert data.class_names[9] == "Ankle boot"
    with pytest.raises(ValueError):
        data.x_train[0, 0, 0, 0] = 0.5  # read-only
    with gzip.open(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz") as f:  # independent read
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(10000, 28, 28)
    np.testing.assert_array_equal(data.x_test[..., 0] * 255, raw.astype(np.float32))


def test_digits():
    from sklearn.datasets import load_digits

    a, b = nte.data.load("digits"), nte.data.load("digits", source="sklearn")
    assert a.source == "sklearn" and a.num_classes == 10
    assert a.n_train + a.n_test == 1797 and (a.n_train, a.n_test) == (1201, 596)
    assert a.image_shape == (8, 8, 1) and a.x_train.dtype == np.float32
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
    for f in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))  # deterministic
    counts = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(a.y_test), counts // 3)  # stratified
    # The split is a partition of sklearn's data (each image once, with its label).
    sk = load_digits()
    full = np.concatenate([sk.images.reshape(1797, -1) / 16, sk.target[:, None]], axis=1)
    ours = np.concatenate(
        [
            np.concatenate([a.x_train.reshape(a.n_train, -1), a.y_train[:, None]], axis=1),
            np.concatenate([a.x_test.reshape(a.n_test, -1), a.y_test[:, None]], axis=1),
        ]
    )
    np.testing.assert_allclose(
        ours[np.lexsort(ours.T)], full[np.lexsort(full.T)], rtol=0, atol=1e-7
    )


# --- IDX files written by the test -------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    raw = _tiny(tmp_path, gz=gz)
    data = nte.data.load("mnist", source="idx", data_dir=tmp_path)
    assert data.source == "idx" and data.location == str(tmp_path) and data.name == "mnist"
    _check_tiny(data, raw)


def test_idx_subfolder_and_auto(tmp_path):
    raw = _tiny(tmp_path / "kmnist", gz=True)
    data = nte.data.load("kmnist", data_dir=tmp_path)  # source="auto" finds the IDX files
    assert data.source == "idx" and data.location == str(tmp_path / "kmnist")
    _check_tiny(data, raw)


def test_env_override(tmp_path, monkeypatch):
    raw = _tiny(tmp_path / "fashion-mnist", seed=1)
    monkeypatch.setenv("NTE_DATA_DIR", str(tmp_path))
    data = nte.data.load("fashion_mnist", source="idx")
    assert data.location == str(tmp_path / "fashion-mnist")
    _check_tiny(data, raw)
    raw = _tiny(tmp_path / "fashion_mnist", seed=2)  # the exact name comes first
    _check_tiny(nte.data.load("fashion_mnist"), raw)


def _corrupt(tmp_path, stem_key, data: bytes, gz: bool = False) -> Path:
    _tiny(tmp_path)
    for suffix in ("", ".gz"):
        (tmp_path / (STEMS[stem_key] + suffix)).unlink(missing_ok=True)
    return _write(tmp_path, STEMS[stem_key], data, gz)


def _bad_magic():
    return struct.pack(">IIII", 0x00000801, 6, 3, 4) + bytes(72)


@pytest.mark.parametrize(
    "key, make, gz, match",
    [
        ("train_x", _bad_magic, False, "bad magic number 0x00000801"),
        ("train_x", lambda: _idx_bytes(np.zeros((6, 3, 4), np.uint8))[:-5], False, "truncated"),
        ("test_y", lambda: _idx_bytes(np.zeros(2, np.uint8)) + b"\0", False, "trailing bytes"),
        ("test_x", lambda: b"\0\0", False, "shorter than the header"),
        ("train_y", lambda: _idx_bytes(np.zeros(5, np.uint8)), False, "5 labels"),
        ("train_y", lambda: _idx_bytes(np.full(6, 10, np.uint8)), False, "label 10"),
    ],
)
def test_idx_corrupt(tmp_path, key, make, gz, match):
    path = _corrupt(tmp_path, key, make(), gz)
    with pytest.raises(ValueError, match=match) as info:
        nte.data.load("mnist", source="idx", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_idx_truncated_gzip(tmp_path):
    _tiny(tmp_path, gz=True)
    path = tmp_path / (STEMS["train_x"] + ".gz")
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="cannot decompress gzip") as info:
        nte.data.load("mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot decompress gzip"):
        nte.data.load("mnist", data_dir=tmp_path)


# --- missing data and bad arguments --------------------------------------------------------


def _no_download(monkeypatch):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return

    def fail(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)


@pytest.mark.parametrize("source", ["auto", "idx", "tfds"])
def test_missing_fails_fast(tmp_path, monkeypatch, source):
    if source == "tfds":
        pytest.importorskip("tensorflow_datasets")
    _no_download(monkeypatch)
    monkeypatch.setenv("NTE_DATA_DIR", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        nte.data.load("mnist", source=source, data_dir=tmp_path)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "'mnist'" in msg
    assert ("tfds build mnist" in msg) if source == "tfds" else ("t10k-images-idx3-ubyte" in msg)


def test_missing_without_tfds(tmp_path, monkeypatch):
    monkeypatch.setattr(_load, "DEBIAN_DIR", tmp_path)
    monkeypatch.setattr(_load, "tfds_available", lambda: False)
    monkeypatch.setenv("NTE_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"neural-tangent-ensemble\[tfds\]") as info:
        nte.data.load("fashion_mnist")
    assert str(tmp_path / "fashion-mnist") in str(info.value)
    assert "dataset-fashion-mnist" in str(info.value)


def test_tfds_not_installed(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
    assert not _tfds.tfds_available()
    with pytest.raises(ImportError, match=r'pip install "neural-tangent-ensemble\[tfds\]"'):
        nte.data.load("mnist", source="tfds")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="`name`"):
        nte.data.load("cifar11")
    with pytest.raises(ValueError, match="`source`"):
        nte.data.load("digits", source="web")
    with pytest.raises(ValueError, match="`source`"):
        nte.data.load("digits", source="idx")
    with pytest.raises(ValueError, match="`source`"):
        nte.data.load("mnist", source="sklearn")


# --- tensorflow-datasets, mocked -----------------------------------------------------------


def test_tfds_mock(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    _no_download(monkeypatch)
    monkeypatch.setattr(_load, "DEBIAN_DIR", tmp_path)
    with tfds.testing.mock_data(num_examples=5):
        data = nte.data.load("fashion_mnist", source="tfds", data_dir=tmp_path)
        auto = nte.data.load("mnist", data_dir=tmp_path)  # no IDX files: falls back to tfds
        with pytest.raises(ValueError, match="`name`"):
            nte.data.load("no_such_dataset_xyz", source="tfds", data_dir=tmp_path)
    assert data.source == "tfds" and auto.source == "tfds"
    assert data.x_train.shape == (5, 28, 28, 1) and data.x_test.shape == (5, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1
    assert set(data.y_train.tolist()) <= set(range(10)) and data.num_classes == 10
    assert data.class_names[9] == "Ankle boot" and len(data.class_names) == 10


# --- the Dataset container -------------------------------------------------------------------


def _arrays(n=4):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 2, 2, 1)).astype(np.float32)
    return dict(x_train=x, y_train=np.arange(n, dtype=np.int32) % 3, x_test=x[:2])


def test_dataset_validation():
    ok = dict(_arrays(), y_test=np.zeros(2, np.int32), num_classes=3, name="t", source="mine")
    data = nte.data.Dataset(**ok)
    assert data.n_train == 4 and data.image_shape == (2, 2, 1) and "n_train=4" in repr(data)
    assert ok["x_train"].flags.writeable  # the caller's array is left writeable
    assert not data.x_train.flags.writeable
    bad = [
        ("x_train", ok["x_train"].astype(np.float64)),
        ("x_train", ok["x_train"][..., 0]),
        ("x_train", ok["x_train"] * 2),
        ("x_test", np.zeros((2, 3, 2, 1), np.float32)),
        ("y_train", np.zeros(3, np.int32)),
        ("y_train", np.zeros(4, np.int64)),
        ("y_test", np.array([0, 3], np.int32)),
        ("num_classes", 0),
        ("class_names", ("a",)),
    ]
    for field, value in bad:
        with pytest.raises((ValueError, TypeError), match=field):
            nte.data.Dataset(**{**ok, field: value})


# --- folders and files that are not what they claim ----------------------------------------


def test_nonexistent_data_dir_is_an_error(tmp_path, monkeypatch):
    _tiny(tmp_path / "mnist")
    monkeypatch.setattr(_load, "DEBIAN_DIR", tmp_path)  # a fallback that WOULD find data
    with pytest.raises(FileNotFoundError, match="`data_dir`") as info:
        nte.data.load("mnist", data_dir=tmp_path / "typo")
    assert str(tmp_path / "typo") in str(info.value)
    monkeypatch.setenv("NTE_DATA_DIR", "/nonexistent")
    with pytest.raises(FileNotFoundError, match=r"\$NTE_DATA_DIR is '/nonexistent'"):
        nte.data.load("mnist")
    monkeypatch.setenv("NTE_DATA_DIR", str(tmp_path))
    assert nte.data.load("mnist").location == str(tmp_path / "mnist")


def test_missing_file_is_named(tmp_path):
    _tiny(tmp_path, gz=True)
    (tmp_path / (STEMS["test_y"] + ".gz")).unlink()
    with pytest.raises(FileNotFoundError) as info:
        nte.data.load("mnist", data_dir=tmp_path)
    msg = str(info.value)
    assert STEMS["test_y"] in msg and STEMS["train_x"] not in msg and str(tmp_path) in msg


def test_plain_and_gz_side_by_side(tmp_path):
    raw = _tiny(tmp_path, gz=True)
    plain = tmp_path / STEMS["train_x"]
    plain.write_bytes(b"\0\0")  # a corrupt plain file next to a good .gz: the .gz is used
    _check_tiny(nte.data.load("mnist", data_dir=tmp_path), raw)
    good = gzip.decompress((tmp_path / (STEMS["train_x"] + ".gz")).read_bytes())
    plain.write_bytes(good)  # identical content: fine
    _check_tiny(nte.data.load("mnist", data_dir=tmp_path), raw)
    changed = bytearray(good)
    changed[-1] ^= 0xFF
    plain.write_bytes(bytes(changed))  # both valid, different: refuse, naming both
    with pytest.raises(ValueError, match="Both") as info:
        nte.data.load("mnist", data_dir=tmp_path)
    assert str(plain) in str(info.value) and str(plain) + ".gz" in str(info.value)
