"""`depthwise_conv`: `keras.ops.depthwise_conv` with the fast paths of the per-example core.

The zoo's static depthwise layers share the per-example layers' problems: under XLA
on CPUs a 5x5 depthwise convolution of EfficientNet-B0 (batch 32, 7x7, 1152
channels) takes 168 ms forward and 1.5 s backward against 9 ms as a sum over kernel
taps, and on torch Keras copies the activations three times around it.
"""

import keras
from keras import ops

from keras_dynconv.ops import portability
from keras_dynconv.ops import taps
from keras_dynconv.ops import torch_conv
from keras_dynconv.ops.convolution import add_bias


def depthwise_conv(
    inputs, kernel, strides=1, padding="valid", dilation_rate=1, data_format=None, bias=None
):
    """Depthwise 2D convolution, equal to `keras.ops.depthwise_conv` (plus `bias`).

    Args:
        inputs: `[B, H, W, C]` (channels_last; channels_first goes to Keras as is).
        kernel: `[kh, kw, C, depth_multiplier]`.
        strides, padding, dilation_rate, data_format: as in `keras.ops.depthwise_conv`.
        bias: optional `[C * depth_multiplier]`, added to every output pixel.

    Returns:
        `[B, H', W', C * depth_multiplier]`. Under XLA (JAX, TensorFlow with
        `jit_compile`) a sum over kernel taps, on torch a convolution on views of the
        input that adds the bias itself; elsewhere `keras.ops.depthwise_conv`.

    Example:
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> tuple(depthwise_conv(x, keras.ops.ones((3, 3, 3, 1)), padding="same").shape)
    (2, 8, 8, 3)
    """
    data_format = data_format or keras.config.image_data_format()
    # Exporting (`portable()`), a shared kernel is a constant: Keras' op exports as is.
    if data_format == "channels_last" and len(inputs.shape) == 4 and not portability.active():
        if taps.use_taps(inputs):
            outputs = taps.per_example_depthwise_conv_taps(
                inputs, ops.expand_dims(kernel, 0), strides, padding, dilation_rate
            )
            return add_bias(outputs, bias, data_format)
        if torch_conv.available(inputs):
            return torch_conv.depthwise_conv(
                inputs, kernel, strides, padding, dilation_rate, bias=bias
            )
    outputs = ops.depthwise_conv(
        inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate,
        data_format=data_format,
    )
    return add_bias(outputs, bias, data_format)
