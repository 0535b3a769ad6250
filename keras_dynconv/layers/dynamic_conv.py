"""Dynamic convolution (Chen et al., CVPR 2020): softmax attention over K kernels."""

import keras

from keras_dynconv.layers import validation
from keras_dynconv.layers.cond_conv import CondConv2D
from keras_dynconv.layers.cond_conv import CondDepthwiseConv2D

# Keeps the attention's hidden layer usable for thin inputs (e.g. an RGB stem).
MIN_ATTENTION_UNITS = 4


class _DynamicAttentionMixin:
    """Softmax attention GAP -> FC(C / reduction) -> ReLU -> FC(K) -> softmax(z / T)."""

    def _init_attention(self, reduction):
        self.reduction = validation.positive_int("reduction", reduction)

    def routing_hidden_units_for(self, input_channels):
        return max(input_channels // self.reduction, MIN_ATTENTION_UNITS)

    def _attention_config(self, config):
        for key in ("num_experts", "routing", "routing_hidden_units"):
            config.pop(key)
        config.update({"num_kernels": self.num_experts, "reduction": self.reduction})
        return config


@keras.saving.register_keras_serializable(package="keras_dynconv")
class DynamicConv2D(_DynamicAttentionMixin, CondConv2D):
    """Dynamic convolution: a softmax-attention-weighted sum of K kernels.

    The attention is `softmax(FC(ReLU(FC(GAP(x)))) / T)` with a hidden layer of
    `max(C // reduction, 4)` units; its weights sum to one. `T` starts at
    `temperature` (30 in the paper) and lives in a non-trainable variable that
    `keras_dynconv.callbacks.RoutingTemperatureScheduler` anneals to 1.

    Args:
        filters, kernel_size: as in `keras.layers.Conv2D`.
        num_kernels: K, the number of parallel kernels.
        reduction: channel reduction of the attention's hidden layer.
        temperature: initial softmax temperature.
        All other arguments as in `CondConv2D` (`strategy`, `use_bias`, ...).

    Example:
    >>> layer = DynamicConv2D(16, 3, num_kernels=4)
    >>> tuple(layer(keras.ops.ones((2, 32, 32, 8))).shape)
    (2, 32, 32, 16)
    """

    def __init__(
        self, filters, kernel_size, num_kernels=4, reduction=4, temperature=30.0, **kwargs
    ):
        super().__init__(
            filters,
            kernel_size,
            num_experts=num_kernels,
            routing="softmax",
            temperature=temperature,
            **kwargs,
        )
        self._init_attention(reduction)

    def get_config(self):
        return self._attention_config(super().get_config())


@keras.saving.register_keras_serializable(package="keras_dynconv")
class DynamicDepthwiseConv2D(_DynamicAttentionMixin, CondDepthwiseConv2D):
    """Depthwise dynamic convolution: softmax attention over K depthwise kernels.

    Arguments as in `DynamicConv2D`, plus `depth_multiplier`.

    Example:
    >>> layer = DynamicDepthwiseConv2D(3, num_kernels=4)
    >>> tuple(layer(keras.ops.ones((2, 32, 32, 8))).shape)
    (2, 32, 32, 8)
    """

    def __init__(self, kernel_size, num_kernels=4, reduction=4, temperature=30.0, **kwargs):
        super().__init__(
            kernel_size,
            num_experts=num_kernels,
            routing="softmax",
            temperature=temperature,
            **kwargs,
        )
        self._init_attention(reduction)

    def get_config(self):
        return self._attention_config(super().get_config())
