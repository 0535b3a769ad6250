"""`batch_normalization` and the zoo's `BatchNormalization` against NumPy and Keras'
own op and layer (tolerance: conftest.ATOL / RTOL; gradients 1e-4 absolute)."""

import keras
import numpy as np
import pytest

from conftest import ATOL, BACKEND, RTOL, gradients, to_numpy
from keras_dynconv import layers
from keras_dynconv import ops as dc
from keras_dynconv import zoo
from keras_dynconv.ops import normalization
from keras_dynconv.ops import torch_conv

EPSILON = 1e-3


def _random(rng, *shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype("float32")


def _statistics(rng, channels):
    """mean, variance (positive), scale, offset"""
    return (_random(rng, channels), _random(rng, channels, low=0.1, high=3.0),
            _random(rng, channels), _random(rng, channels))


def _numpy_batch_norm(x, mean, variance, scale, offset, epsilon=EPSILON):
    x = x.astype("float64")
    normalized = (x - mean) / np.sqrt(variance.astype("float64") + epsilon)
    if scale is not None:
        normalized = normalized * scale
    if offset is not None:
        normalized = normalized + offset
    return normalized


@pytest.fixture
def torch_path_calls(monkeypatch):
    """How often the torch path ran."""
    calls = []
    original = normalization._torch_batch_norm

    def spy(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(normalization, "_torch_batch_norm", spy)
    return calls


@pytest.mark.parametrize("shape, axis, affine", [
    ((2, 5, 4, 3), -1, True),
    ((2, 5, 4, 3), 3, False),      # no scale, no offset
    ((1, 1, 1, 7), -1, True),
    ((3, 7), -1, True),            # not 4D: Keras' op
    ((2, 3, 5, 4), 1, True),       # channels first: Keras' op
])
def test_batch_normalization_equals_numpy(rng, torch_path_calls, shape, axis, affine):
    channels = shape[axis]
    x = _random(rng, *shape)
    mean, variance, scale, offset = _statistics(rng, channels)
    if not affine:
        scale = offset = None
    broadcast = [1] * len(shape)
    broadcast[axis] = channels

    def reshaped(value):
        return None if value is None else value.reshape(broadcast)

    expected = _numpy_batch_norm(x, *(reshaped(v) for v in (mean, variance, scale, offset)))
    got = dc.batch_normalization(x, mean, variance, axis, offset=offset, scale=scale,
                                 epsilon=EPSILON)
    np.testing.assert_allclose(to_numpy(got), expected, atol=ATOL, rtol=RTOL)
    fast = BACKEND == "torch" and len(shape) == 4 and axis in (-1, 3)
    assert len(torch_path_calls) == (1 if fast else 0)


@pytest.mark.parametrize("statistics_get_gradients", [False, True])
def test_batch_normalization_gradients_equal_keras(rng, torch_path_calls,
                                                   statistics_get_gradients):
    """Gradients for the input, scale and offset; where the statistics want gradients
    too (batch statistics) torch's fixed-statistics op cannot give them: Keras' op."""
    x = _random(rng, 2, 4, 5, 6)
    mean, variance, scale, offset = _statistics(rng, 6)
    projection = keras.ops.convert_to_tensor(_random(rng, 2, 4, 5, 6))
    fixed = [keras.ops.convert_to_tensor(v) for v in (mean, variance)]

    def loss(function):
        if statistics_get_gradients:
            return lambda x, s, o, m, v: keras.ops.sum(
                function(x, m, v, -1, offset=o, scale=s, epsilon=EPSILON) * projection)
        return lambda x, s, o: keras.ops.sum(
            function(x, *fixed, -1, offset=o, scale=s, epsilon=EPSILON) * projection)

    arrays = [x, scale, offset] + ([mean, variance] if statistics_get_gradients else [])
    ours = gradients(loss(dc.batch_normalization), arrays)
    calls_of_ours = len(torch_path_calls)
    theirs = gradients(loss(keras.ops.batch_normalization), arrays)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=RTOL)
    # JAX traces the loss once more for its gradient.
    took_torch_path = BACKEND == "torch" and not statistics_get_gradients
    assert (calls_of_ours > 0) == took_torch_path


def _layer_pair(rng, shape, **arguments):
    ours = layers.BatchNormalization(**arguments)
    theirs = keras.layers.BatchNormalization.from_config(ours.get_config())
    ours.build(shape)
    theirs.build(shape)
    channels = shape[-1]
    values = {"gamma": _random(rng, channels), "beta": _random(rng, channels),
              "moving_mean": _random(rng, channels),
              "moving_variance": _random(rng, channels, low=0.1, high=3.0)}
    for layer in (ours, theirs):
        for variable in layer.weights:
            variable.assign(values[variable.name])
    return ours, theirs


@pytest.mark.parametrize("arguments", [
    {},
    {"center": False, "scale": False, "epsilon": 1e-5},
    {"momentum": 0.9, "epsilon": 1.001e-5},
])
@pytest.mark.parametrize("training, trainable", [
    (False, True),    # inference
    (True, False),    # frozen (transfer learning): moving statistics
    (True, True),     # a training step: batch statistics, moving averages updated
])
def test_layer_equals_keras_batch_normalization(rng, torch_path_calls, arguments, training,
                                                trainable):
    shape = (3, 5, 4, 6)
    ours, theirs = _layer_pair(rng, shape, **arguments)
    ours.trainable = theirs.trainable = trainable
    x = _random(rng, *shape)
    np.testing.assert_allclose(to_numpy(ours(x, training=training)),
                               to_numpy(theirs(x, training=training)), atol=ATOL, rtol=RTOL)
    for got, want in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), atol=ATOL, rtol=RTOL)
    moving_statistics = not (training and trainable)
    assert (len(torch_path_calls) == 1) == (BACKEND == "torch" and moving_statistics)
    assert isinstance(ours, keras.layers.BatchNormalization)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(restored) is layers.BatchNormalization
    assert restored.get_config() == ours.get_config()


