"""The classification zoo: every builder, its architecture and its arguments."""

import keras
import numpy as np
import pytest
from conftest import inference, to_numpy

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.utils import count_params

ISSUE_MODELS = {
    "efficientnet_b0", "efficientnet_b1", "efficientnet_lite0", "mobilenet_v1",
    "mobilenet_v2", "mnasnet_a1", "resnet50", "condconv_efficientnet_b0",
    "condconv_efficientnet_b0_depth", "condconv_efficientnet_b1",
    "condconv_efficientnet_lite0", "condconv_mobilenet_v1", "condconv_mobilenet_v2",
    "condconv_mnasnet_a1", "condconv_resnet50", "dynamic_mobilenet_v2", "dynamic_resnet50",
    "sparse_dynamic_mobilenet_v2", "sparse_dynamic_resnet50", "resnet75_mod",
    "resnet86_mod", "mobilenet_v2_mod",
}
# One model per kind of layer (static, CondConv with shared routing, SD-Conv with
# dynamic depthwise layers, Mixture-of-Depths) builds, runs and round-trips on every
# backend; the other builders are more of the same Python, `breadth` (torch only in the
# default suite).
EVERY_BACKEND_MODELS = {
    "efficientnet_b0", "condconv_efficientnet_lite0", "sparse_dynamic_mobilenet_v2",
    "mobilenet_v2_mod",
}
# Detectors: tests/test_detection.py builds, trains and round-trips them.
DETECTION_MODELS = {"ssd300_mobilenet_v1", "condconv_ssd300_mobilenet_v1"}
SMALL_INPUT = (64, 64, 3)


def test_list_models_names_every_builder_of_the_issue():
    assert set(zoo.list_models()) == ISSUE_MODELS | DETECTION_MODELS
    assert zoo.list_models("ssd_mobilenet_v1") == sorted(DETECTION_MODELS)
    assert zoo.list_models(task="detection") == sorted(DETECTION_MODELS)
    assert set(zoo.list_models(task="classification")) == ISSUE_MODELS
    for name in ISSUE_MODELS | DETECTION_MODELS:
        assert getattr(zoo, name) is zoo.model_entry(name).builder
    assert zoo.list_models("resnet") == [
        "condconv_resnet50", "dynamic_resnet50", "resnet50", "resnet75_mod",
        "resnet86_mod", "sparse_dynamic_resnet50",
    ]


def _small_model_arguments(name):
    arguments = dict(input_shape=SMALL_INPUT, classes=10)
    if "num_experts" in zoo.model_entry(name).builder.__signature__.parameters:
        arguments["num_experts"] = 2  # keeps the .keras files small; the code path is the same
    return arguments


@pytest.mark.parametrize("name", [
    name if name in EVERY_BACKEND_MODELS else pytest.param(name, marks=pytest.mark.breadth)
    for name in sorted(ISSUE_MODELS)
])
def test_builder_runs_and_round_trips_through_keras_files(name, tmp_path, rng):
    model = zoo.get_model(name, **_small_model_arguments(name))
    images = rng.uniform(0, 255, size=(2,) + SMALL_INPUT).astype("float32")
    probabilities = inference(model, images)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(probabilities))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(model) is zoo.ZooModel
    # Same weights, same float32 graph: equal up to summation order.
    np.testing.assert_allclose(
        inference(reloaded, images), probabilities, atol=1e-6, rtol=1e-5
    )
    assert list(zoo.pyramid_outputs(reloaded)) == list(zoo.pyramid_outputs(model))


def _layers_of(model, layer_type):
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, layer_type)]


