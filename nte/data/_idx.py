"""Parse MNIST-format IDX files (plain or gzip) with numpy.

The format: a big-endian header of 2 zero bytes, a type byte (`0x08` = uint8), a byte giving
the number of dimensions, then one big-endian uint32 per dimension, then the data. Images have
magic number `0x00000803` (3 dimensions `[N, rows, cols]`), labels `0x00000801` (`[N]`).
"""

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IDXError(ValueError):
    """A corrupt or truncated IDX file (a `ValueError` that names the file)."""


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as e:
        raise IDXError(f"Corrupt IDX file {str(path)!r}: cannot decompress gzip ({e}).") from e


def read_idx(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Read one IDX file of `kind` `"images"` (uint8 `[N, rows, cols]`) or `"labels"` (`[N]`)."""
    path = Path(path)
    data = _read_bytes(path)
    magic = _MAGIC[kind]
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"Corrupt IDX file {str(path)!r}: {len(data)} bytes, shorter than the header."
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IDXError(
            f"Corrupt IDX file {str(path)!r}: bad magic number 0x{found:08x}, expected "
            f"0x{magic:08x} for {kind}."
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXError(
            f"Corrupt IDX file {str(path)!r}: {problem}: header says shape {shape} "
            f"({expected} bytes), file has {len(data)} bytes."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def find_files(folder: Path, stem: str) -> list[Path]:
    """The plain and `.gz` IDX files `stem` that exist in `folder` (plain first)."""
    return [folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()]


def missing_files(folder: Path) -> list[str]:
    """The IDX files (stems) of the four that `folder` lacks in both plain and `.gz` form."""
    stems = [s for pair in _STEMS.values() for s in pair]
    return [s for s in stems if not find_files(folder, s)]


def has_idx_files(folder: Path) -> bool:
    """Whether `folder` holds all four IDX files (train/test images and labels)."""
    return not missing_files(folder)


def _read_stem(folder: Path, stem: str, kind: str) -> tuple[np.ndarray, Path]:
    """The array of IDX file `stem`: when both a plain and a `.gz` file exist, the one that
    validates is used; if both validate they must hold the same array, else it refuses."""
    paths = find_files(folder, stem)
    if not paths:
        raise FileNotFoundError(f"Missing IDX file {str(folder / stem)!r} (plain or .gz).")
    results, errors = [], []
    for path in paths:
        try:
            results.append((read_idx(path, kind), path))
        except IDXError as e:
            errors.append(e)
    if not results:
        raise errors[0]
    if len(results) == 2 and not np.array_equal(results[0][0], results[1][0]):
        a, b = (str(r[1]) for r in results)
        raise IDXError(f"Both {a!r} and {b!r} exist and hold different data; delete the wrong one.")
    return results[0]


def _read_split(folder: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, img_path = _read_stem(folder, _STEMS[split][0], "images")
    labels, lbl_path = _read_stem(folder, _STEMS[split][1], "labels")
    if len(images) != len(labels):
        raise IDXError(
            f"IDX files {str(img_path)!r} and {str(lbl_path)!r} disagree: {len(images)} images "
            f"but {len(labels)} labels."
        )
    if labels.size and labels.max() >= num_classes:
        raise IDXError(
            f"Corrupt IDX file {str(lbl_path)!r}: label {labels.max()} is not below "
            f"num_classes = {num_classes}."
        )
    x = (images.astype(np.float32) / np.float32(255.0))[..., None]
    return x, labels.astype(np.int32)


def load_idx_folder(folder: Path, num_classes: int) -> tuple[np.ndarray, ...]:
    """`(x_train, y_train, x_test, y_test)` from the four IDX files in `folder`.

    Images become float32 `[N, rows, cols, 1]` in `[0, 1]` (uint8 / 255), labels int32.
    """
    x_train, y_train = _read_split(folder, "train", num_classes)
    x_test, y_test = _read_split(folder, "test", num_classes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise IDXError(
            f"IDX files in {str(folder)!r} disagree: train images are {x_train.shape[1:3]}, "
            f"test images are {x_test.shape[1:3]}."
        )
    return x_train, y_train, x_test, y_test
