"""Builds a model with every layer, saves it and its outputs (run as a subprocess)."""

import os
import sys

import keras
import numpy as np

from keras_dynconv import layers
from keras_dynconv.zoo import ZooModel


def build_model():
    keras.utils.set_random_seed(42)
    inputs = keras.Input((16, 16, 8))
    routing = layers.Routing(4, name="shared_routing")(inputs)
    x = layers.CondConv2D(8, 3, num_experts=4, routing=None, use_bias=True)(inputs, routing_weights=routing)
    x = layers.CondDepthwiseConv2D(3, num_experts=4, strides=2)(x)
    x = layers.DynamicConv2D(16, 3, num_kernels=3)(x)
    x = layers.DynamicDepthwiseConv2D(3, num_kernels=3)(x)
    x = layers.SparseDynamicConv2D(16, 1, num_kernels=2)(x)
    x = layers.MoDBlock(keras.layers.Conv2D(4, 3, padding="same"), capacity=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = layers.CondDense(5, num_experts=3, use_bias=True)(x)
    # The zoo's model class, whose torch inference calls layers directly.
    return ZooModel(inputs, outputs)


def main(directory):
    model = build_model()
    # Non-default state that must survive the trip.
    for layer in model.layers:
        if isinstance(layer, layers.SparseDynamicConv2D):
            layer.threshold.assign(0.05)
            layer.set_target_density(0.4)
        if isinstance(layer, layers.DynamicConv2D):
            layer.set_routing_temperature(7.0)
    inputs = np.random.default_rng(0).uniform(size=(3, 16, 16, 8)).astype("float32")
    outputs = keras.ops.convert_to_numpy(model(inputs))
    model.save(os.path.join(directory, "model.keras"))
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    np.savez(os.path.join(directory, "io.npz"), inputs=inputs, outputs=outputs)


if __name__ == "__main__":
    main(sys.argv[1])
