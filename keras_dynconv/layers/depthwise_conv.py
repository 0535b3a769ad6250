"""`DepthwiseConv2D`: Keras' layer, computed through `keras_dynconv.ops.depthwise_conv`."""

import keras

from keras_dynconv.layers.conv2d import call_with_bias
from keras_dynconv.layers.conv2d import convolution_variables
from keras_dynconv.layers.conv2d import prepared_convolution
from keras_dynconv.ops.depthwise import depthwise_conv


@keras.saving.register_keras_serializable(package="keras_dynconv")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with the aggregation core's fast paths.

    Same arguments, weights, configuration and results as Keras' layer (a subclass:
    weight converters and `isinstance` checks treat it as one). Only the computation
    differs: a sum over kernel taps under XLA, where Keras' depthwise convolution is
    15-20x slower on CPUs, and a convolution on views of the input on torch, where
    Keras copies the activations three times (and the convolution adds the bias). The
    zoo's static depthwise layers are this class.

    Example:
    >>> layer = DepthwiseConv2D(3, padding="same")
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 4)
    """

    def call(self, inputs):
        return call_with_bias(self, depthwise_conv, inputs)

    def prepared_variables(self):
        """The variables `prepared_inference` reads (`layers.prepared_calls`)."""
        return convolution_variables(self)

    def prepared_inference(self, inputs):
        """`call` for inference on inputs like `inputs`, prepared once (torch)."""
        return prepared_convolution(self, inputs, depthwise=True)
