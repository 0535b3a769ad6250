"""Sparse dynamic convolution (SD-Conv): learned magnitude masks on the K kernels."""

import keras
from keras import ops

from keras_dynconv.layers import validation
from keras_dynconv.layers.dynamic_conv import DynamicConv2D
from keras_dynconv.layers.dynamic_conv import DynamicDepthwiseConv2D


def soft_magnitude_mask(kernel, threshold, mask_temperature):
    """SD-Conv eq. 3-4: `softmax([psi1, 1 - psi1] / T)[0]` with `psi1 = sigmoid(|W| - tau)`.

    The two-way softmax equals `sigmoid((2 * psi1 - 1) / T)`, which is how it is
    computed. With `T = 1/1024` the values are almost exactly 0 or 1.
    """
    psi_keep = ops.sigmoid(ops.abs(kernel) - threshold)
    return ops.sigmoid((2.0 * psi_keep - 1.0) / mask_temperature)


def straight_through_round(soft_mask):
    """SD-Conv eq. 5: forward `round(M~)`, backward the gradient of `M~`."""
    return soft_mask + ops.stop_gradient(ops.round(soft_mask) - soft_mask)


class SparseMaskMixin:
    """SD-Conv's learned magnitude masks, shared by the regular and depthwise layers.

    `isinstance(layer, SparseMaskMixin)` finds every sparse dynamic layer.
    """

    def _init_sparsity(
        self, target_density, sparsity_penalty, mask_temperature, threshold_initializer
    ):
        self.initial_target_density = validation.density("target_density", target_density)
        if (
            isinstance(sparsity_penalty, bool)
            or not isinstance(sparsity_penalty, (int, float))
            or sparsity_penalty < 0
        ):
            raise ValueError(
                "Invalid value for argument `sparsity_penalty`. Expected a number "
                f">= 0. Received sparsity_penalty={sparsity_penalty!r}"
            )
        self.sparsity_penalty = float(sparsity_penalty)
        self.mask_temperature = validation.positive_float(
            "mask_temperature", mask_temperature
        )
        self.threshold_initializer = keras.initializers.get(threshold_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.threshold = self.add_weight(
            name="threshold", shape=(), initializer=self.threshold_initializer
        )
        self.target_density = self.add_weight(
            name="target_density",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_target_density),
            trainable=False,
        )

    def _mask(self):
        soft = soft_magnitude_mask(
            self.kernel, ops.cast(self.threshold, self.kernel.dtype), self.mask_temperature
        )
        return straight_through_round(soft)

    def _penalty_of(self, mask):
        density = ops.mean(ops.cast(mask, "float32"))
        return self.sparsity_penalty * ops.relu(
            density - ops.cast(self.target_density, "float32")
        )

    def expert_kernels(self):
        mask = self._mask()
        self.add_loss(self._penalty_of(mask))
        return self.kernel * mask

    def density(self):
        """Fraction of expert-kernel weights the current masks keep (a scalar)."""
        return ops.mean(ops.cast(self._mask(), "float32"))

    def penalty(self):
        """The sparsity penalty the layer adds to the loss, for the current weights."""
        return self._penalty_of(self._mask())

    def set_target_density(self, value):
        """Sets the density the penalty pushes towards (used by the scheduler)."""
        self.target_density.assign(validation.density("target_density", value))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "target_density": self.initial_target_density,
                "sparsity_penalty": self.sparsity_penalty,
                "mask_temperature": self.mask_temperature,
                "threshold_initializer": keras.initializers.serialize(
                    self.threshold_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_dynconv")
class SparseDynamicConv2D(SparseMaskMixin, DynamicConv2D):
    """Dynamic convolution whose K kernels are pruned by learned magnitude masks.

    Each kernel weight is kept where its magnitude beats a learnable per-layer
    threshold `tau` (SD-Conv eq. 2-5): a sharpened sigmoid gives a soft mask, rounded
    to 0/1 with a straight-through gradient, so both the kernel and `tau` learn.
    The masked kernels are then combined by the softmax attention of
    `DynamicConv2D` (eq. 6).

    The layer adds its sparsity penalty with `add_loss`:
    `sparsity_penalty * relu(density - target_density)`, where `density` is the
    fraction of kept weights (with the straight-through gradient). This is SD-Conv's
    L0 penalty (eq. 8) normalised per layer, so its size does not depend on the layer's
    parameter count; the penalty acts only while the layer is denser than its target.
    `target_density` is a non-trainable variable, scheduled during training by
    `keras_dynconv.callbacks.SparsityScheduler`.

    Args:
        filters, kernel_size, num_kernels, temperature: as in `DynamicConv2D`.
        reduction: attention reduction (16 in SD-Conv).
        target_density: fraction of expert weights to keep, in (0, 1].
        sparsity_penalty: lambda_s of SD-Conv (0.01).
        mask_temperature: T of the sharpened mask (1/1024 in SD-Conv).
        threshold_initializer: initial tau; the default 0 keeps every weight.
        All other arguments as in `CondConv2D`.

    Example:
    >>> layer = SparseDynamicConv2D(16, 3, target_density=0.5)
    >>> y = layer(keras.ops.ones((2, 32, 32, 8)))
    >>> round(float(layer.density()), 2)
    1.0
    """

    def __init__(
        self,
        filters,
        kernel_size,
        num_kernels=4,
        reduction=16,
        target_density=0.5,
        sparsity_penalty=0.01,
        mask_temperature=1.0 / 1024.0,
        threshold_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            filters, kernel_size, num_kernels=num_kernels, reduction=reduction, **kwargs
        )
        self._init_sparsity(
            target_density, sparsity_penalty, mask_temperature, threshold_initializer
        )


@keras.saving.register_keras_serializable(package="keras_dynconv")
class SparseDynamicDepthwiseConv2D(SparseMaskMixin, DynamicDepthwiseConv2D):
    """Depthwise sparse dynamic convolution: SD-Conv masks on K depthwise kernels.

    SD-Conv converts every convolution but the stem, so MobileNetV2's depthwise
    layers are masked too. Arguments as in `SparseDynamicConv2D`, without `filters`
    and with `depth_multiplier`.

    Example:
    >>> layer = SparseDynamicDepthwiseConv2D(3, target_density=0.5)
    >>> tuple(layer(keras.ops.ones((2, 16, 16, 8))).shape)
    (2, 16, 16, 8)
    """

    def __init__(
        self,
        kernel_size,
        num_kernels=4,
        reduction=16,
        target_density=0.5,
        sparsity_penalty=0.01,
        mask_temperature=1.0 / 1024.0,
        threshold_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            kernel_size, num_kernels=num_kernels, reduction=reduction, **kwargs
        )
        self._init_sparsity(
            target_density, sparsity_penalty, mask_temperature, threshold_initializer
        )
