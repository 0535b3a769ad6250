"""CNN Mixture-of-Depths (Cakaj et al., arXiv 2409.17016): top-k channel routing."""

import keras
from keras import ops

from keras_dynconv import ops as dynconv_ops
from keras_dynconv.layers import direct_calls
from keras_dynconv.layers import folded_block
from keras_dynconv.layers import validation
from keras_dynconv.ops import torch_mod


@keras.saving.register_keras_serializable(package="keras_dynconv")
class MoDBlock(keras.layers.Layer):
    """Runs a conv block on the k most important channels only, with static shapes.

    A channel selector (GAP -> FC -> ReLU -> FC -> sigmoid, no biases) scores the C
    input channels; the top `k = floor(C / capacity)` channels are gathered, passed
    through `block`, scaled by their scores (which makes the selector trainable) and
    added onto the first k channels of the input; the other channels pass unchanged
    (paper Sec. 3.1-3.3). The output has the input's shape. Tied scores select the
    lowest channel indices, identically on every backend.

    For eager inference on torch the block runs as one prepared function
    (`keras_dynconv.ops.torch_mod`; a ReLU `activation` applied while the output is
    written, and a `block` of convolutions, batch normalisations and ReLUs with the
    normalisations folded into the convolutions: `layers.folded_block`).

    Args:
        block: a Keras layer or model mapping `[B, H, W, k]` to `[B, H, W, k]`, e.g.
            a bottleneck built for k channels.
        capacity: c in the paper (64 for ResNets, 16 for MobileNetV2).
        reduction: the selector's hidden layer has `max(C // reduction, 1)` units.
        activation: applied to the output (all channels), e.g. the ReLU that follows
            a ResNet block; None for none.
        kernel_initializer, kernel_regularizer: of the selector's two FC layers.

    Call arguments:
        inputs: `[B, H, W, C]`.
        training: passed to `block`.

    Example:
    >>> block = keras.layers.Conv2D(4, 3, padding="same")
    >>> layer = MoDBlock(block, capacity=16)
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 64))).shape)
    (2, 8, 8, 64)
    """

    # `call` runs `block` with its own `training` argument, so that
    # `direct_calls.inference_call` may call it without Keras' call context.
    passes_training_to_sublayers = True

    def __init__(
        self,
        block,
        capacity=64,
        reduction=16,
        activation=None,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(block, keras.layers.Layer):
            raise ValueError(
                "Invalid value for argument `block`. Expected a Keras layer or "
                f"model. Received block={block!r}"
            )
        self.block = block
        self.capacity = validation.positive_int("capacity", capacity)
        self.reduction = validation.positive_int("reduction", reduction)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _check_input_shape(self, shape):
        validation.input_shape(
            self.name, shape, rank=4, built_channels=getattr(self, "input_channels", None)
        )

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        channels = input_shape[-1]
        self.num_selected = channels // self.capacity
        if self.num_selected < 1:
            raise ValueError(
                f"Invalid value for argument `capacity`: k = floor(C / capacity) must "
                f"be >= 1, but inputs have C={channels}. Received capacity={self.capacity}"
            )
        hidden_units = max(channels // self.reduction, 1)
        self.selector_hidden_kernel = self.add_weight(
            name="selector_hidden_kernel",
            shape=(channels, hidden_units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.selector_kernel = self.add_weight(
            name="selector_kernel",
            shape=(hidden_units, channels),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        selected_shape = tuple(input_shape[:-1]) + (self.num_selected,)
        if not self.block.built:
            self.block.build(selected_shape)
        block_output_shape = tuple(self.block.compute_output_shape(selected_shape))
        if block_output_shape[1:] != selected_shape[1:]:
            raise ValueError(
                f"Invalid value for argument `block`: it must map the k={self.num_selected} "
                f"selected channels to a tensor of the same shape {selected_shape[1:]}, "
                f"but it returns shape {block_output_shape[1:]}"
            )
        self.input_channels = channels

    def channel_scores(self, inputs):
        """The selector's `[B, C]` importance scores in (0, 1)."""
        pooled = ops.mean(inputs, axis=(1, 2))
        hidden = ops.relu(ops.matmul(pooled, self.selector_hidden_kernel))
        return ops.sigmoid(ops.matmul(hidden, self.selector_kernel))

    def call(self, inputs, training=None):
        self._check_input_shape(inputs.shape)
        k = self.num_selected
        scores = self.channel_scores(inputs)
        # Stable, not keras.ops.top_k: on ties (e.g. a dead selector gives every channel
        # 0.5) every backend then picks the lowest channel indices.
        top_channels, top_scores = dynconv_ops.stable_top_k(scores, k)
        selected = dynconv_ops.take_channels(inputs, top_channels)
        processed = direct_calls.run(self.block, selected, training=training)
        scaled = processed * ops.cast(top_scores[:, None, None, :], processed.dtype)
        return self.activation(dynconv_ops.add_to_leading_channels(inputs, scaled))

    def prepared_variables(self):
        """The variables `prepared_inference` reads (`layers.prepared_calls`): the
        selector's and the block's."""
        return self.weights

    def prepared_inference(self, inputs):
        """`call` for inference on torch inputs like `inputs`, prepared once."""
        block = self.block
        # Shaped, typed and placed like the selected channels the block will see.
        selected_example = keras.ops.convert_to_tensor(inputs)[..., : self.num_selected]
        run_block = folded_block.prepared_sequential(block, selected_example)
        if run_block is None:
            def run_block(selected):
                return direct_calls.run(block, selected, training=False)

        relu = self.activation is keras.activations.relu
        linear = relu or self.activation is keras.activations.linear
        return torch_mod.prepared_mod_block(
            inputs, self.selector_hidden_kernel, self.selector_kernel, self.num_selected,
            run_block, activation=None if linear else self.activation, relu=relu,
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "block": keras.saving.serialize_keras_object(self.block),
                "capacity": self.capacity,
                "reduction": self.reduction,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["block"] = keras.saving.deserialize_keras_object(config["block"])
        return cls(**config)
