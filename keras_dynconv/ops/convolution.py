"""`conv`: `keras.ops.conv` with the torch fast path of the aggregation core.

Keras' convolution on torch copies channels-last activations to channels-first, back to
channels-last memory, and again after the convolution; EfficientNet-B0 has 65
convolutions. `keras_dynconv.ops.torch_conv` runs the same convolution on views.
"""

import keras
from keras import ops

from keras_dynconv.ops import torch_conv


def conv(
    inputs, kernel, strides=1, padding="valid", dilation_rate=1, data_format=None, bias=None
):
    """2D convolution, equal to `keras.ops.conv` (plus `bias`).

    Args:
        inputs: `[B, H, W, Cin]` (channels_last; other layouts and ranks go to Keras).
        kernel: `[kh, kw, Cin / groups, Cout]`.
        strides, padding, dilation_rate, data_format: as in `keras.ops.conv`.
        bias: optional `[Cout]`, added to every output pixel.

    Returns:
        `[B, H', W', Cout]`: on torch computed on views of the input, the bias added by
        the convolution (not as another pass over the output), elsewhere
        `keras.ops.conv` plus the bias.

    Example:
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> tuple(conv(x, keras.ops.ones((3, 3, 3, 5)), padding="same").shape)
    (2, 8, 8, 5)
    """
    data_format = data_format or keras.config.image_data_format()
    if data_format == "channels_last" and len(inputs.shape) == 4 and torch_conv.available(inputs):
        return torch_conv.conv(inputs, kernel, strides, padding, dilation_rate, bias=bias)
    outputs = ops.conv(
        inputs, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate,
        data_format=data_format,
    )
    return add_bias(outputs, bias, data_format)


def add_bias(outputs, bias, data_format):
    """`outputs` plus `bias` along the channel axis of `data_format` (`outputs` itself
    when `bias` is None)."""
    if bias is None:
        return outputs
    shape = [1] * len(outputs.shape)
    shape[-1 if data_format == "channels_last" else 1] = -1
    return ops.add(outputs, ops.reshape(bias, shape))
