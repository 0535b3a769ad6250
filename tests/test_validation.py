"""Bad arguments and inputs give a ValueError that names the argument and the value."""

import keras
import numpy as np
import pytest

from keras_dynconv import layers

X = np.zeros((2, 8, 8, 4), "float32")


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: layers.CondConv2D(8, 3, num_experts=0), r"num_experts=0"),
        (lambda: layers.CondConv2D(8, 3, num_experts=2.5), r"num_experts=2.5"),
        (lambda: layers.CondConv2D(0, 3), r"filters=0"),
        (lambda: layers.CondConv2D(8, (3, 0)), r"kernel_size=\(3, 0\)"),
        (lambda: layers.CondConv2D(8, 3, strategy="fast"), r"strategy='fast'"),
        (lambda: layers.CondConv2D(8, 3, routing="gelu"), r"routing='gelu'"),
        (lambda: layers.CondConv2D(8, 3, padding="full"), r"padding='full'"),
        (lambda: layers.CondConv2D(8, 3, expert_dropout=1.0), r"expert_dropout=1.0"),
        (lambda: layers.CondConv2D(8, 3, strides=2, dilation_rate=2), r"dilation_rate=2"),
        (lambda: layers.CondConv2D(8, 3, temperature=0), r"temperature=0"),
        (lambda: layers.CondDepthwiseConv2D(3, depth_multiplier=0), r"depth_multiplier=0"),
        (lambda: layers.CondDense(-1), r"units=-1"),
        (lambda: layers.Routing(4, activation="gelu"), r"activation='gelu'"),
        (lambda: layers.Routing(0), r"num_experts=0"),
        (lambda: layers.DynamicConv2D(8, 3, num_kernels=0), r"num_experts=0"),
        (lambda: layers.DynamicConv2D(8, 3, reduction=0), r"reduction=0"),
        (lambda: layers.SparseDynamicConv2D(8, 3, target_density=0.0), r"target_density=0.0"),
        (lambda: layers.SparseDynamicConv2D(8, 3, target_density=1.5), r"target_density=1.5"),
        (lambda: layers.SparseDynamicConv2D(8, 3, sparsity_penalty=-1), r"sparsity_penalty=-1"),
        (lambda: layers.MoDBlock("conv"), r"block='conv'"),
        (lambda: layers.MoDBlock(keras.layers.Identity(), capacity=0), r"capacity=0"),
    ],
)
def test_bad_constructor_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_channels_first_is_not_implemented():
    with pytest.raises(NotImplementedError, match="channels_last"):
        layers.CondConv2D(8, 3, data_format="channels_first")


@pytest.mark.parametrize(
    "layer",
    [
        layers.CondConv2D(8, 3, num_experts=2),
        layers.CondDepthwiseConv2D(3, num_experts=2),
        layers.DynamicConv2D(8, 3),
    ],
    ids=["conv", "depthwise", "dynamic"],
)
def test_wrong_input_rank(layer):
    with pytest.raises(ValueError, match=r"rank 4.*shape \(2, 8, 4\)"):
        layer(np.zeros((2, 8, 4), "float32"))


def test_dense_needs_rank_two():
    with pytest.raises(ValueError, match=r"rank >= 2.*shape \(4,\)"):
        layers.CondDense(3)(np.zeros((4,), "float32"))


@pytest.mark.parametrize(
    "layer",
    [
        layers.CondConv2D(8, 3, num_experts=2),
        layers.CondDepthwiseConv2D(3, num_experts=2),
        layers.MoDBlock(keras.layers.Identity(), capacity=2),
    ],
    ids=["conv", "depthwise", "mod"],
)
def test_channel_mismatch_with_built_kernel(layer):
    layer(X)
    with pytest.raises(ValueError, match=r"built for 4 input channels.*shape \(2, 8, 8, 5\)"):
        layer(np.zeros((2, 8, 8, 5), "float32"))


@pytest.mark.parametrize("shape", [(2, 3), (2,), (3, 4), (2, 4, 1)])
def test_routing_weights_of_the_wrong_shape(shape):
    layer = layers.CondConv2D(8, 3, num_experts=4)
    with pytest.raises(ValueError, match=r"routing_weights.*num_experts=4.*" + re_shape(shape)):
        layer(X, routing_weights=np.ones(shape, "float32"))


def re_shape(shape):
    return r"shape " + r"\(" + r", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + r"\)"


def test_missing_routing_weights_without_own_routing():
    with pytest.raises(ValueError, match=r"routing=None.*routing_weights=None"):
        layers.CondConv2D(8, 3, num_experts=4, routing=None)(X)


def test_mod_capacity_larger_than_channels():
    with pytest.raises(ValueError, match=r"C=4.*capacity=8"):
        layers.MoDBlock(keras.layers.Identity(), capacity=8)(X)


def test_mod_block_that_changes_shape():
    block = keras.layers.Conv2D(3, 3, strides=2, padding="same")
    with pytest.raises(ValueError, match=r"block.*same shape"):
        layers.MoDBlock(block, capacity=2)(X)