def test_layer_with_a_mask_is_keras_own(rng, torch_path_calls):
    shape = (2, 3, 4, 5)
    ours, theirs = _layer_pair(rng, shape)
    x = _random(rng, *shape)
    mask = keras.ops.convert_to_tensor(rng.uniform(size=shape[:-1]) > 0.5)
    np.testing.assert_allclose(to_numpy(ours(x, mask=mask)), to_numpy(theirs(x, mask=mask)),
                               atol=ATOL, rtol=RTOL)
    assert torch_path_calls == []


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layer_under_mixed_precision_equals_keras(rng, policy):
    """Keras' layer normalises in float32 and returns the compute dtype (tolerance: one
    rounding step of the half-precision result)."""
    shape = (2, 3, 4, 5)
    ours, theirs = _layer_pair(rng, shape, dtype=policy)
    x = keras.ops.cast(_random(rng, *shape), ours.compute_dtype)
    got, want = ours(x, training=False), theirs(x, training=False)
    assert keras.backend.standardize_dtype(got.dtype) == ours.compute_dtype
    np.testing.assert_allclose(to_numpy(keras.ops.cast(got, "float32")),
                               to_numpy(keras.ops.cast(want, "float32")), atol=1e-2, rtol=1e-2)


def test_the_zoo_normalizes_with_it():
    model = zoo.mobilenet_v1(weights=None, alpha=0.25, input_shape=(32, 32, 3), classes=4)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is layers.BatchNormalization for layer in norms)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch path")
def test_torch_path_returns_channels_last_memory(rng):
    x = keras.ops.convert_to_tensor(_random(rng, 2, 5, 4, 3))
    mean, variance, scale, offset = (keras.ops.convert_to_tensor(v) for v in _statistics(rng, 3))
    assert torch_conv.available(x)
    outputs = dc.batch_normalization(x, mean, variance, -1, offset=offset, scale=scale)
    assert outputs.is_contiguous()