@pytest.mark.parametrize(
    "name,routings,cond_convs,classifier_is_dynamic",
    [
        # Appendix A of the CondConv paper, layer by layer.
        ("condconv_efficientnet_b0", 8, 8 * 3, False),  # blocks 8-15: expand, dw, project
        ("condconv_mobilenet_v1", 8, 8 * 2, True),  # separable blocks 6-13: dw, pw
        ("condconv_mobilenet_v2", 6, 6 * 3, True),  # the last 6 blocks
        ("condconv_mnasnet_a1", 6, 6 * 3, False),  # the last 3 groups: 2 + 3 + 1 blocks
        ("condconv_resnet50", 3, 3 * 3, True),  # the last 3 bottlenecks, shortcut static
    ],
)
def test_condconv_conversion_follows_appendix_a(name, routings, cond_convs, classifier_is_dynamic):
    model = zoo.get_model(name, input_shape=SMALL_INPUT, num_experts=2)
    spatial = [l for l in _layers_of(model, layers.ExpertLayer) if not isinstance(l, layers.CondDense)]
    shared_routings = [l for l in model.layers if isinstance(l, layers.Routing)]
    assert len(shared_routings) == routings
    assert len(spatial) == cond_convs
    # Routing is computed once per block and passed to its convolutions.
    assert all(layer.routing is None for layer in spatial)
    assert isinstance(model.get_layer("predictions"), layers.CondDense) is classifier_is_dynamic
    # Squeeze-excite convs stay static.
    se_convs = [l for l in model.layers if "_se_" in l.name and l.weights]
    assert all(type(l) is layers.Conv2D for l in se_convs)


@pytest.mark.parametrize("name", ["dynamic_mobilenet_v2", "sparse_dynamic_resnet50"])
def test_dynamic_variants_convert_every_conv_but_the_stem(name):
    model = zoo.get_model(name, input_shape=SMALL_INPUT, num_experts=2)
    static_convs = [
        l.name for l in model.layers
        if type(l) in (layers.Conv2D, layers.DepthwiseConv2D)
    ]
    assert static_convs in (["stem_conv"], ["conv1_conv"])
    assert not isinstance(model.get_layer("predictions"), layers.ExpertLayer)
    kind = layers.SparseDynamicConv2D if "sparse" in name else layers.DynamicConv2D
    assert _layers_of(model, kind)


@pytest.mark.parametrize(
    "name,mod_blocks,selected",
    [("resnet75_mod", 1 + 2 + 7 + 1, [4, 8, 8, 16, 16, 16]), ("mobilenet_v2_mod", 6, [1, 2, 4, 4, 6, 10])],
)
def test_mixture_of_depths_variants_replace_every_second_block(name, mod_blocks, selected):
    model = zoo.get_model(name, input_shape=SMALL_INPUT)
    mods = _layers_of(model, layers.MoDBlock)
    assert len(mods) == mod_blocks
    assert [m.num_selected for m in mods][: len(selected)] == selected


@pytest.mark.architecture
@pytest.mark.parametrize(
    "name,application",
    [
        ("efficientnet_b0", "EfficientNetB0"),
        ("efficientnet_b1", "EfficientNetB1"),
        ("mobilenet_v1", "MobileNet"),
        ("mobilenet_v2", "MobileNetV2"),
        ("resnet50", "ResNet50"),
    ],
)
def test_static_trainable_params_equal_keras_applications(name, application):
    ours = count_params(zoo.get_model(name)).trainable
    theirs = count_params(getattr(keras.applications, application)(weights=None)).trainable
    assert ours == theirs


@pytest.mark.architecture
@pytest.mark.parametrize("alpha", [0.35, 1.4])
def test_mobilenet_v2_widths_equal_keras_applications(alpha):
    ours = zoo.mobilenet_v2(alpha=alpha, input_shape=(96, 96, 3))
    theirs = keras.applications.MobileNetV2(alpha=alpha, weights=None, input_shape=(96, 96, 3))
    assert count_params(ours).trainable == count_params(theirs).trainable


# Weight-for-weight parity with keras.applications: tests/test_keras_applications_parity.py.


def test_include_top_false_gives_features_or_pooled_features():
    features = zoo.mobilenet_v2(include_top=False, input_shape=(96, 96, 3))
    assert tuple(features.output.shape) == (None, 3, 3, 1280)
    pooled = zoo.mobilenet_v2(include_top=False, pooling="max", input_shape=(96, 96, 3))
    assert tuple(pooled.output.shape) == (None, 1280)
    any_size = zoo.resnet50(include_top=False)
    assert tuple(any_size.input.shape) == (None, None, None, 3)


def test_input_tensor_is_used_as_the_model_input():
    image = keras.Input((64, 64, 3), name="my_image")
    model = zoo.mobilenet_v1(input_tensor=image, classes=5, alpha=0.25)
    assert model.inputs[0] is image
    assert tuple(model.output.shape) == (None, 5)


