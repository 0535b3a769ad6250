"""One place that knows how to test a layer, used by every layer's tests.

`run_layer_test` checks, the same way for every layer: the eager output shape against
`compute_output_shape`, the symbolic shape inside a functional model, the
`get_config`/`from_config` round-trip, and a `.keras` save/load round-trip that must
give identical outputs.
"""

import os

import keras
import numpy as np

from conftest import to_numpy


def functional_model(layer, input_arrays):
    """A model around `layer`; a second input array is passed as `routing_weights`."""
    symbolic = [keras.Input(shape=a.shape[1:], name=f"input_{i}") for i, a in enumerate(input_arrays)]
    if len(symbolic) == 2:
        return keras.Model(symbolic, layer(symbolic[0], routing_weights=symbolic[1]))
    return keras.Model(symbolic[0], layer(symbolic[0]))


def run_layer_test(layer_factory, input_arrays, tmp_path, expected_output=None, atol=1e-5):
    """Runs the shared checks on a fresh layer from `layer_factory()`; returns the model."""
    layer = layer_factory()
    model = functional_model(layer, input_arrays)
    symbolic_shape = tuple(model.outputs[0].shape)
    assert symbolic_shape == tuple(layer.compute_output_shape((None,) + input_arrays[0].shape[1:]))

    outputs = to_numpy(model(input_arrays if len(input_arrays) > 1 else input_arrays[0]))
    assert outputs.shape == tuple(layer.compute_output_shape(input_arrays[0].shape))
    assert np.all(np.isfinite(outputs))
    if expected_output is not None:
        np.testing.assert_allclose(outputs, expected_output, atol=atol, rtol=atol)

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config

    path = os.path.join(str(tmp_path), "layer_test.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    restored_outputs = to_numpy(
        restored(input_arrays if len(input_arrays) > 1 else input_arrays[0])
    )
    np.testing.assert_array_equal(restored_outputs, outputs)
    assert type(restored.layers[-1]) is type(layer)
    return model
