"""Export to TF SavedModel, LiteRT (TFLite), ONNX and torch.export, run with each
format's own runtime and compared with the Keras model.

Each export takes 15-70 s here, so the default suite exports one (model, format) pair
per backend; `-m large` runs every pair the backend can write.
"""

import os

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.cli import main
from keras_dynconv.export import BACKENDS
from keras_dynconv.export import export_model
from keras_dynconv.export import format_for_path
from keras_dynconv.export import run_exported
from keras_dynconv.ops import portable

IMAGE_SIZE = 64
# Artefact vs Keras, relative to max(1, max |logits|): float32 in another op order.
TOLERANCE = 1e-4
MODELS = {
    "condconv_efficientnet_b0": dict(num_experts=8),
    "condconv_mobilenet_v2": dict(num_experts=8),
}
FILE_NAMES = {"tf_saved_model": "saved_model", "litert": "model.tflite",
              "onnx": "model.onnx", "torch": "model.pt2"}
# One pair per backend in the default suite, chosen to cover each format once.
DEFAULT_PAIRS = {
    "tensorflow": ("condconv_efficientnet_b0", "litert"),
    "jax": ("condconv_mobilenet_v2", "tf_saved_model"),
    "torch": ("condconv_mobilenet_v2", "onnx"),
}


def _pairs():
    for format, backends in BACKENDS.items():
        if BACKEND not in backends:
            continue
        for name in MODELS:
            marks = [] if DEFAULT_PAIRS[BACKEND] == (name, format) else [pytest.mark.large]
            yield pytest.param(name, format, marks=marks, id=f"{name}-{format}")


def randomize(model, seed=0):
    """Weights with O(1) activations and logits (a fresh model's logits are ~1e-11 here,
    which would make any comparison pass): fan-in-scaled kernels, random batch norms."""
    rng = np.random.default_rng(seed)
    depthwise_types = (keras.layers.DepthwiseConv2D, layers.CondDepthwiseConv2D)
    for layer in model._flatten_layers(include_self=False):
        own = layer._trainable_variables + layer._non_trainable_variables
        for variable in own:
            shape, leaf = tuple(variable.shape), variable.path.rpartition("/")[2]
            if leaf in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif leaf in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.1, shape)
            elif len(shape) < 2:
                continue  # e.g. the routing temperature
            else:
                kernel = shape[1:] if isinstance(layer, layers.ExpertLayer) else shape
                receptive = kernel[:-2] if isinstance(layer, depthwise_types) else kernel[:-1]
                value = rng.normal(0.0, np.sqrt(1.0 / np.prod(receptive)), shape)
            variable.assign(value.astype("float32"))


@pytest.fixture(scope="module")
def built():
    """Models with random O(1) weights, built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            model = zoo.get_model(name, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                  classifier_activation=None, **MODELS[name])
            randomize(model)
            cache[name] = model
        return cache[name]

    return get


@pytest.mark.parametrize("name, format", list(_pairs()))
def test_exported_model_computes_the_keras_models_outputs(built, tmp_path, name, format):
    model = built(name)
    path = str(tmp_path / FILE_NAMES[format])
    result = export_model(model, path, format=format, check=False)
    assert result.format == format and os.path.exists(path)
    batch = 1 if format in ("litert", "torch") else 3
    images = np.random.default_rng(5).uniform(0, 255, (batch, IMAGE_SIZE, IMAGE_SIZE, 3))
    images = images.astype("float32")
    expected = to_numpy(model(images, training=False))
    assert 0.1 < float(np.std(expected)) < 1e4, "logits too small to compare meaningfully"
    received = run_exported(path, images, format)
    assert received.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(received, expected, rtol=0, atol=TOLERANCE * scale)
    assert np.array_equal(received.argmax(-1), expected.argmax(-1))


def test_portable_per_example_paths_equal_the_default_ones():
    # Inside portable() the per-example convolutions are sums over kernel taps (what
    # exporters take); they must compute what the default paths compute. Tolerance:
    # float32 sums in another order, 1e-5 relative to O(1) outputs.
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 9, 9, 6)).astype("float32")
    for layer in (
        layers.CondDepthwiseConv2D(5, strides=2, padding="same", num_experts=4),
        layers.CondConv2D(5, 3, padding="valid", num_experts=3),
        layers.DepthwiseConv2D(3, padding="same"),
    ):
        default = to_numpy(layer(images))
        with portable():
            exported_path = to_numpy(layer(images))
        np.testing.assert_allclose(exported_path, default, rtol=1e-5, atol=1e-5)


def test_format_comes_from_the_path_and_the_backend_must_write_it(tmp_path):
    assert format_for_path("out/model.tflite") == "litert"
    assert format_for_path("out/model.onnx") == "onnx"
    assert format_for_path("out/model.pt2") == "torch"
    assert format_for_path("out/saved_model") == "tf_saved_model"
    with pytest.raises(ValueError, match="Cannot tell the export format"):
        format_for_path("model.h5")
    model = zoo.mobilenet_v1(alpha=0.25, input_shape=(32, 32, 3), classes=4)
    unsupported = [f for f, backends in BACKENDS.items() if BACKEND not in backends]
    for format in unsupported:
        with pytest.raises(ValueError, match=f"runs on the .* backend; this process runs {BACKEND}"):
            export_model(model, str(tmp_path / FILE_NAMES[format]), format=format)
    assert not os.listdir(tmp_path)


def test_cli_exports_and_checks(tmp_path, capsys):
    format = DEFAULT_PAIRS[BACKEND][1]
    output = str(tmp_path / FILE_NAMES[format])
    assert main(["export", "mobilenet_v1", output, "--model-arg", "alpha=0.25",
                 "--model-arg", "input_shape=[32,32,3]", "--model-arg", "classes=4"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output} ({format})" in out and "checked on a batch" in out
    assert main(["export", "mobilenet_v1", str(tmp_path / "model.h5")]) == 2
    assert "Cannot tell the export format" in capsys.readouterr().err
