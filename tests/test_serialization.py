"""Saving under one backend and loading under another (separate processes)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import to_numpy

HERE = os.path.dirname(os.path.abspath(__file__))


def _write_with_backend(backend, directory):
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "cross_backend_writer.py"), directory],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_model_saved_by_another_backend_loads_with_identical_outputs(tmp_path, other_backend):
    _write_with_backend(other_backend, str(tmp_path))
    data = np.load(tmp_path / "io.npz")
    model = keras.models.load_model(tmp_path / "model.keras")
    from keras_dynconv.zoo import ZooModel

    assert type(model) is ZooModel
    np.testing.assert_allclose(to_numpy(model(data["inputs"])), data["outputs"], atol=1e-5, rtol=1e-5)

    import cross_backend_writer

    fresh = cross_backend_writer.build_model()
    fresh.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(to_numpy(fresh(data["inputs"])), data["outputs"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["CondConv2D", "CondDepthwiseConv2D", "CondDense", "DynamicConv2D",
     "DynamicDepthwiseConv2D", "SparseDynamicConv2D",
     "SparseDynamicDepthwiseConv2D", "MoDBlock", "Routing"],
)
def test_layers_are_registered_under_the_package(name):
    from keras_dynconv import layers

    cls = getattr(layers, name)
    assert keras.saving.get_registered_name(cls) == f"keras_dynconv>{name}"
    assert keras.saving.get_registered_object(f"keras_dynconv>{name}") is cls
