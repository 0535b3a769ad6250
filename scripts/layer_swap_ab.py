"""A zoo model against the same model built with one `keras_dynconv.layers` class swapped
for Keras' own, called in turns in one process (so that process-to-process noise does
not enter the comparison); used by the bench_*.py scripts of the static layers."""

import time

import keras
import numpy as np
import torch

from keras_dynconv import layers
from keras_dynconv import zoo


def time_model_with_keras_layer(name, class_name, batch, repeats, rng):
    """Prints the median ms of zoo model `name` at `batch` with Keras' `class_name` in
    place of `keras_dynconv.layers.<class_name>`, and as the zoo builds it; outputs
    checked equal first."""
    ours = zoo.get_model(name, weights=None)
    ours_class = getattr(layers, class_name)
    # The zoo builds through this name.
    setattr(layers, class_name, getattr(keras.layers, class_name))
    try:
        theirs = zoo.get_model(name, weights=None)
    finally:
        setattr(layers, class_name, ours_class)
    theirs.set_weights(ours.get_weights())
    images = keras.ops.convert_to_tensor(
        rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    )
    times = {f"Keras' {class_name}": [], f"keras_dynconv's {class_name}": []}
    with torch.no_grad():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(images, training=False)),
                                   keras.ops.convert_to_numpy(theirs(images, training=False)),
                                   atol=1e-4, rtol=1e-4)
        for _ in range(repeats):
            for label, model in zip(times, (theirs, ours)):
                start = time.perf_counter()
                model(images, training=False)
                times[label].append(1e3 * (time.perf_counter() - start))
    print(f"\n{name}, batch {batch}, called in turns, median of {repeats}:")
    for label, samples in times.items():
        print(f"- {label}: {np.median(samples):.1f} ms")
