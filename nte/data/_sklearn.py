"""scikit-learn's bundled 8×8 handwritten digits, split deterministically into train/test."""

import numpy as np

DIGITS_SEED = 0
DIGITS_TEST_FRACTION = 1 / 3


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Sorted train and test indices: per class, `floor(n_c * test_fraction)` go to test.

    The examples of each class are shuffled by `np.random.default_rng(seed)` (one generator,
    classes in increasing order) and the first ones of each class go to test.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[: int(len(idx) * test_fraction)])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def load_digits() -> tuple[np.ndarray, ...]:
    """`(x_train, y_train, x_test, y_test)` for the 1797 digits: 1201 train, 596 test.

    Pixels are scaled from `0..16` to `[0, 1]`; images have shape `[N, 8, 8, 1]`.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError(
            'The "digits" dataset needs scikit-learn, a dependency of nte: '
            "pip install scikit-learn."
        ) from e
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
    y = bunch.target.astype(np.int32)
    train, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SEED)
    return x[train], y[train], x[test], y[test]
