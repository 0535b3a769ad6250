"""Small models around each layer, shared by the training and demo-level tests."""

import keras
import numpy as np

from keras_dynconv import layers


def _conv_stem(x):
    # No BatchNorm: its moving statistics lag behind in a few steps and would make
    # evaluate() in inference mode a poor judge of whether training worked.
    return keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)


def _apply(kind, x):
    if kind == "cond_conv":
        return layers.CondConv2D(16, 3, num_experts=4)(x)
    if kind == "cond_conv_shared":
        r = layers.Routing(3)(x)
        x = layers.CondConv2D(16, 1, num_experts=3, routing=None)(x, routing_weights=r)
        return layers.CondDepthwiseConv2D(3, num_experts=3, routing=None)(x, routing_weights=r)
    if kind == "cond_depthwise":
        return layers.CondDepthwiseConv2D(3, num_experts=8, depth_multiplier=2)(x)
    if kind == "dynamic":
        return layers.DynamicDepthwiseConv2D(3)(layers.DynamicConv2D(16, 3)(x))
    if kind == "sparse_dynamic":
        return layers.SparseDynamicConv2D(16, 3, target_density=0.5)(x)
    if kind == "mod":
        selected = x.shape[-1] // 4
        block = keras.layers.Conv2D(selected, 3, padding="same")
        return layers.MoDBlock(block, capacity=4)(x)
    raise ValueError(kind)


LAYER_KINDS = ["cond_conv", "cond_conv_shared", "cond_depthwise", "dynamic", "sparse_dynamic", "mod"]


def small_model(kinds, num_classes=3, image_size=16, cond_head=False):
    inputs = keras.Input((image_size, image_size, 3))
    x = _conv_stem(inputs)
    for kind in kinds:
        x = keras.layers.ReLU()(_apply(kind, x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = layers.CondDense(num_classes, num_experts=4) if cond_head else keras.layers.Dense(num_classes)
    return keras.Model(inputs, head(x))


def toy_images(num=96, image_size=16, num_classes=3, seed=0):
    """Classes differ in which colour channel carries a bright square."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num)
    images = rng.normal(0, 0.3, (num, image_size, image_size, 3)).astype("float32")
    for i, label in enumerate(labels):
        top, left = rng.integers(0, image_size // 2, 2)
        images[i, top : top + image_size // 2, left : left + image_size // 2, label % 3] += 1.5
    return images, labels.astype("int32")