@pytest.mark.parametrize(
    "name,strides",
    [
        pytest.param("mobilenet_v1", [2, 4, 8, 16, 32], marks=pytest.mark.breadth),
        pytest.param("efficientnet_lite0", [2, 4, 8, 16, 32], marks=pytest.mark.breadth),
        ("resnet50", [2, 4, 8, 16, 32]),
    ],
)
def test_pyramid_outputs_have_the_stride_of_their_level(name, strides, rng):
    model = zoo.get_model(name, include_top=False, input_shape=(128, 128, 3))
    outputs = zoo.pyramid_outputs(model)
    assert list(outputs) == [f"P{level}" for level in range(1, 6)]
    assert [128 // tensor.shape[1] for tensor in outputs.values()] == strides
    extractor = zoo.feature_extractor(model, levels=("P4", "P5"))
    features = extractor(rng.uniform(0, 255, (1, 128, 128, 3)).astype("float32"))
    assert set(features) == {"P4", "P5"}
    with pytest.raises(ValueError, match="Unknown pyramid levels"):
        zoo.feature_extractor(model, levels=("P9",))


def test_padding_is_an_explicit_option(rng):
    same = zoo.mnasnet_a1(input_shape=(65, 65, 3), padding="same")
    symmetric = zoo.mnasnet_a1(input_shape=(65, 65, 3))
    assert any(l.name.endswith("_pad") for l in symmetric.layers)
    assert not any(l.name.endswith("_pad") for l in same.layers)
    assert count_params(same) == count_params(symmetric)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: zoo.mobilenet_v1(alpha=0.3), r"alpha.*\[0.25, 0.5, 0.75, 1.0\].*alpha=0.3"),
        (lambda: zoo.mobilenet_v2(alpha=2.0), r"\[0.35, 0.5, 0.75, 1.0, 1.3, 1.4\]"),
        (lambda: zoo.condconv_efficientnet_b0(num_experts=0), r"num_experts=0"),
        (lambda: zoo.condconv_resnet50(num_experts=-1), r"num_experts=-1"),
        (lambda: zoo.efficientnet_b0(input_shape=(16, 16, 3)), r"at least 32x32"),
        (lambda: zoo.resnet50(input_shape=(224, 224, 1)), r"3 channels"),
        (lambda: zoo.mobilenet_v2(input_shape=(224, 224)), r"\(height, width, 3\)"),
        (lambda: zoo.efficientnet_b0(weights="imagenet21k"), r"weights.*None.*\.weights\.h5.*imagenet21k"),
        (lambda: zoo.resnet50(pooling="mean"), r"pooling.*'avg', 'max'"),
        (lambda: zoo.resnet50(downsampling="conv5x5"), r"conv1x1.*conv3x3"),
        (lambda: zoo.mnasnet_a1(padding="reflect"), r"same.*symmetric"),
        (lambda: zoo.condconv_mobilenet_v2(strategy="fast"), r"strategy='fast'"),
        (lambda: zoo.get_model("resnet51"), r"Unknown model 'resnet51'.*resnet50"),
        (lambda: zoo.mobilenet_v2(num_experts=4), r"unexpected keyword.*num_experts"),
    ],
)
def test_bad_arguments_raise_clear_errors(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_weights_from_a_file_are_loaded(tmp_path, rng):
    model = zoo.mobilenet_v1(alpha=0.25, input_shape=(64, 64, 3), classes=3)
    path = tmp_path / "mobilenet.weights.h5"
    model.save_weights(path)
    reloaded = zoo.mobilenet_v1(alpha=0.25, input_shape=(64, 64, 3), classes=3, weights=str(path))
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(reloaded(images)), to_numpy(model(images)), atol=1e-6)


def test_builders_show_their_real_signature():
    import inspect

    parameters = inspect.signature(zoo.condconv_mobilenet_v1).parameters
    for argument in ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                     "classes", "classifier_activation", "name", "alpha", "num_experts"):
        assert argument in parameters
    assert parameters["name"].default == "condconv_mobilenet_v1"
    assert parameters["num_experts"].default == 8
    assert "num_experts" not in inspect.signature(zoo.mobilenet_v1).parameters
