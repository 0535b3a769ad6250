"""`Conv2D`: Keras' layer, computed through `keras_dynconv.ops.conv`."""

import keras

from keras_dynconv.ops.convolution import conv


@keras.saving.register_keras_serializable(package="keras_dynconv")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with the aggregation core's torch fast path.

    Same arguments, weights, configuration and results as Keras' layer (a subclass:
    weight converters and `isinstance` checks treat it as one). On torch the
    convolution runs on views of the channels-last input, where Keras copies the
    activations three times per layer, and adds the bias itself, where Keras adds it
    in another pass over the output (ResNet-50 at batch 32 on a 2-core CPU: 1750 ->
    1597 ms; `python scripts/bench_conv_bias.py`). The zoo's static convolutions are
    this class.

    Example:
    >>> layer = Conv2D(8, 3, padding="same")
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    """

    def call(self, inputs):
        return call_with_bias(self, conv, inputs)

    def convolution_op(self, inputs, kernel):
        return conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


def call_with_bias(layer, convolution, inputs):
    """A Keras convolution layer's `call` through `convolution` (`conv` or
    `depthwise_conv`), which adds the layer's bias itself."""
    outputs = convolution(
        inputs,
        layer.kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
        bias=layer.bias if layer.use_bias else None,
    )
    if layer.activation is not None:
        return layer.activation(outputs)
    return outputs
