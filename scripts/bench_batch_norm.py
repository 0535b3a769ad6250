"""Batch normalisation on torch: Keras' layer against `keras_dynconv.layers.BatchNormalization`.

    python scripts/bench_batch_norm.py [--batch-sizes 1,32] [--repeats 9]
        [--models efficientnet_b0,condconv_efficientnet_b0]

Inference (moving statistics), eager under `torch.no_grad()`, median ms of `--repeats`
calls, outputs checked equal: the largest and the smallest activations EfficientNet-B0
normalises. With `--models`, also each zoo model built twice, with
`keras_dynconv.layers.BatchNormalization` and with Keras' layer in its place, called in
turns (one process, so that process-to-process noise does not enter the comparison).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)
from layer_swap_ab import time_model_with_keras_layer  # noqa: E402

from keras_dynconv import layers  # noqa: E402

# (height = width, channels) of EfficientNet-B0's normalised activations
SHAPES = [(112, 32), (56, 144), (14, 672), (7, 1152)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--models", default="", help="comma-separated zoo models to time both ways")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    print(f"{keras.backend.backend()}, {torch.get_num_threads()} threads")
    print("| input | Keras ms | keras_dynconv ms |")
    print("| --- | ---: | ---: |")
    for batch in batch_sizes:
        for size, channels in SHAPES:
            time_layers(batch, size, channels, args.repeats, rng)
    for name in filter(None, args.models.split(",")):
        for batch in batch_sizes:
            time_model_with_keras_layer(name, "BatchNormalization", batch, args.repeats, rng)


def time_layers(batch, size, channels, repeats, rng):
    shape = (batch, size, size, channels)
    ours = layers.BatchNormalization()
    theirs = keras.layers.BatchNormalization()
    ours.build(shape)
    theirs.build(shape)
    weights = [rng.uniform(0.5, 1.5, variable.shape).astype("float32") for variable in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    inputs = keras.ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"))
    with torch.no_grad():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(inputs)),
                                   keras.ops.convert_to_numpy(theirs(inputs)), atol=1e-5, rtol=1e-5)
        times = [median_ms(lambda: layer(inputs, training=False), repeats)
                 for layer in (theirs, ours)]
    print(f"| {batch}x{size}x{size}x{channels} | {times[0]:.2f} | {times[1]:.2f} |")


if __name__ == "__main__":
    main()
