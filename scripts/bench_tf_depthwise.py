"""Per-example depthwise convolution on TensorFlow without XLA, against the static layer.

    python scripts/bench_tf_depthwise.py [--batch 32] [--repeats 9] [--gradient]

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

With `--gradient`, forward and backward (gradients of the inputs and kernels) for the
depthwise layer shapes of CondConv-EfficientNet-B0's dynamic blocks and two larger
ones: the static layer, the per-example path with TensorFlow's own kernel gradient, and
with the kernel gradient as a correlation (what the library runs for kernels larger
than 3x3); then the per-example kernel gradient alone, both ways.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from bench_optimizer_share import median_ms  # noqa: E402  (scripts/ is on sys.path)

from keras_dynconv import ops as dynconv_ops  # noqa: E402
from keras_dynconv.ops import tf_depthwise  # noqa: E402
from keras_dynconv.ops.aggregation import _fold_batch_into_channels  # noqa: E402
from keras_dynconv.ops.aggregation import _unfold_batch_from_channels  # noqa: E402

# (height = width, channels, kernel size) of B0 depthwise layers, stride 1.
SHAPES = [(112, 32, 3), (56, 144, 3), (14, 672, 5), (7, 1152, 5)]
# (height = width, channels, kernel size, stride): CondConv-B0's dynamic depthwise
# layers, then two of B0's earlier ones.
GRADIENT_SHAPES = [
    (14, 480, 5, 1), (14, 672, 5, 1), (14, 672, 5, 2), (7, 1152, 5, 1), (7, 1152, 3, 1),
    (56, 144, 5, 2), (28, 240, 5, 1),
]


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


def gradient_variants(batch, size, channels, kernel_size, stride):
    images = tf.random.normal((batch, size, size, channels))
    kernels = tf.random.normal((batch, kernel_size, kernel_size, channels, 1))
    output_size = -(-size // stride)
    output_gradient = tf.random.normal((batch, output_size, output_size, channels))

    def forward_backward(convolve):
        def step():
            with tf.GradientTape() as tape:
                tape.watch([images, kernels])
                loss = tf.reduce_sum(convolve() * output_gradient)
            return tape.gradient(loss, [images, kernels])

        return step

    def per_example(correlation):
        def convolve():
            if correlation:
                return tf_depthwise.conv_with_correlation_gradient(images, kernels, stride, "same")
            return tf_depthwise._one_conv_per_example(images, kernels, stride, "same", 1)

        return convolve

    def native_kernel_gradient():
        return tf.stack([
            tf.nn.depthwise_conv2d_backprop_filter(
                example, (kernel_size, kernel_size, channels, 1), example_gradient,
                [1, stride, stride, 1], "SAME")
            for example, example_gradient in zip(
                tf.split(images, batch), tf.split(output_gradient, batch))
        ])

    return {
        "static": forward_backward(
            lambda: tf.nn.depthwise_conv2d(images, kernels[0], [1, stride, stride, 1], "SAME")),
        "per example, TF's gradient": forward_backward(per_example(False)),
        "per example, correlation": forward_backward(per_example(True)),
        "kernel gradient alone, TF's": native_kernel_gradient,
        "kernel gradient alone, correlation": lambda: tf_depthwise.correlation_kernel_gradient(
            images, output_gradient, (kernel_size, kernel_size), (stride, stride), "same"),
    }


def print_table(shapes, make_variants, repeats, label):
    names = None
    for shape in shapes:
        functions = make_variants(*shape)
        if names is None:
            names = list(functions)
            print("| layer | " + " | ".join(f"{name} ms" for name in names) + " |")
            print("| --- |" + " ---: |" * len(names))
        times = [median_ms(tf.function(function), repeats) for function in functions.values()]
        print(f"| {label(*shape)} | " + " | ".join(f"{value:.1f}" for value in times) + " |",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--gradient", action="store_true",
                        help="time forward and backward passes (module docstring)")
    args = parser.parse_args()
    if args.gradient:
        print_table(
            GRADIENT_SHAPES,
            lambda *shape: gradient_variants(args.batch, *shape),
            args.repeats,
            lambda size, channels, kernel, stride: (
                f"{size}x{size}x{channels}, {kernel}x{kernel}, stride {stride}"),
        )
        return
    print_table(
        SHAPES,
        lambda *shape: variants(args.batch, *shape),
        args.repeats,
        lambda size, channels, kernel: f"{size}x{size}x{channels}, {kernel}x{kernel}",
    )

if __name__ == "__main__":
    main()
