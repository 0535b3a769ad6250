"""Per-example depthwise convolution on TensorFlow without XLA: one convolution per example.

TensorFlow's CPU depthwise kernel is slow on the batch folded into the channels, and
the fold needs two transposes: at batch 32 the folded path took 3.1-4.3x the static
layer's time for four layer shapes of EfficientNet-B0, one depthwise convolution per
example 1.9-2.6x (`scripts/bench_tf_depthwise.py`, table in `zoo/benchmarks/README.md`).
It needs the batch size when the graph is traced, which `model.predict` gives for all
but a last, smaller batch.

The kernel gradient is TensorFlow's weak spot: its depthwise filter gradient is fast
for kernels up to 3x3 only (a 5x5 layer at 7x7x1152, batch 64: 210 ms per example
split, where the forward pass takes 13 ms). The kernel gradient of one example is the
correlation of its padded input with its output gradient, itself a depthwise
convolution with the output gradient as the filter (17 ms there;
`scripts/bench_tf_depthwise.py --gradient`). Both paths equal the generic one
(tests/test_ops.py).
"""

import keras
from keras import ops

from keras_dynconv.ops import taps

# The graph grows by one convolution per example: past this, the folded path.
MAX_BATCH = 64
# TensorFlow's own filter gradient is the faster one up to this kernel size.
LARGEST_NATIVE_GRADIENT_KERNEL = 3


def available(inputs):
    """TensorFlow, a batch size known when traced and at most `MAX_BATCH`."""
    batch = inputs.shape[0]
    return keras.backend.backend() == "tensorflow" and batch is not None and batch <= MAX_BATCH


def correlation_gradient_pays(kernel_size, dilation_rate):
    """Whether the kernel gradient should be the correlation: kernels larger than
    `LARGEST_NATIVE_GRADIENT_KERNEL`, undilated, on TensorFlow."""
    return (
        keras.backend.backend() == "tensorflow"
        and max(kernel_size) > LARGEST_NATIVE_GRADIENT_KERNEL
        and taps.pair(dilation_rate) == (1, 1)
    )


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    inputs, kernels = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernels)
    # The correlation's padding and crop need the spatial size when traced.
    spatial_size_known = None not in tuple(inputs.shape[1:3])
    if spatial_size_known and correlation_gradient_pays(kernels.shape[1:3], dilation_rate):
        return conv_with_correlation_gradient(inputs, kernels, strides, padding)
    return _one_conv_per_example(inputs, kernels, strides, padding, dilation_rate)


def _one_conv_per_example(inputs, kernels, strides, padding, dilation_rate):
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


def conv_with_correlation_gradient(inputs, kernels, strides, padding):
    """One undilated depthwise convolution per example (TensorFlow tensors), whose
    kernel gradient is computed as a correlation (module docstring)."""
    import tensorflow as tf

    stride_h, stride_w = taps.pair(strides)
    tf_strides = [1, stride_h, stride_w, 1]

    @tf.custom_gradient
    def convolve(inputs, kernels):
        outputs = _one_conv_per_example(inputs, kernels, strides, padding, 1)

        def gradient(output_gradient):
            return (
                _input_gradient(inputs, kernels, output_gradient, tf_strides, padding),
                correlation_kernel_gradient(
                    inputs, output_gradient, kernels.shape[1:3], (stride_h, stride_w), padding
                ),
            )

        return outputs, gradient

    return convolve(inputs, kernels)


def _input_gradient(inputs, kernels, output_gradient, tf_strides, padding):
    import tensorflow as tf

    batch = inputs.shape[0]
    example_shape = [1] + list(inputs.shape[1:])
    return tf.concat(
        [
            tf.nn.depthwise_conv2d_backprop_input(
                example_shape, example_kernel, example_gradient, tf_strides, padding.upper()
            )
            for example_kernel, example_gradient in zip(
                tf.unstack(kernels, batch), tf.split(output_gradient, batch)
            )
        ],
        axis=0,
    )


def correlation_kernel_gradient(inputs, output_gradient, kernel_size, strides, padding):
    """`[B, kh, kw, C, M]`: the gradient of every example's depthwise kernel.

    `dK[b, i, j, c, m] = sum_(h, w) padded[b, h*sh + i, w*sw + j, c] * dY[b, h, w, c*M + m]`,
    one depthwise convolution per example of the padded input (each channel repeated
    M times) with the output gradient as the filter, dilated by the stride.
    """
    import tensorflow as tf

    batch, height, width, channels = inputs.shape
    (kernel_h, kernel_w), (stride_h, stride_w) = kernel_size, strides
    multiplier = output_gradient.shape[-1] // channels
    _, pad_h = taps.output_size_and_padding(height, kernel_h, stride_h, 1, padding.lower())
    _, pad_w = taps.output_size_and_padding(width, kernel_w, stride_w, 1, padding.lower())
    padded = tf.pad(inputs, ((0, 0), pad_h, pad_w, (0, 0)))
    if multiplier > 1:
        padded = tf.repeat(padded, multiplier, axis=-1)
    kernel_gradients = []
    for example_inputs, example_gradient in zip(
        tf.split(padded, batch), tf.unstack(output_gradient, batch)
    ):
        correlation = tf.nn.depthwise_conv2d(
            example_inputs,
            example_gradient[..., None],
            strides=[1, 1, 1, 1],
            padding="VALID",
            dilations=[stride_h, stride_w],
        )
        # Rows past the kernel's are windows the forward pass never reached.
        kernel_gradients.append(correlation[0, :kernel_h, :kernel_w])
    stacked = tf.stack(kernel_gradients)
    return tf.reshape(stacked, (batch, kernel_h, kernel_w, channels, multiplier))
