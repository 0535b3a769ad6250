"""Zoo models give timm's logits, with timm run live (scripts/timm_reference.py).

Unlike tests/test_timm_parity.py (golden files, no timm needed), these tests take a
real timm state_dict: timm's own initialisation with non-trivial BatchNorm statistics,
rescaled so that the logits depend on the input (see the reference script). The timm
environment (.venv-timm) writes it as safetensors, with raw [0, 255] NHWC images and
timm's float32 logits for them; each test loads the file with `load_timm_state_dict`
into the matching zoo model built at the images' size and compares the logits.

Tolerance: max |ours - timm| <= LOGITS_ATOL, absolute, in float32, on logits of std ~1.
timm's own float32 logits differ from its float64 run by ~2e-6..5e-6 on these models
(the npz's `logits_float64`); measured maxima are in tests/timm_live/README.md and in
the session's "timm live parity" summary.
"""

import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_dynconv import zoo
from keras_dynconv.layers import Routing
from keras_dynconv.utils import count_params
from keras_dynconv.weights import load_timm_state_dict
from keras_dynconv.zoo.preprocessing import NORMALIZATIONS

from .conftest import RESULTS
from .conftest import unavailable

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # reported by each test (skip, or failure under test-timm-live.sh)
    safetensors_numpy = None

LOGITS_ATOL = 1e-4

# timm model -> (zoo builder, builder arguments besides input_shape / classes).
PAIRS = {
    "tf_efficientnet_cc_b0_4e": (zoo.condconv_efficientnet_b0, dict(num_experts=4)),
    "tf_efficientnet_cc_b0_8e": (zoo.condconv_efficientnet_b0, dict(num_experts=8)),
    "tf_efficientnet_cc_b1_8e": (zoo.condconv_efficientnet_b1, dict(num_experts=8)),
    "tf_efficientnet_b0": (zoo.efficientnet_b0, {}),
    "tf_efficientnet_b1": (zoo.efficientnet_b1, {}),
    "efficientnet_lite0": (zoo.efficientnet_lite0, {}),
    "semnasnet_100": (zoo.mnasnet_a1, {}),
}


def load_reference(directory, timm_name):
    if safetensors_numpy is None:
        unavailable("the main environment lacks safetensors: `.venv/bin/pip install safetensors`")
    with np.load(directory / f"{timm_name}.npz", allow_pickle=False) as npz:
        reference = {key: npz[key] for key in npz.files}
    state_dict = safetensors_numpy.load_file(str(directory / f"{timm_name}.safetensors"))
    return reference, state_dict


def check_normalisation(model, reference):
    """Our in-model normalisation is timm's (x / 255 - mean) / std of its default_cfg."""
    mean, std = NORMALIZATIONS[model.get_layer("normalization").mode]
    np.testing.assert_allclose(mean, 255 * reference["mean"], rtol=1e-6)
    np.testing.assert_allclose(std, 255 * reference["std"], rtol=1e-6)


def check_parameter_counts(model, reference):
    """Trainable weights are timm's parameters; BN statistics are its buffers.

    Our only other non-trainable weights are the Routing layers' scalar temperatures,
    which timm does not have.
    """
    counts = count_params(model)
    assert counts.trainable == int(reference["trainable_params"])
    batch_norm_statistics = sum(
        math.prod(weight.shape)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for weight in layer.non_trainable_weights
    )
    assert batch_norm_statistics == int(reference["non_trainable_params"])
    temperatures = sum(isinstance(layer, Routing) for layer in model.layers)
    assert counts.non_trainable == batch_norm_statistics + temperatures
    return counts.trainable


@pytest.mark.parametrize("timm_name", list(PAIRS))
def test_logits_equal_live_timm(timm_name, timm_reference_dir):
    reference, state_dict = load_reference(timm_reference_dir, timm_name)
    assert str(reference["model"]) == timm_name
    images = reference["images"]
    expected = reference["logits"]
    builder, arguments = PAIRS[timm_name]
    model = builder(
        input_shape=images.shape[1:],
        classes=int(reference["num_classes"]),
        classifier_activation=None,
        **arguments,
    )
    check_normalisation(model, reference)
    params = check_parameter_counts(model, reference)

    loaded = load_timm_state_dict(model, state_dict)

    assert sorted(name for name, _ in loaded) == sorted(
        name for name in state_dict if not name.endswith("num_batches_tracked"))
    logits = to_numpy(model(images, training=False))
    assert logits.shape == expected.shape and logits.dtype == np.float32
    max_abs_diff = float(np.max(np.abs(logits.astype(np.float64) - expected)))
    round_off = float(np.max(np.abs(expected - reference["logits_float64"])))
    logits_std = float(expected.std(axis=1).mean())
    RESULTS[timm_name] = dict(
        max_abs_diff=max_abs_diff, float32_round_off=round_off, logits_std=logits_std,
        params=params)
    # The comparison means something only if the logits depend on the image.
    assert np.abs(expected[0] - expected[1]).mean() > 100 * LOGITS_ATOL
    assert max_abs_diff <= LOGITS_ATOL, (
        f"{timm_name}: max |ours - timm| = {max_abs_diff:.3g} > {LOGITS_ATOL} "
        f"(timm float32 vs float64: {round_off:.3g}; logits std {logits_std:.3g})"
    )
    np.testing.assert_array_equal(logits.argmax(axis=1), expected.argmax(axis=1))
