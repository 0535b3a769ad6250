"""`Conv2D`: Keras' layer, computed through `keras_dynconv.ops.conv`."""

import keras

from keras_dynconv.ops.convolution import conv
from keras_dynconv.ops.torch_prepared import prepared_conv


@keras.saving.register_keras_serializable(package="keras_dynconv")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with the aggregation core's torch fast path.

    Same arguments, weights, configuration and results as Keras' layer (a subclass:
    weight converters and `isinstance` checks treat it as one). On torch the
    convolution runs on views of the channels-last input, where Keras copies the
    activations three times per layer, and adds the bias itself, where Keras adds it
    in another pass over the output (ResNet-50 at batch 32 on a 2-core CPU: 1750 ->
    1597 ms; `python scripts/bench_conv_bias.py`). A subclass that overrides
    `convolution_op` (Keras' hook, e.g. for weight standardisation) runs Keras' `call`
    around it. The zoo's static convolutions are this class.

    Example:
    >>> layer = Conv2D(8, 3, padding="same")
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    """

    def call(self, inputs):
        if own_convolution_op(self):
            return call_with_bias(self, conv, inputs)
        # A subclass's `convolution_op` (weight standardisation, say): Keras' `call` runs it.
        return super().call(inputs)

    def prepared_variables(self):
        """The variables `prepared_inference` reads (`layers.prepared_calls`)."""
        return convolution_variables(self)

    def prepared_inference(self, inputs):
        """`call` for inference on inputs like `inputs`, prepared once (torch)."""
        if not own_convolution_op(self):
            return None
        return prepared_convolution(self, inputs, depthwise=False)

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


def own_convolution_op(layer):
    """Whether `layer` (a `Conv2D`) convolves with this class's `convolution_op`, not a
    subclass's own."""
    return type(layer).convolution_op is Conv2D.convolution_op


def convolution_variables(layer):
    return [layer.kernel] + ([layer.bias] if layer.use_bias else [])


def prepared_convolution(layer, inputs, depthwise):
    """A Keras convolution layer's `call` as `torch_prepared.prepared_conv` (None for
    channels-first data)."""
    if layer.data_format != "channels_last" or len(inputs.shape) != 4:
        return None
    run = prepared_conv(
        inputs, layer.kernel, layer.strides, layer.padding, layer.dilation_rate,
        bias=layer.bias if layer.use_bias else None, depthwise=depthwise,
    )
    activation = layer.activation
    if activation is None or activation is keras.activations.linear:
        return run
    return lambda x: activation(run(x))
