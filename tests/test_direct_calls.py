"""`keras_dynconv.layers.direct_calls`: a Sequential's layers called directly equal the
Sequential called through Keras (tolerance: conftest.ATOL), and the direct calls are
taken exactly where nothing of Keras' call machinery has work to do."""

import keras
import numpy as np
import pytest

from conftest import ATOL, BACKEND, RTOL, to_numpy
from keras_dynconv import layers
from keras_dynconv.layers import direct_calls


def _bottleneck(channels=8, activity_regularizer=None):
    """The MoD ResNets' inner block (zoo/resnet.py), with random statistics."""
    block = keras.Sequential([
        layers.Conv2D(channels // 4, 1, activity_regularizer=activity_regularizer),
        layers.BatchNormalization(epsilon=1.001e-5),
        keras.layers.ReLU(),
        layers.Conv2D(channels // 4, 3, padding="same"),
        layers.BatchNormalization(epsilon=1.001e-5),
        keras.layers.ReLU(),
        layers.Conv2D(channels, 1),
        layers.BatchNormalization(epsilon=1.001e-5),
    ])
    block.build((None, 6, 6, channels))
    rng = np.random.default_rng(0)
    block.set_weights([
        rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
        else rng.standard_normal(w.shape).astype("float32")
        for w in block.weights
    ])
    return block


def _images(channels=8):
    return keras.ops.convert_to_tensor(
        np.random.default_rng(1).standard_normal((2, 6, 6, channels)).astype("float32")
    )


def _taken(monkeypatch):
    """Records whether each `run` took the direct calls."""
    decisions = []
    decide = direct_calls._direct_calls_apply

    def spy(*args):
        decisions.append(decide(*args))
        return decisions[-1]

    monkeypatch.setattr(direct_calls, "_direct_calls_apply", spy)
    return decisions


@pytest.mark.parametrize("training", [False, None, True])
def test_run_equals_calling_the_block(monkeypatch, training):
    """Inference (`training` False or None) is direct on torch; a training step goes
    through Keras (batch statistics, moving averages updated identically)."""
    block, twin = _bottleneck(), _bottleneck()
    images = _images()
    decisions = _taken(monkeypatch)
    got = to_numpy(direct_calls.run(block, images, training=training))
    expected = to_numpy(twin(images, training=training))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    for ours, theirs in zip(block.weights, twin.weights):
        np.testing.assert_allclose(to_numpy(ours), to_numpy(theirs), atol=ATOL, rtol=RTOL)
    assert decisions == [BACKEND == "torch" and not training]


def test_mod_block_runs_its_block_directly_with_the_same_result(monkeypatch):
    block = _bottleneck(channels=4)
    mod = layers.MoDBlock(block, capacity=4, reduction=2)
    images = _images(channels=16)
    mod(images)
    decisions = _taken(monkeypatch)
    direct = to_numpy(mod(images, training=False))
    monkeypatch.setattr(direct_calls, "_direct_calls_apply", lambda *args: False)
    through_keras = to_numpy(mod(images, training=False))
    np.testing.assert_allclose(direct, through_keras, atol=ATOL, rtol=RTOL)
    assert decisions == [BACKEND == "torch"]


def _mixed_precision_block():
    keras.config.set_dtype_policy("mixed_float16")
    return _bottleneck()


def _hooked_block():
    block = _bottleneck()
    block.layers[2].register_forward_hook(lambda module, inputs, outputs: outputs * 0)
    return block


def _nested_block():
    block = keras.Sequential([_bottleneck(), keras.layers.ReLU()])
    block.build((None, 6, 6, 8))
    return block


class _SequentialSubclass(keras.Sequential):
    pass


def _subclassed_block():
    block = _SequentialSubclass(_bottleneck().layers)
    block.build((None, 6, 6, 8))
    return block


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.parametrize("make_block", [
    _mixed_precision_block,
    lambda: _bottleneck(activity_regularizer="l2"),
    _hooked_block,
    _nested_block,
    _subclassed_block,
    lambda: keras.Sequential([layers.Conv2D(8, 1)]),  # not built
], ids=["mixed-precision", "activity-regularizer", "torch-hook", "nested", "subclass",
        "unbuilt"])
def test_keras_calls_the_block_where_its_machinery_has_work(monkeypatch, make_block):
    block = make_block()
    images = _images()
    decisions = _taken(monkeypatch)
    got = direct_calls.run(block, images, training=False)
    assert decisions == [False]
    np.testing.assert_allclose(
        to_numpy(got), to_numpy(block(images, training=False)), atol=1e-2, rtol=1e-2
    )


@pytest.mark.skipif(BACKEND != "torch", reason="direct calls are torch's")
@pytest.mark.filterwarnings("ignore:.*does not support masking")
def test_keras_calls_the_block_for_masked_or_symbolic_inputs_and_in_autocast(monkeypatch):
    """Symbolic: a Keras tensor, or torch's shape inference (meta tensors in a symbolic
    scope)."""
    from keras.src.backend import AutocastScope
    from keras.src.backend.common.keras_tensor import KerasTensor
    from keras.src.backend.common.symbolic_scope import SymbolicScope

    block = _bottleneck()
    decisions = _taken(monkeypatch)
    masked = _images()
    masked._keras_mask = keras.ops.ones((2, 6, 6), dtype="bool")
    direct_calls.run(block, masked, training=False)
    symbolic = direct_calls.run(block, KerasTensor((None, 6, 6, 8)), training=False)
    assert tuple(symbolic.shape) == (None, 6, 6, 8)
    with SymbolicScope():
        direct_calls.run(block, _images(), training=False)
    with AutocastScope("float16"):
        direct_calls.run(block, _images(), training=False)
    assert decisions == [False, False, False, False]
