"""Real image datasets that need no download: Fashion-MNIST from Debian, or digits.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist/`) or from Keras' cache
(`$KERAS_HOME/datasets/fashion-mnist/`); scikit-learn's 8x8 handwritten digits,
which pip brings, are the fallback.
"""

import gzip
import os

import numpy as np

FASHION_MNIST_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets", "fashion-mnist"),
)
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _read_idx(path):
    """Reads an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {shape}, found {array.size} values.")
    return array.reshape(shape)


def find_fashion_mnist(directories=FASHION_MNIST_DIRS):
    """The first directory holding all four Fashion-MNIST files, or None."""
    for directory in directories:
        names = [os.path.join(directory, name) for name in FASHION_MNIST_FILES.values()]
        if all(os.path.exists(n) or os.path.exists(n[: -len(".gz")]) for n in names):
            return directory
    return None


def load_fashion_mnist(directory):
    """`((x_train, y_train), (x_test, y_test))`, images `[N, 28, 28]` uint8."""
    arrays = {}
    for key, name in FASHION_MNIST_FILES.items():
        path = os.path.join(directory, name)
        arrays[key] = _read_idx(path if os.path.exists(path) else path[: -len(".gz")])
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"],
        arrays["test_labels"],
    )


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's 1,797 real 8x8 digits as uint8 `[N, 8, 8]` in [0, 255], split."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(len(images) * (1 - test_fraction))
    train, test = order[:split], order[split:]
    return (images[train], labels[train]), (images[test], labels[test])


def load_offline_dataset(name="auto"):
    """Returns `(name, (x_train, y_train), (x_test, y_test))` with grayscale uint8 images.

    `name`: `"fashion_mnist"`, `"digits"`, or `"auto"` (Fashion-MNIST when its files
    are on this machine, digits otherwise).
    """
    if name not in ("auto", "fashion_mnist", "digits"):
        raise ValueError(
            "Invalid value for argument `name`. Expected one of 'auto', "
            f"'fashion_mnist', 'digits'. Received name={name!r}"
        )
    directory = find_fashion_mnist()
    if name == "fashion_mnist" and directory is None:
        raise FileNotFoundError(
            "Fashion-MNIST files not found in any of "
            f"{list(FASHION_MNIST_DIRS)}. Install Debian's `dataset-fashion-mnist` "
            "package (apt-get install dataset-fashion-mnist) or copy the four "
            f"files {list(FASHION_MNIST_FILES.values())} into one of them."
        )
    if name == "fashion_mnist" or (name == "auto" and directory is not None):
        return "fashion_mnist", *load_fashion_mnist(directory)
    return "digits", *load_digits()
