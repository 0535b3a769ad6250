"""ImageNet-1k class names, shipped with the package (no download): `class_names()`
and `decode_predictions(probabilities, top=5)`."""

import functools
import os

import numpy as np

LABELS_FILE = os.path.join(os.path.dirname(__file__), "imagenet_classes.tsv")
NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _classes():
    rows = []
    with open(LABELS_FILE, encoding="utf-8") as file:
        for line in file:
            if line.startswith("#") or not line.strip():
                continue
            index, synset, names = line.rstrip("\n").split("\t")
            rows.append((int(index), synset, names))
    if [row[0] for row in rows] != list(range(NUM_CLASSES)):
        raise ValueError(f"{LABELS_FILE} does not list classes 0..{NUM_CLASSES - 1} in order")
    return tuple(rows)


def class_names(short=True):
    """The 1000 ImageNet class names in label order.

    Args:
        short: the first WordNet name only (`"tabby"`), else all of them
            (`"tabby, tabby cat"`).

    Example:
    >>> class_names()[285]
    'Egyptian cat'
    """
    return [names.split(", ")[0] if short else names for _, _, names in _classes()]


def synsets():
    """The 1000 WordNet synset ids in label order (`"n01440764"`, ...)."""
    return [synset for _, synset, _ in _classes()]


def decode_predictions(probabilities, top=5):
    """`[[(index, name, probability), ...] per image]`, most probable first.

    Args:
        probabilities: `[batch, 1000]` (NumPy or a backend tensor converted with
            `keras.ops.convert_to_numpy`).
        top: how many classes per image.

    Example:
    >>> p = np.zeros((1, 1000)); p[0, 967] = 0.9
    >>> decode_predictions(p, top=1)
    [[(967, 'espresso', 0.9)]]
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"decode_predictions expects ImageNet probabilities of shape (batch, "
            f"{NUM_CLASSES}). Received shape {probabilities.shape}"
        )
    names = class_names()
    decoded = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:top]
        decoded.append([(int(i), names[i], float(row[i])) for i in order])
    return decoded
