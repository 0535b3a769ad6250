"""Zoo models reproduce timm's logits with timm's weights (no timm or torch needed).

tests/golden/timm/<model>.json (made by scripts/timm_golden.py, see its README) holds
a timm model's ordered state_dict [name, shape], a NumPy-only rule that rebuilds its
weights exactly, an input rule and timm's eval-mode float32 logits for that input.
Each test rebuilds the weights from the json's rule (written here independently of
the golden script), loads them with `load_timm_state_dict` into the matching zoo model
built at the golden input size, feeds the golden input as raw [0, 255] NHWC pixels
(our models normalise inside; the normalisation is checked against the json's
default_cfg mean/std) and compares the logits.

Tolerance: |ours - timm| <= LOGITS_ATOL_IN_STD * mean(logits_std) (absolute, no rtol).
The json's float64_rel_err (how far float32 round-off alone moves timm's logits, in
units of the logits' std) is 2.2e-6..8.5e-6 for these models, and the stored logits
are rounded to 6 significant digits. Measured max |ours - timm| / std on a 2-core CPU:
TensorFlow 6.7e-6..2.8e-5, JAX 4.5e-6..2.4e-5, PyTorch 6.7e-6..1.5e-5 (largest:
tf_efficientnet_cc_b1_8e). LOGITS_ATOL_IN_STD = 1e-4 (the golden README's suggestion)
leaves a 3.5x margin over the worst case; the assertion message reports the deviation.
"""

import functools
import json
import math
import os
import re

import keras
import numpy as np
import pytest
from conftest import BACKEND, to_numpy

from keras_dynconv import zoo
from keras_dynconv.layers import Routing
from keras_dynconv.weights import load_timm_state_dict
from keras_dynconv.weights.timm_state_dict import _timm_module_order
from keras_dynconv.zoo.preprocessing import NORMALIZATIONS

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "timm")
LOGITS_ATOL_IN_STD = 1e-4

# timm model -> (zoo builder, builder arguments besides input_shape / classes).
PAIRS = {
    "tf_efficientnet_b0": (zoo.efficientnet_b0, {}),
    "tf_efficientnet_b1": (zoo.efficientnet_b1, {}),
    "efficientnet_lite0": (zoo.efficientnet_lite0, {}),
    "semnasnet_100": (zoo.mnasnet_a1, {}),
    "tf_efficientnet_cc_b0_4e": (zoo.condconv_efficientnet_b0, dict(num_experts=4)),
    "tf_efficientnet_cc_b0_8e": (zoo.condconv_efficientnet_b0, dict(num_experts=8)),
    "tf_efficientnet_cc_b1_8e": (zoo.condconv_efficientnet_b1, dict(num_experts=8)),
}


@functools.lru_cache(maxsize=None)
def golden(name):
    with open(os.path.join(GOLDEN_DIR, f"{name}.json")) as f:
        return json.load(f)


