"""A zoo model against the same model built with one `keras_dynconv.layers` class swapped
for Keras' own, or run with one attribute (a method, a decision function) set to
another value, called in turns in one process (so that process-to-process noise does
not enter the comparison); used by the bench_*.py scripts of the torch paths."""

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


def compare_attribute_values(description, owner, attribute, before, labels, default_models,
                             default_repeats=21):
    """Command-line A/B of zoo models with `owner.<attribute>` set to `before`, then to
    its current value, in turns in one process (outputs checked equal first); prints a
    Markdown table of median ms per model and batch size. `labels`: the two columns."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", default=default_models)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=default_repeats)
    parser.add_argument("--dtype-policy", default="float32",
                        help="the policy the models are built with, e.g. mixed_bfloat16")
    args = parser.parse_args()
    keras.config.set_dtype_policy(args.dtype_policy)
    rng = np.random.default_rng(0)
    after = getattr(owner, attribute)
    print(f"{keras.backend.backend()}, {torch.get_num_threads()} threads, {args.dtype_policy}")
    print(f"| model | batch | {labels[0]} ms | {labels[1]} ms | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        model = zoo.get_model(name, weights=None)
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            images = keras.ops.convert_to_tensor(
                rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
            )
            first, second = _time_values(model, images, args.repeats, owner, attribute,
                                         (before, after))
            print(f"| {name} | {batch} | {first:.1f} | {second:.1f} | {first / second:.2f}x |")


def _time_values(model, images, repeats, owner, attribute, values):
    """Median ms of `model(images)` with each of `values` as `owner.<attribute>`."""
    original = getattr(owner, attribute)
    times = [[] for _ in values]
    outputs = []
    try:
        with torch.no_grad():
            for value in values:
                setattr(owner, attribute, value)
                outputs.append(keras.ops.convert_to_numpy(
                    keras.ops.cast(model(images, training=False), "float32")))
            np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
            for _ in range(repeats):
                for value, samples in zip(values, times):
                    setattr(owner, attribute, value)
                    start = time.perf_counter()
                    model(images, training=False)
                    samples.append(1e3 * (time.perf_counter() - start))
    finally:
        setattr(owner, attribute, original)
    return [float(np.median(samples)) for samples in times]
