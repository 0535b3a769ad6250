"""`keras_dynconv.layers.folded_normalization`: a zoo model's convolutions with the batch
normalisation after them folded in (eager torch inference) equal the same layers called
through Keras' functional model (tolerance: 1e-5 relative to the outputs' scale), and
the folding is taken exactly where it is exact."""

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from keras_dynconv import layers
from keras_dynconv.layers import direct_calls
from keras_dynconv.layers import folded_normalization

pytestmark = pytest.mark.skipif(
    BACKEND != "torch", reason="folding is part of torch's direct calls (keras_dynconv.zoo.ZooModel)"
)


def _randomize_statistics(model, rng):
    """Moving statistics, scale and offset away from their initial 0 and 1, so that a
    wrong fold shows."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.3, channels).astype("float32"))


class _Offered(list):
    """`(convolution class name, folded)` per pair offered; `activations`: each pair's
    activation layer or None."""


def _folds(monkeypatch):
    """Records, per pair offered, the convolution's class and whether it was folded."""
    offered = _Offered()
    fold = direct_calls.folded_call

    def spy(pair, args, kwargs):
        outputs = fold(pair, args, kwargs)
        offered.append((type(pair.convolution).__name__, outputs is not None))
        activations.append(pair.activation)
        return outputs

    activations = []
    offered.activations = activations

    monkeypatch.setattr(direct_calls, "folded_call", spy)
    return offered


def _infer(model, images):
    """Inference as `predict` runs it on torch: without gradients (a call that may
    record them keeps every layer's own path)."""
    import torch

    with torch.no_grad():
        return to_numpy(model(images, training=False))


def _assert_close(got, expected):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=1e-5)


def _pair_model(convolution, input_shape, normalization=None, routing=None, extra_reader=False,
                activation=None):
    """`ZooModel` of `convolution` -> `normalization` -> `activation` (a ReLU layer by
    default) -> a 1x1 convolution (and the functional twin)."""
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input(input_shape)
    if routing is not None:
        x = convolution(inputs, routing_weights=routing(inputs))
    else:
        x = convolution(inputs)
    y = (normalization or layers.BatchNormalization())(x)
    outputs = (activation or keras.layers.ReLU())(y)
    if extra_reader:
        outputs = keras.layers.Add()([outputs, x])
    outputs = layers.Conv2D(4, 1)(outputs)
    return ZooModel(inputs, outputs), keras.Model(inputs, outputs)


CASES = {
    "conv 3x3, bias, stride 2": (lambda: layers.Conv2D(16, 3, strides=2, padding="same"), (9, 9, 5), None),
    "conv 1x1, no bias": (lambda: layers.Conv2D(32, 1, use_bias=False), (6, 6, 8), None),
    "conv 5x5 valid": (lambda: layers.Conv2D(8, 5, padding="valid"), (9, 7, 3), None),
    "depthwise 5x5, stride 2": (lambda: layers.DepthwiseConv2D(5, strides=2, padding="same"), (10, 10, 24), None),
    "depthwise, multiplier 2": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (7, 7, 6), None),
    "condconv 1x1, shared routing": (
        lambda: layers.CondConv2D(48, 1, num_experts=3, routing=None), (5, 5, 16), "shared"),
    "condconv 1x1, own routing": (lambda: layers.CondConv2D(32, 1, num_experts=4), (4, 4, 8), None),
    "cond depthwise 3x3, stride 2, shared routing": (
        lambda: layers.CondDepthwiseConv2D(3, num_experts=3, strides=2, routing=None), (8, 8, 40), "shared"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folded_pair_equals_the_functional_model(monkeypatch, rng, cpu_only, case):
    make, input_shape, routing = CASES[case]
    num_experts = getattr(make(), "num_experts", None)
    router = layers.Routing(num_experts) if routing else None
    model, functional = _pair_model(make(), input_shape, routing=router)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") for w in model.weights])
    _randomize_statistics(model, rng)
    images = rng.standard_normal((3,) + input_shape).astype("float32")
    offered = _folds(monkeypatch)
    got = _infer(model, images)
    _assert_close(got, to_numpy(functional(images, training=False)))
    assert [folded for _, folded in offered] == [True]
    # Changed statistics are read again (the prepared fold is made anew).
    normalization = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)][0]
    normalization.moving_mean.assign(normalization.moving_mean + 1.0)
    _assert_close(_infer(model, images), to_numpy(functional(images, training=False)))


@pytest.mark.parametrize("activation, in_place", [
    (keras.layers.Activation("swish"), True),
    (keras.layers.Activation("relu6"), True),
    (keras.layers.ReLU(), True),
    (keras.layers.ReLU(max_value=2.0), False),
    (keras.layers.Activation("tanh"), False),
])
def test_activation_after_the_normalisation_runs_in_place(monkeypatch, rng, cpu_only, activation,
                                                         in_place):
    """ReLU, ReLU6 and swish layers join the pair; other activations run as layers."""
    model, functional = _pair_model(layers.Conv2D(8, 3, padding="same"), (6, 6, 8),
                                    activation=activation)
    _randomize_statistics(model, rng)
    images = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    offered = _folds(monkeypatch)
    _assert_close(_infer(model, images), to_numpy(functional(images, training=False)))
    assert offered == [("Conv2D", True)]
    assert offered.activations == [activation if in_place else None]


