"""Training cost of CondConv's per-example 1x1 convolution on TensorFlow without XLA.

    python scripts/bench_tf_pointwise.py [--batch 64] [--repeats 7]

Part 1: forward and backward of one 1x1 CondConv layer (8 experts; expert combination,
then one matmul per example) against the static 1x1 convolution, for five layer shapes
of EfficientNet-B0, each in a plain `tf.function`: as the library runs it, and with the
batch split into chunks of g examples (so that each chunk's combined kernels and their
gradients stay in the cache before the next op reads them).
Part 2: the matmuls of that forward and backward pass one by one, for the 7x7 stage's
192 -> 1152 layer.
Median of `--repeats` calls after two warm-up calls.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from bench_optimizer_share import median_ms as median_ms_after_one_warm_up  # noqa: E402

from keras_dynconv import ops as dynconv_ops  # noqa: E402

NUM_EXPERTS = 8
# (height = width, input channels, output channels) of B0 1x1 layers.
SHAPES = [(7, 192, 1152), (7, 1152, 192), (7, 1152, 320), (14, 672, 112), (14, 112, 672)]
CHUNKS = (4, 8, 16, 32)


def median_ms(function, repeats):
    function()  # the first call traces the tf.function
    return median_ms_after_one_warm_up(function, repeats)


def condconv_pointwise(images, routing, experts):
    kernels = dynconv_ops.combine_experts(routing, experts)
    return dynconv_ops.per_example_conv(images, kernels[:, None, None])


def in_chunks(size):
    def run(images, routing, experts):
        count = images.shape[0] // size
        pieces = zip(tf.split(images, count), tf.split(routing, count))
        return tf.concat([condconv_pointwise(x, r, experts) for x, r in pieces], axis=0)

    return run


def gradient_ms(forward, watched, repeats):
    """Median ms of the gradient of `sum(forward() ** 2)` with respect to `watched`."""

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = forward()
            loss = tf.reduce_sum(outputs * outputs)
        return tape.gradient(loss, watched)

    return median_ms(step, repeats)


def layer_table(batch, repeats):
    print(f"1x1 layer, forward + backward, batch {batch}, ms")
    chunk_columns = " | ".join(f"chunks of {g}" for g in CHUNKS)
    print(f"| H=W | in | out | static | CondConv | {chunk_columns} |")
    for size, inputs, outputs in SHAPES:
        images = tf.random.normal((batch, size, size, inputs))
        routing = tf.random.uniform((batch, NUM_EXPERTS))
        experts = tf.random.normal((NUM_EXPERTS, inputs, outputs))
        kernel = tf.random.normal((1, 1, inputs, outputs))
        dynamic_weights = [images, experts, routing]
        times = [
            gradient_ms(lambda: tf.nn.conv2d(images, kernel, 1, "VALID"), [images, kernel],
                        repeats),
            gradient_ms(lambda: condconv_pointwise(images, routing, experts), dynamic_weights,
                        repeats),
        ]
        for chunk in CHUNKS:
            chunked = in_chunks(chunk)
            times.append(gradient_ms(lambda: chunked(images, routing, experts), dynamic_weights,
                                     repeats))
        print(f"| {size} | {inputs} | {outputs} | " + " | ".join(f"{t:.1f}" for t in times) + " |")


def matmul_table(batch, repeats):
    size, inputs, outputs = SHAPES[0]
    pixels, flat = size * size, inputs * outputs
    images = tf.random.normal((batch, pixels, inputs))
    output_gradient = tf.random.normal((batch, pixels, outputs))
    routing = tf.random.uniform((batch, NUM_EXPERTS))
    experts = tf.random.normal((NUM_EXPERTS, flat))
    kernels = tf.random.normal((batch, inputs, outputs))
    kernel_gradients = tf.random.normal((batch, flat))
    all_images = tf.reshape(images, (-1, inputs))
    all_output_gradients = tf.reshape(output_gradient, (-1, outputs))
    steps = {
        "combine kernels: routing @ experts": lambda: tf.matmul(routing, experts),
        "per-example forward: x_b @ K_b": lambda: tf.matmul(images, kernels),
        "input gradient: dy_b @ K_b^T":
            lambda: tf.matmul(output_gradient, kernels, transpose_b=True),
        "per-example kernel gradient: x_b^T @ dy_b":
            lambda: tf.matmul(images, output_gradient, transpose_a=True),
        "expert gradient: routing^T @ dK":
            lambda: tf.matmul(routing, kernel_gradients, transpose_a=True),
        "routing gradient: dK @ experts^T":
            lambda: tf.matmul(kernel_gradients, experts, transpose_b=True),
        "static forward: X @ W": lambda: tf.matmul(all_images, kernels[0]),
        "static kernel gradient: X^T @ dY":
            lambda: tf.matmul(all_images, all_output_gradients, transpose_a=True),
    }
    print(f"\nmatmuls of the {size}x{size} {inputs} -> {outputs} layer, batch {batch}, ms")
    for name, step in steps.items():
        print(f"| {name} | {median_ms(tf.function(step), repeats):.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    layer_table(args.batch, args.repeats)
    matmul_table(args.batch, args.repeats)


if __name__ == "__main__":
    main()
