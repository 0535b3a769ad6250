"""Convolution bias on torch: added by the convolution against added as Keras adds it.

    python scripts/bench_conv_bias.py [--models resnet50,resnet75_mod]
        [--batch-sizes 1,32] [--repeats 15]

Each zoo model, inference under `torch.no_grad()`, with `keras_dynconv.layers.Conv2D`
adding its bias inside the convolution (`keras_dynconv.ops.conv(..., bias=...)`) and
with Keras' `Conv2D.call` in its place (the same convolution on views, then the bias
reshaped and added as another pass over the output), called in turns in one process
(so that process-to-process noise does not enter the comparison); outputs checked
equal first. Median ms of `--repeats` calls.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from keras_dynconv import layers  # noqa: E402
from keras_dynconv import zoo  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,resnet75_mod")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{keras.backend.backend()}, {torch.get_num_threads()} threads")
    print("| model | batch | bias added after ms | bias in the convolution ms |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.models.split(","):
        model = zoo.get_model(name, weights=None)
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            images = keras.ops.convert_to_tensor(
                rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
            )
            after, inside = time_both_ways(model, images, args.repeats)
            print(f"| {name} | {batch} | {after:.1f} | {inside:.1f} |")


def time_both_ways(model, images, repeats):
    """Median ms of `model(images)` with Keras' `Conv2D.call`, and with ours."""
    ours = layers.Conv2D.call
    ways = {keras.layers.Conv2D.call: [], ours: []}
    outputs = []
    try:
        with torch.no_grad():
            for call in ways:
                layers.Conv2D.call = call
                outputs.append(keras.ops.convert_to_numpy(model(images, training=False)))
            np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
            for _ in range(repeats):
                for call, times in ways.items():
                    layers.Conv2D.call = call
                    start = time.perf_counter()
                    model(images, training=False)
                    times.append(1e3 * (time.perf_counter() - start))
    finally:
        layers.Conv2D.call = ours
    return [float(np.median(times)) for times in ways.values()]


if __name__ == "__main__":
    main()
