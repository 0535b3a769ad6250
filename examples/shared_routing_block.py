"""A CondConv inverted-bottleneck block whose routing is shared by its three convs.

    KERAS_BACKEND=jax python examples/shared_routing_block.py

As in the official CondConv EfficientNet: routing is computed once from the block
input and drives the expand, depthwise and project convolutions.
"""

import keras
import numpy as np

from keras_dynconv import layers


def condconv_inverted_bottleneck(x, out_channels, expand_ratio=6, num_experts=8):
    routing = layers.Routing(num_experts, name="block_routing")(x)
    hidden = x.shape[-1] * expand_ratio
    y = layers.CondConv2D(hidden, 1, num_experts=num_experts, routing=None)(x, routing_weights=routing)
    y = keras.layers.Activation("swish")(keras.layers.BatchNormalization()(y))
    y = layers.CondDepthwiseConv2D(3, num_experts=num_experts, routing=None)(y, routing_weights=routing)
    y = keras.layers.Activation("swish")(keras.layers.BatchNormalization()(y))
    y = layers.CondConv2D(out_channels, 1, num_experts=num_experts, routing=None)(y, routing_weights=routing)
    y = keras.layers.BatchNormalization()(y)
    return keras.layers.Add()([x, y]) if out_channels == x.shape[-1] else y


def main(batch_size=4):
    inputs = keras.Input((14, 14, 32))
    model = keras.Model(inputs, condconv_inverted_bottleneck(inputs, 32))
    model.summary()
    images = np.random.default_rng(0).normal(size=(batch_size, 14, 14, 32)).astype("float32")
    print("output shape:", tuple(model(images).shape))
    return model


if __name__ == "__main__":
    main()
