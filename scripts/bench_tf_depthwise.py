"""Per-example depthwise convolution on TensorFlow without XLA, against the static layer.

    python scripts/bench_tf_depthwise.py [--batch 32] [--repeats 9]

What `model.predict` runs on a CPU unless the model is compiled with
`jit_compile=True`. For four depthwise layer shapes of EfficientNet-B0 it times, each in
a plain `tf.function`, median of `--repeats` calls:

- static: `tf.nn.depthwise_conv2d` with one kernel for the batch;
- folded with transposes: the generic path of
  `keras_dynconv.ops.per_example_depthwise_conv` (the batch folded into the channels,
  two transposes around one depthwise convolution);
- folded conv only: that convolution alone, on input already folded;
- grouped conv2d: the same folded convolution as a grouped `tf.nn.conv2d`;
- per example: one depthwise convolution per example (needs the batch size when the
  graph is traced): what the library now runs here (`keras_dynconv.ops.tf_depthwise`).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import ops as dynconv_ops  # noqa: E402
from keras_dynconv.ops.aggregation import _fold_batch_into_channels  # noqa: E402
from keras_dynconv.ops.aggregation import _unfold_batch_from_channels  # noqa: E402

# (height = width, channels, kernel size) of B0 depthwise layers, stride 1.
SHAPES = [(112, 32, 3), (56, 144, 3), (14, 672, 5), (7, 1152, 5)]


def variants(batch, size, channels, kernel_size):
    images = tf.random.normal((batch, size, size, channels))
    kernel = tf.random.normal((kernel_size, kernel_size, channels, 1))
    kernels = tf.random.normal((batch, kernel_size, kernel_size, channels, 1))
    folded, _ = _fold_batch_into_channels(images)
    folded_kernel = tf.reshape(
        tf.transpose(kernels, (1, 2, 0, 3, 4)), (kernel_size, kernel_size, batch * channels, 1)
    )
    strides = [1, 1, 1, 1]
    return {
        "static": lambda: tf.nn.depthwise_conv2d(images, kernel, strides, "SAME"),
        "folded with transposes": lambda: _unfold_batch_from_channels(
            tf.nn.depthwise_conv2d(
                _fold_batch_into_channels(images)[0], folded_kernel, strides, "SAME"),
            channels),
        "folded conv only": lambda: tf.nn.depthwise_conv2d(
            folded, folded_kernel, strides, "SAME"),
        "grouped conv2d": lambda: tf.nn.conv2d(
            folded, tf.reshape(folded_kernel, (kernel_size, kernel_size, 1, -1)), 1, "SAME"),
        "per example": lambda: dynconv_ops.per_example_depthwise_conv(
            images, kernels, 1, "same"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    names = None
    for size, channels, kernel_size in SHAPES:
        functions = variants(args.batch, size, channels, kernel_size)
        if names is None:
            names = list(functions)
            print("| layer | " + " | ".join(f"{name} ms" for name in names) + " |")
            print("| --- |" + " ---: |" * len(names))
        times = [median_ms(tf.function(function), args.repeats) for function in functions.values()]
        print(f"| {size}x{size}x{channels}, {kernel_size}x{kernel_size} | "
              + " | ".join(f"{value:.1f}" for value in times) + " |", flush=True)


if __name__ == "__main__":
    main()