def test_activation_read_twice_is_not_taken(monkeypatch, rng, cpu_only):
    """A normalisation whose output another layer also reads keeps its activation
    layer (which must not overwrite it)."""
    from keras_dynconv.zoo import ZooModel

    inputs = keras.Input((6, 6, 8))
    normalized = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs))
    outputs = keras.layers.Add()([keras.layers.ReLU()(normalized), normalized])
    model, functional = ZooModel(inputs, outputs), keras.Model(inputs, outputs)
    _randomize_statistics(model, rng)
    images = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    offered = _folds(monkeypatch)
    _assert_close(_infer(model, images), to_numpy(functional(images, training=False)))
    assert offered == [("Conv2D", True)] and offered.activations == [None]


def test_not_folded_where_it_would_not_be_exact(monkeypatch, rng, cpu_only):
    """A convolution read by another layer too, one with an activation, a
    normalisation across another axis: no pair in the plan, results unchanged."""
    from keras_dynconv.zoo import graph_plan

    images = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    models = [
        _pair_model(layers.Conv2D(8, 3, padding="same"), (6, 6, 8), extra_reader=True),
        _pair_model(layers.Conv2D(8, 3, padding="same", activation="relu"), (6, 6, 8)),
        _pair_model(layers.Conv2D(8, 3, padding="same"), (6, 6, 8),
                    normalization=layers.BatchNormalization(axis=1)),
        _pair_model(keras.layers.Conv2D(8, 3, padding="same"), (6, 6, 8)),  # Keras' own class
    ]
    offered = _folds(monkeypatch)
    for model, functional in models:
        _randomize_statistics(model, rng)
        _assert_close(_infer(model, images), to_numpy(functional(images, training=False)))
        assert graph_plan._PLANS[model][1] == {}
    assert offered == []


def test_not_folded_for_training_gradients_or_mixed_precision(monkeypatch, rng, cpu_only):
    """A training step and a call under a gradient tape go through Keras; a float16
    autocast scope or a mixed layer is left to the layers' own calls."""
    import torch

    model, functional = _pair_model(layers.Conv2D(8, 3, padding="same"), (6, 6, 8))
    _randomize_statistics(model, rng)
    images = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    offered = _folds(monkeypatch)
    _assert_close(to_numpy(model(images, training=True)), to_numpy(functional(images, training=True)))
    assert offered == []
    with torch.enable_grad():
        outputs = model(images, training=False)
        torch.sum(outputs).backward()
    assert model.layers[1].kernel.value.grad is not None
    assert offered == [("Conv2D", False)]
    offered.clear()
    mixed, _ = _pair_model(layers.Conv2D(8, 3, padding="same", dtype="mixed_float16"), (6, 6, 8))
    _infer(mixed, images)
    assert offered == [("Conv2D", False)]


def test_zoo_model_folds_every_normalisation_after_a_convolution(monkeypatch, rng, cpu_only):
    """CondConv-EfficientNet-B0 (2 experts) at 64x64: 49 pairs, every kind folded."""
    from keras_dynconv import zoo

    model = zoo.get_model("condconv_efficientnet_b0", weights=None, input_shape=(64, 64, 3),
                          classes=10, num_experts=2, classifier_activation=None)
    functional = keras.Model(model.inputs[0], model.outputs[0])
    _randomize_statistics(model, rng)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    offered = _folds(monkeypatch)
    got = _infer(model, images)
    _assert_close(got, to_numpy(functional(images, training=False)))
    assert len(offered) == 49 and all(folded for _, folded in offered)
    assert {kind for kind, _ in offered} == {
        "Conv2D", "DepthwiseConv2D", "CondConv2D", "CondDepthwiseConv2D"
    }
    # The stem's, the head's and every expansion's and depthwise layer's swish: all but
    # the 16 projections.
    assert sum(activation is not None for activation in offered.activations) == 33


def test_foldable_rules():
    conv = layers.Conv2D(4, 1)
    conv.build((None, 4, 4, 4))
    normalization = layers.BatchNormalization()
    normalization.build((None, 4, 4, 4))
    assert folded_normalization.foldable(conv, normalization)
    strided = layers.CondConv2D(4, 1, strides=2, num_experts=2)
    strided.build((None, 4, 4, 4))
    assert not folded_normalization.foldable(strided, normalization)
    biased = layers.CondConv2D(4, 1, num_experts=2, use_bias=True)
    biased.build((None, 4, 4, 4))
    assert not folded_normalization.foldable(biased, normalization)
    unbuilt = layers.BatchNormalization()
    assert not folded_normalization.foldable(conv, unbuilt)
