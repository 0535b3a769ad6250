"""torch's kept kernel layouts (keras_dynconv/ops/torch_weights.py): equal results,
made again whenever the weight changes, never for gradients, freed with the weight
(tolerance: conftest.ATOL / RTOL)."""

import gc

import keras
import numpy as np
import pytest

from conftest import ATOL, BACKEND, RTOL, to_numpy
from keras_dynconv import layers
from keras_dynconv.ops import torch_weights

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch's kernel layouts")


@pytest.fixture
def made_layouts(monkeypatch):
    """The kernels whose layout was made and kept (not taken from the kept ones)."""
    made = []

    class RecordingDict(dict):
        def __setitem__(self, key, entry):
            made.append(tuple(entry[2].shape))
            super().__setitem__(key, entry)

    monkeypatch.setattr(torch_weights, "_LAYOUTS", RecordingDict(torch_weights._LAYOUTS))
    return made


def _layer_and_keras_twin(kind):
    if kind == "conv":
        ours = layers.Conv2D(6, 3, padding="same", use_bias=True)
        return ours, keras.layers.Conv2D.from_config(ours.get_config())
    ours = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)
    return ours, keras.layers.DepthwiseConv2D.from_config(ours.get_config())


@pytest.mark.parametrize("kind", ["conv", "depthwise"])
def test_inference_keeps_the_layout_until_the_weights_change(rng, made_layouts, kind):
    import torch

    ours, theirs = _layer_and_keras_twin(kind)
    x = rng.standard_normal((2, 7, 7, 4)).astype("float32")
    ours.build(x.shape)
    theirs.build(x.shape)
    for step in range(2):
        weights = [rng.standard_normal(w.shape).astype("float32") for w in theirs.weights]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        with torch.no_grad():
            for _ in range(3):
                np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(theirs(x)),
                                           atol=ATOL, rtol=RTOL)
        # One layout per weight value: made on the first call after each set_weights.
        assert len(made_layouts) == step + 1


def test_an_in_place_update_of_the_weight_makes_a_new_layout(rng, made_layouts):
    import torch

    layer = layers.Conv2D(3, 1)
    x = keras.ops.convert_to_tensor(rng.standard_normal((1, 4, 4, 2)).astype("float32"))
    with torch.no_grad():
        before = to_numpy(layer(x))
        kernel = keras.ops.convert_to_tensor(layer.kernel)
        kernel.mul_(2.0)  # what an optimizer step does to the parameter
        np.testing.assert_allclose(to_numpy(layer(x)), 2 * before, atol=ATOL, rtol=RTOL)
    assert len(made_layouts) == 2


def test_gradients_take_the_view(rng, made_layouts):
    import torch

    layer = layers.Conv2D(3, 3)
    x = torch.tensor(rng.standard_normal((1, 5, 5, 2)).astype("float32"))
    loss = keras.ops.sum(layer(x))
    loss.backward()
    assert made_layouts == []
    assert keras.ops.convert_to_tensor(layer.kernel).grad is not None


def test_kernels_that_are_not_weights_are_not_kept(rng, made_layouts):
    import torch

    from keras_dynconv import ops as dc

    x = rng.standard_normal((1, 5, 5, 2)).astype("float32")
    kernel = rng.standard_normal((3, 3, 2, 4)).astype("float32")
    kept_before = len(torch_weights._LAYOUTS)
    with torch.no_grad():
        dc.conv(x, kernel, 1, "same")
        dc.depthwise_conv(x, kernel[..., :1], 1, "same")
    assert made_layouts == []
    assert len(torch_weights._LAYOUTS) == kept_before


def test_a_layout_goes_with_its_weight(rng):
    import torch

    layer = layers.Conv2D(3, 1)
    with torch.no_grad():
        layer(np.ones((1, 2, 2, 2), "float32"))
    key = id(keras.ops.convert_to_tensor(layer.kernel))
    assert key in torch_weights._LAYOUTS
    del layer
    gc.collect()
    assert key not in torch_weights._LAYOUTS
