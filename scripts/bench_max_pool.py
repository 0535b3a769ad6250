"""Max pooling on torch: Keras' layer against `keras_dynconv.layers.MaxPooling2D`.

    python scripts/bench_max_pool.py [--batch 32] [--repeats 9] [--model resnet50]

ResNet-50's stem pooling (3x3, stride 2, on the zero-padded 114x114x64 activations) and
one "same" pooling, eager under `torch.no_grad()`, median ms of `--repeats` calls;
outputs checked equal. With `--model`, also that zoo model built twice, with
`keras_dynconv.layers.MaxPooling2D` and with Keras' layer in its place, called in turns
(one process, so that process-to-process noise does not enter the comparison).
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

# (height = width, channels, pool size, stride, padding)
SHAPES = [(114, 64, 3, 2, "valid"), (56, 256, 3, 1, "same")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--model", help="a zoo model to time both ways, e.g. resnet50")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {keras.backend.backend()}, {torch.get_num_threads()} threads")
    print("| input | pool | Keras ms | keras_dynconv ms |")
    print("| --- | --- | ---: | ---: |")
    for size, channels, pool, stride, padding in SHAPES:
        inputs = keras.ops.convert_to_tensor(
            rng.standard_normal((args.batch, size, size, channels)).astype("float32")
        )
        theirs = keras.layers.MaxPooling2D(pool, strides=stride, padding=padding)
        ours = layers.MaxPooling2D(pool, strides=stride, padding=padding)
        with torch.no_grad():
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(ours(inputs)), keras.ops.convert_to_numpy(theirs(inputs))
            )
            times = [median_ms(lambda: layer(inputs), args.repeats) for layer in (theirs, ours)]
        print(f"| {size}x{size}x{channels} | {pool}x{pool}, stride {stride}, {padding} | "
              f"{times[0]:.1f} | {times[1]:.1f} |")
    if args.model:
        time_model_with_keras_layer(args.model, "MaxPooling2D", args.batch, args.repeats, rng)


if __name__ == "__main__":
    main()
