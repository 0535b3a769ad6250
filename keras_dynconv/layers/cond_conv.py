"""CondConv layers (Yang et al., NeurIPS 2019): convolution, depthwise and dense."""

import keras

from keras_dynconv import ops as dynconv_ops
from keras_dynconv.layers import shapes
from keras_dynconv.layers import validation
from keras_dynconv.layers.expert_layer import ExpertLayer


class _SpatialExpertLayer(ExpertLayer):
    """Shared arguments and shape logic of the 2D convolutional expert layers."""

    input_rank = 4

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = validation.int_pair("kernel_size", kernel_size)
        self.strides = validation.int_pair("strides", strides)
        self.padding = validation.padding(padding)
        self.dilation_rate = validation.int_pair("dilation_rate", dilation_rate)
        self.data_format = validation.channels_last(data_format)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` is not compatible with `dilation_rate > 1`. Received "
                f"strides={strides} and dilation_rate={dilation_rate}"
            )

    def _conv_arguments(self):
        return dict(
            strides=self.strides, padding=self.padding, dilation_rate=self.dilation_rate
        )

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return shapes.conv_output_shape(
            input_shape,
            self.output_channels(input_shape[-1]),
            self.kernel_size,
            self.strides,
            self.padding,
            self.dilation_rate,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "data_format": self.data_format,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_dynconv")
class CondConv2D(_SpatialExpertLayer):
    """Conditionally parameterized 2D convolution.

    The kernel of each example is `sum_e r_e(x) * W_e`, with `r(x)` the routing
    weights; the layer then runs one convolution (CondConv paper, eq. 1-3). Expert
    kernels live in one weight `kernel` of shape `(E, kh, kw, Cin, filters)`.

    Args:
        filters: number of output channels.
        kernel_size: int or pair.
        num_experts: E, the number of expert kernels.
        strides, padding, dilation_rate: as in `keras.layers.Conv2D`
            (`padding` defaults to `"same"` as in the official CondConv code).
        use_bias: per-expert biases `(E, filters)`, mixed with the same weights.
        activation: applied to the output.
        routing: activation of the layer's own routing function (`"sigmoid"`,
            `"softmax"`, `"tanh"`, `"relu"`), or `None` when the routing weights are
            always passed to `call` (routing shared across a block).
        routing_hidden_units: optional ReLU hidden layer in the routing function.
        temperature: routing logits are divided by it.
        strategy: `"per_example"` (combine kernels, then one grouped convolution),
            `"mixture"` (E convolutions as one, then weight the outputs) or `"auto"`:
            per-example on CPUs (measured faster on every backend); on GPUs and
            TPUs the CondConv paper's rule, mixture when training with
            `num_experts <= 4` (`keras_dynconv.layers.strategy`). Both give the
            same result.
        expert_dropout: during training, each routing weight is dropped with this
            probability (kept ones are scaled by `1 / (1 - rate)`), the paper's
            Shake-Shake-like regulariser for ResNet-50.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Conv2D`.
        routing_initializer: initializer of the routing function's kernel.
        seed: seed of the expert dropout.

    Call arguments:
        inputs: `[B, H, W, Cin]`.
        routing_weights: optional `[B, E]`; used instead of the layer's own routing.
        training: whether in training mode (strategy choice, expert dropout).

    Example:
    >>> layer = CondConv2D(16, 3, num_experts=4)
    >>> tuple(layer(keras.ops.ones((2, 32, 32, 8))).shape)
    (2, 32, 32, 16)

    Shared routing, as in a CondConv block:
    >>> x = keras.Input((32, 32, 8))
    >>> r = Routing(num_experts=4)(x)
    >>> y = CondConv2D(16, 1, num_experts=4, routing=None)(x, routing_weights=r)
    """

    def __init__(self, filters, kernel_size, num_experts=8, **kwargs):
        super().__init__(kernel_size=kernel_size, num_experts=num_experts, **kwargs)
        self.filters = validation.positive_int("filters", filters)

    def expert_kernel_shape(self, input_channels):
        return self.kernel_size + (input_channels, self.filters)

    def output_channels(self, input_channels):
        return self.filters

    def apply_per_example(self, inputs, kernels):
        return dynconv_ops.per_example_conv(inputs, kernels, **self._conv_arguments())

    def apply_per_example_experts(self, inputs, experts, routing_weights):
        return dynconv_ops.per_example_conv_of_experts(
            inputs, experts, routing_weights, **self._conv_arguments()
        )

    def apply_mixture(self, inputs, experts, routing_weights):
        return dynconv_ops.mixture_conv(
            inputs, experts, routing_weights, **self._conv_arguments()
        )

    def get_config(self):
        config = super().get_config()
        config["filters"] = self.filters
        return config


@keras.saving.register_keras_serializable(package="keras_dynconv")
class CondDepthwiseConv2D(_SpatialExpertLayer):
    """Conditionally parameterized depthwise 2D convolution.

    Expert kernels: one weight `kernel` of shape `(E, kh, kw, C, depth_multiplier)`.
    Output channels: `C * depth_multiplier`, ordered as in
    `keras.layers.DepthwiseConv2D`. All other arguments as in `CondConv2D`.

    Example:
    >>> layer = CondDepthwiseConv2D(3, num_experts=4, strides=2)
    >>> tuple(layer(keras.ops.ones((2, 32, 32, 8))).shape)
    (2, 16, 16, 8)
    """

    def __init__(self, kernel_size, num_experts=8, depth_multiplier=1, **kwargs):
        super().__init__(kernel_size=kernel_size, num_experts=num_experts, **kwargs)
        self.depth_multiplier = validation.positive_int(
            "depth_multiplier", depth_multiplier
        )

    def expert_kernel_shape(self, input_channels):
        return self.kernel_size + (input_channels, self.depth_multiplier)

    def output_channels(self, input_channels):
        return input_channels * self.depth_multiplier

    def apply_per_example(self, inputs, kernels):
        return dynconv_ops.per_example_depthwise_conv(
            inputs, kernels, **self._conv_arguments()
        )

    def apply_per_example_experts(self, inputs, experts, routing_weights):
        return dynconv_ops.per_example_depthwise_conv_of_experts(
            inputs, experts, routing_weights, **self._conv_arguments()
        )

    def apply_mixture(self, inputs, experts, routing_weights):
        return dynconv_ops.mixture_depthwise_conv(
            inputs, experts, routing_weights, **self._conv_arguments()
        )

    def get_config(self):
        config = super().get_config()
        config["depth_multiplier"] = self.depth_multiplier
        return config


@keras.saving.register_keras_serializable(package="keras_dynconv")
class CondDense(ExpertLayer):
    """Conditionally parameterized dense layer (the paper converts classifiers too).

    Expert kernels: one weight `kernel` of shape `(E, input_dim, units)`. Inputs of
    rank > 2 are routed on the mean over their inner axes. Other arguments as in
    `CondConv2D`.

    Example:
    >>> layer = CondDense(10, num_experts=4)
    >>> tuple(layer(keras.ops.ones((2, 32))).shape)
    (2, 10)
    """

    def __init__(self, units, num_experts=8, **kwargs):
        super().__init__(num_experts=num_experts, **kwargs)
        self.units = validation.positive_int("units", units)

    def expert_kernel_shape(self, input_channels):
        return (input_channels, self.units)

    def output_channels(self, input_channels):
        return self.units

    def apply_per_example(self, inputs, kernels):
        return dynconv_ops.per_example_dense(inputs, kernels)

    def apply_mixture(self, inputs, experts, routing_weights):
        return dynconv_ops.mixture_dense(inputs, experts, routing_weights)

    def compute_output_shape(self, input_shape):
        self._check_input_shape(input_shape)
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config
