"""Per-example depthwise convolution on TensorFlow without XLA: one convolution per example.

TensorFlow's CPU depthwise kernel is slow on the batch folded into the channels, and
the fold needs two transposes: at batch 32 the folded path took 3.1-4.3x the static
layer's time for four layer shapes of EfficientNet-B0, one depthwise convolution per
example 1.9-2.6x (`scripts/bench_tf_depthwise.py`, table in `zoo/benchmarks/README.md`).
It needs the batch size when the graph is traced, which `model.predict` gives for all
but a last, smaller batch. Equal to the generic path (tests/test_ops.py).
"""

import keras
from keras import ops

# The graph grows by one convolution per example: past this, the folded path.
MAX_BATCH = 64


def available(inputs):
    """TensorFlow, a batch size known when traced and at most `MAX_BATCH`."""
    batch = inputs.shape[0]
    return keras.backend.backend() == "tensorflow" and batch is not None and batch <= MAX_BATCH


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    inputs, kernels = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernels)
    batch = inputs.shape[0]
    # Split and unstacked, not indexed: the gradient of B slices is B full-size
    # tensors, zero but for one example, summed (quadratic in B); that of a split is
    # one concatenation.
    outputs = [
        ops.depthwise_conv(
            example_inputs,
            example_kernel,
            strides=strides,
            padding=padding,
            data_format="channels_last",
            dilation_rate=dilation_rate,
        )
        for example_inputs, example_kernel in zip(
            ops.split(inputs, batch, axis=0), ops.unstack(kernels, batch, axis=0)
        )
    ]
    return ops.concatenate(outputs, axis=0)
