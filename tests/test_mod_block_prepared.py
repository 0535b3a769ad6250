"""A MoD block's prepared torch inference (`keras_dynconv.ops.torch_mod`) and the folded
inner block (`keras_dynconv.layers.folded_block`) equal `MoDBlock.call` and the block's
own call. Tolerance 1e-5: folding a normalisation into a convolution's kernel rounds
the products differently in float32; the selection itself is the generic path's."""

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from keras_dynconv import layers
from keras_dynconv.layers import folded_block
from keras_dynconv.layers import prepared_calls

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="the prepared functions are torch's")

TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def _randomised(layer, rng):
    """Random weights everywhere, positive variances for the normalisations."""
    for variable in layer.weights:
        values = rng.standard_normal(variable.shape)
        if "variance" in variable.path:
            values = rng.uniform(0.5, 1.5, variable.shape)
        variable.assign(values.astype("float32"))
    return layer


def _bottleneck(channels, **normalization):
    """The zoo's ResNet MoD inner block (`resnet._mod_bottleneck`), with options."""
    mid = max(channels // 4, 1)
    return keras.Sequential([
        layers.Conv2D(mid, 1),
        layers.BatchNormalization(**normalization),
        keras.layers.ReLU(),
        layers.Conv2D(mid, 3, padding="same"),
        layers.BatchNormalization(**normalization),
        keras.layers.ReLU(),
        layers.Conv2D(channels, 1),
        layers.BatchNormalization(**normalization),
    ])


def _mod(rng, block, shape, **arguments):
    layer = layers.MoDBlock(block, capacity=4, reduction=2, **arguments)
    layer.build(shape)
    return _randomised(layer, rng)


def _inputs(rng, shape):
    return keras.ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"))


@pytest.mark.parametrize("activation", [None, "relu", "swish"])
@pytest.mark.parametrize("batch", [1, 3])
def test_prepared_mod_block_equals_its_call(rng, activation, batch):
    import torch

    shape = (batch, 6, 5, 16)
    layer = _mod(rng, _bottleneck(4), shape, activation=activation)
    x = _inputs(rng, shape)
    with torch.no_grad():
        got = prepared_calls.call(layer, x)
        expected = layer.call(x, training=False)
    assert got is not None and got.shape == expected.shape
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)


def test_prepared_mod_block_picks_the_lowest_channels_on_ties(rng):
    """A dead selector scores every channel 0.5 (as tests/test_layers.py checks for
    the generic path)."""
    import torch

    shape = (2, 4, 4, 8)
    layer = _mod(rng, keras.Sequential([layers.Conv2D(2, 1)]), shape)
    layer.selector_kernel.assign(np.zeros(layer.selector_kernel.shape, "float32"))
    x = _inputs(rng, shape)
    with torch.no_grad():
        got = to_numpy(prepared_calls.call(layer, x))
    kernel, bias = (to_numpy(v) for v in layer.block.layers[0].weights)
    expected = to_numpy(x).copy()
    expected[..., :2] += 0.5 * (to_numpy(x)[..., :2] @ kernel[0, 0] + bias)
    np.testing.assert_allclose(got, expected, **TOLERANCE)


@pytest.mark.parametrize("block", ["dropout", "condconv", "layer"])
def test_prepared_mod_block_runs_other_blocks_through_their_layers(rng, block):
    """Blocks the fold does not take (another layer in the Sequential, a dynamic
    convolution, a single layer) still run prepared, with their own calls."""
    import torch

    shape = (2, 5, 5, 16)
    inner = {
        "dropout": lambda: keras.Sequential([layers.Conv2D(4, 3, padding="same"),
                                             keras.layers.Dropout(0.5)]),
        "condconv": lambda: keras.Sequential([layers.CondConv2D(4, 1, num_experts=2)]),
        "layer": lambda: layers.Conv2D(4, 3, padding="same"),
    }[block]()
    layer = _mod(rng, inner, shape, activation="relu")
    x = _inputs(rng, shape)
    with torch.no_grad():
        assert folded_block.prepared_sequential(inner, x[..., :4]) is None
        got = prepared_calls.call(layer, x)
        expected = layer.call(x, training=False)
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)


@pytest.mark.parametrize("case", ["bottleneck", "no center or scale", "conv activation",
                                  "activation layer", "strided, no bias"])
def test_folded_sequential_equals_the_blocks_call(rng, case):
    import torch

    shape = (2, 7, 6, 8)
    block = {
        "bottleneck": lambda: _bottleneck(8),
        "no center or scale": lambda: _bottleneck(8, center=False, scale=False, epsilon=0.1),
        "conv activation": lambda: keras.Sequential([
            keras.layers.Conv2D(5, 3, padding="same", activation="relu"), layers.Conv2D(3, 1),
        ]),
        "activation layer": lambda: keras.Sequential([
            layers.Conv2D(5, 3), keras.layers.BatchNormalization(), keras.layers.Activation("relu"),
        ]),
        "strided, no bias": lambda: keras.Sequential([
            layers.Conv2D(5, 3, strides=2, padding="same", use_bias=False),
            layers.BatchNormalization(),
        ]),
    }[case]()
    block.build(shape)
    _randomised(block, rng)
    x = _inputs(rng, shape)
    with torch.no_grad():
        run = folded_block.prepared_sequential(block, x)
        assert run is not None
        np.testing.assert_allclose(
            to_numpy(run(x)), to_numpy(block(x, training=False)), **TOLERANCE
        )


@pytest.mark.parametrize("case", ["normalization first", "two normalizations",
                                  "normalization after a relu", "leaky relu", "depthwise",
                                  "float64"])
def test_folded_sequential_declines_what_it_cannot_fold(rng, case):
    conv = lambda: layers.Conv2D(4, 1)  # noqa: E731
    norm = lambda: layers.BatchNormalization()  # noqa: E731
    block = {
        "normalization first": lambda: keras.Sequential([norm(), conv()]),
        "two normalizations": lambda: keras.Sequential([conv(), norm(), norm()]),
        "normalization after a relu": lambda: keras.Sequential([
            conv(), keras.layers.ReLU(), norm()]),
        "leaky relu": lambda: keras.Sequential([conv(), keras.layers.ReLU(negative_slope=0.1)]),
        "depthwise": lambda: keras.Sequential([layers.DepthwiseConv2D(3)]),
        "float64": lambda: keras.Sequential([layers.Conv2D(4, 1, dtype="float64")]),
    }[case]()
    block.build((1, 5, 5, 4))
    assert folded_block.prepared_sequential(block, _inputs(rng, (1, 5, 5, 4))) is None


def test_prepared_mod_block_is_made_again_when_the_blocks_weights_change(rng):
    """The kept function holds folded copies of the block's weights: a changed
    moving variance (as a training step leaves it) makes it again."""
    import torch

    shape = (1, 5, 5, 16)
    layer = _mod(rng, _bottleneck(4), shape, activation="relu")
    x = _inputs(rng, shape)
    with torch.no_grad():
        before = to_numpy(prepared_calls.call(layer, x))
        variance = layer.block.layers[-1].moving_variance
        variance.assign(to_numpy(variance) * 4.0)
        got = prepared_calls.call(layer, x)
        expected = layer.call(x, training=False)
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), **TOLERANCE)
    assert not np.allclose(before, to_numpy(got), **TOLERANCE)