def rebuild_state_dict(spec):
    """The golden weights, from the json's weight rule: {name: float32 array}.

    Entry i of spec["state_dict"] (shape S) draws from default_rng(seed=i):
    running_var and BN weights ~ U(0.5, 1.5), running_mean ~ N(0, 0.1), biases ~
    N(0, 0.05), other weights ~ N(0, 1) * weight_gain * sqrt(1 / fan_in[name]), in
    float64, then cast to float32.
    """
    gain = spec["weight_gain"]
    batch_norm_weights = set(spec["batchnorm_params"])
    state_dict = {}
    for seed, (name, shape) in enumerate(spec["state_dict"]):
        rng = np.random.default_rng(seed=seed)
        shape = tuple(shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_var" or name in batch_norm_weights:
            values = rng.uniform(0.5, 1.5, size=shape)
        elif leaf == "running_mean":
            values = rng.normal(0.0, 0.1, size=shape)
        elif leaf == "bias":
            values = rng.normal(0.0, 0.05, size=shape)
        elif leaf == "weight":
            scale = gain * math.sqrt(1.0 / spec["fan_in"][name])
            values = rng.normal(0.0, 1.0, size=shape) * scale
        else:
            raise AssertionError(f"no weight rule for {name}")
        state_dict[name] = values.astype(np.float32)
    return state_dict


def golden_pixels(spec):
    """Raw [0, 255] NHWC pixels of the json's input rule, as float32."""
    seed = int(re.search(r"default_rng\((\d+)\)", spec["input_rule"]).group(1))
    shape = tuple(spec["input_shape_nhwc"])
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype(np.float32)


def check_normalisation(model, spec, pixels):
    """Our in-model normalisation is timm's (x / 255 - mean) / std of default_cfg."""
    mean, std = NORMALIZATIONS[model.get_layer("normalization").mode]
    np.testing.assert_allclose(mean, 255 * np.asarray(spec["default_cfg"]["mean"]), rtol=1e-6)
    np.testing.assert_allclose(std, 255 * np.asarray(spec["default_cfg"]["std"]), rtol=1e-6)
    # The input timm was fed (the json's rule), checked against its recorded sum.
    cfg = spec["default_cfg"]
    normalised = (pixels / np.float32(255) - np.asarray(cfg["mean"], np.float32)) / (
        np.asarray(cfg["std"], np.float32))
    np.testing.assert_allclose(normalised.astype(np.float64).sum(), spec["input_sum"], rtol=1e-9)


def build(timm_name, **overrides):
    builder, arguments = PAIRS[timm_name]
    spec = golden(timm_name)
    return builder(
        input_shape=tuple(spec["input_shape_nhwc"][1:]),
        classes=spec["default_cfg"]["num_classes"],
        classifier_activation=None,
        **{**arguments, **overrides},
    )


def with_batch_counters(state_dict):
    """Adds the `num_batches_tracked` buffers a real timm state_dict has after each BN."""
    result = {}
    for name, value in state_dict.items():
        result[name] = value
        if name.endswith(".running_var"):
            result[name[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return result


def zero_state_dict(spec):
    return {name: np.zeros(shape, np.float32) for name, shape in spec["state_dict"]}


# The CondConv pair runs on every backend in the default suite; the others check the
# static architectures, whose layers are Keras' own, and are `architecture` tests
# (torch only by default, every backend with -m large: see conftest.py).
ON_EVERY_BACKEND = ("tf_efficientnet_cc_b0_4e",)


@pytest.mark.parametrize(
    "timm_name",
    [
        name if name in ON_EVERY_BACKEND else pytest.param(name, marks=pytest.mark.architecture)
        for name in sorted(PAIRS)
    ],
)
def test_logits_equal_timm(timm_name):
    spec = golden(timm_name)
    state_dict = rebuild_state_dict(spec)
    # The rebuilt weights are the golden ones: per-entry float64 sums as recorded.
    sums = [value.astype(np.float64).sum() for value in state_dict.values()]
    np.testing.assert_allclose(sums, spec["state_dict_sums"], rtol=1e-9, atol=1e-9)
    model = build(timm_name)
    pixels = golden_pixels(spec)
    check_normalisation(model, spec, pixels)
    routings = [layer for layer in model.layers if isinstance(layer, Routing)]
    temperatures = [to_numpy(routing.temperature) for routing in routings]

    # Sorted by name, as a .safetensors file (timm's hub weights) stores them: the
    # loader must restore timm's module order itself.
    loaded = load_timm_state_dict(model, dict(sorted(with_batch_counters(state_dict).items())))

    assert sorted(name for name, _ in loaded) == sorted(state_dict)
    # Routing temperatures are not part of timm's state and stay untouched.
    np.testing.assert_array_equal(
        temperatures, [to_numpy(routing.temperature) for routing in routings])

    assert_inference_matches(model, pixels, spec)


def module_prefixes(names):
    prefixes = []
    for name in names:
        prefix = name.rpartition(".")[0]
        if not prefixes or prefixes[-1] != prefix:
            prefixes.append(prefix)
    return prefixes


@pytest.mark.parametrize("timm_name", sorted(PAIRS))
def test_name_sorted_state_dict_gets_timm_module_order_back(timm_name):
    names = [name for name, _ in golden(timm_name)["state_dict"]]
    restored = _timm_module_order(sorted(names))
    assert module_prefixes(restored) == module_prefixes(names)
    assert _timm_module_order(names) == names


def assert_inference_matches(model, inputs, spec):
    """timm's logits from the model's eager call and, on torch, from the call under
    `torch.no_grad()` that `predict` makes, which takes the inference-only paths (direct
    calls, prepared layers, chunked 1x1 and compiled depthwise kernels)."""
    assert_logits_match(model(inputs, training=False), spec)
    if BACKEND == "torch":
        import torch

        with torch.no_grad():
            assert_logits_match(model(inputs, training=False), spec)


def assert_logits_match(outputs, spec):
    logits = to_numpy(outputs).astype(np.float64)
    expected = np.asarray(spec["logits"], np.float64)
    assert logits.shape == tuple(spec["logits_shape"])
    atol = LOGITS_ATOL_IN_STD * float(np.mean(spec["logits_std"]))
    deviation = float(np.max(np.abs(logits - expected)))
    assert deviation <= atol, (
        f"{spec['model']}: max |ours - timm| = {deviation:.3g} = "
        f"{deviation / np.mean(spec['logits_std']):.3g} logits std (tolerance {atol:.3g}; "
        f"float64_rel_err {spec['float64_rel_err']:.3g})"
    )
    assert list(logits.argmax(axis=1)) == spec["logits_argmax"]


@pytest.mark.architecture
def test_tf_efficientnet_lite0_loads_into_efficientnet_lite0():
    """The tf_ port has Lite0's tensors; only padding, BN eps and inputs differ.

    Our efficientnet_lite0 follows timm's efficientnet_lite0 (symmetric padding, eps
    1e-5, ImageNet mean/std). tf_efficientnet_lite0 uses TF "same" padding, eps 1e-3
    and mean = std = 0.5: built with padding="same", fed the normalised input and
    with every BN epsilon set to 1e-3, the same loaded tensors give timm's logits.
    """
    spec = golden("tf_efficientnet_lite0")
    assert spec["bn_eps"] == [1e-3] and spec["default_cfg"]["mean"] == [0.5] * 3
    model = build("efficientnet_lite0", padding="same", include_preprocessing=False)
    load_timm_state_dict(model, rebuild_state_dict(spec))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = 1e-3
    pixels = golden_pixels(spec)
    cfg = spec["default_cfg"]
    inputs = (pixels / np.float32(255) - np.asarray(cfg["mean"], np.float32)) / (
        np.asarray(cfg["std"], np.float32))
    np.testing.assert_allclose(inputs.astype(np.float64).sum(), spec["input_sum"], rtol=1e-9)
    assert_inference_matches(model, inputs, spec)


# (timm state_dict, zoo model (as its PAIRS key), what the error must say)
MISMATCHES = [
    (  # 8 experts into 4: the first CondConv block's routing
        "tf_efficientnet_cc_b0_8e", "tf_efficientnet_cc_b0_4e",
        r"timm tensor 'blocks\.4\.0\.routing_fn\.weight' has shape \(8, 80\), but layer "
        r"'block8_routing' \(Routing\).* needs \(4, 80\)",
    ),
    (  # CondConv state_dict into the static EfficientNet-B0
        "tf_efficientnet_cc_b0_4e", "tf_efficientnet_b0",
        r"timm tensor 'blocks\.4\.0\.routing_fn\.weight' has shape \(4, 80\), but layer "
        r"'block8_expand' \(Conv2D\).* needs \(480, 80, 1, 1\)",
    ),
    (  # B0 has squeeze-excite, Lite0 has not
        "tf_efficientnet_b0", "efficientnet_lite0",
        r"timm tensor 'blocks\.0\.0\.se\.conv_reduce\.weight' has shape \(8, 32, 1, 1\), "
        r"but layer 'block0_project' \(Conv2D\)",
    ),
]


@pytest.mark.parametrize(
    "timm_name,model_of,message", MISMATCHES, ids=["experts", "static", "squeeze_excite"]
)
def test_mismatching_architectures_raise_a_clear_error(timm_name, model_of, message):
    state_dict = zero_state_dict(golden(timm_name))
    model = build(model_of)
    before = [to_numpy(v) for v in model.weights]
    with pytest.raises(ValueError, match=message):
        load_timm_state_dict(model, state_dict)
    # Nothing was assigned.
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, to_numpy(variable))


def test_missing_and_extra_tensors_are_named():
    spec = golden("semnasnet_100")
    model = build("semnasnet_100")
    state_dict = zero_state_dict(spec)
    truncated = {k: v for k, v in state_dict.items() if not k.startswith("classifier.")}
    with pytest.raises(
        ValueError, match=r"Layer 'predictions' \(Dense\).* has no timm counterpart"
    ):
        load_timm_state_dict(model, truncated)
    extra = {**state_dict, "extra.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(
        ValueError, match=r"timm tensor 'extra\.weight' with shape \(3, 3\) has no counterpart"
    ):
        load_timm_state_dict(model, extra)
    no_bias = {k: v for k, v in state_dict.items() if k != "classifier.bias"}
    with pytest.raises(ValueError, match=r"needs timm tensor 'classifier\.bias'"):
        load_timm_state_dict(model, no_bias)
