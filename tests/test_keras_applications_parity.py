"""The zoo's static baselines reproduce keras.applications' logits with its weights.

Each parity test builds the keras.applications model (`weights=None`: keras' random
initialisation, no download), draws BatchNorm scales and offsets with a fixed NumPy
seed and sets the moving statistics to those of the test images (see
`randomize_batch_norms` for why not independent random statistics), copies the
weights with `copy_keras_applications_weights` into the zoo model and feeds both the
same raw [0, 255] images: through the module's `preprocess_input` on the keras side
for the MobileNets and ResNet50; keras' EfficientNet normalises inside, with its
`Normalization` layer set to the ImageNet mean and variance std**2 (what keras'
`weights="imagenet"` path computes, see keras_dynconv/weights/keras_applications.py).
Both models return logits (`classifier_activation=None`). `Comparison` checks, all
absolute, float32:

* normalised input (our `ImageNormalization` vs keras' preprocessing) <=
  NORMALIZED_ATOL = 1e-5: the two compute the same function in another order
  (`(x - 127.5) / 127.5` vs `x / 127.5 - 1`; `(x - mean) / std` vs `x / 255` then
  `Normalization`), i.e. within an ulp or so of values up to ~2.7.
* logits from the same (keras') normalised input <= LOGITS_ATOL = 1e-3: this is the
  weight copy itself; both models then run the same weights, our static convolutions
  in another order on torch (`keras_dynconv.layers.Conv2D` / `DepthwiseConv2D` compute
  on views; a strided 1x1 convolution subsamples first): ResNet50 2.7e-4 there.
* logits from the same raw pixels <= END_TO_END_ATOL = 1e-3: the ulp-level input
  difference above, amplified by the random networks (activations of order 1 with
  statistics fitted to four images make them sensitive: for EfficientNet, a 6e-8
  relative noise on keras' own normalised input moves its logits by ~1e-4).

Measured max |ours - keras| (normalised / same input / end to end; logits spread
0.5-4.8), 2-core CPU:

* torch: MobileNetV2 6e-8 / 0 / 2.1e-5, EfficientNet-B0 7e-7 / 0 / 1.5e-4,
  MobileNet 1.0 and 0.25 6e-8 / 4.8e-7 / 3.0e-5, ResNet50 0 / 0 / 0,
  EfficientNet-B1 7e-7 / 0 / 2.6e-4.
* tensorflow: 6e-8 / 0 / 3.4e-5, 7e-7 / 0 / 1.3e-4, 6e-8 / 0 / 2.3e-5, 0 / 0 / 0,
  7e-7 / 0 / 2.1e-4 (same order).
* jax: 1.2e-7 / 0 / 1.7e-5, 9.5e-7 / 1.2e-5 / 2.6e-4, 1.2e-7 / 0 / 2.0e-5,
  0 / 0 / 0, 9.5e-7 / 2.0e-5 / 3.9e-4 (XLA fuses EfficientNet differently).

A single misplaced tensor moves the logits by 1-100 (swapping one BatchNorm's gamma
and beta: 1.9 for MobileNetV2, 190 for EfficientNet-B0), far above every tolerance.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_dynconv import zoo
from keras_dynconv.weights.keras_applications import IMAGENET_STDDEV_RGB
from keras_dynconv.weights.keras_applications import KERAS_APPLICATIONS
from keras_dynconv.weights.keras_applications import build_keras_applications_model
from keras_dynconv.weights.keras_applications import copy_keras_applications_weights

NORMALIZED_ATOL = 1e-5
LOGITS_ATOL = 1e-3
END_TO_END_ATOL = 1e-3
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
CLASSES = 10  # a small head: the classifier is a layer like any other
SEED = 7

# Small inputs keep the builds fast; keras warns only when loading "imagenet".
PARITY_CASES = [
    pytest.param("mobilenet_v2", dict(alpha=1.0), (96, 96, 3), id="mobilenet_v2"),
    # B0's numerics on every backend: timm's golden logits of cc_b0_4e (test_timm_parity).
    pytest.param(
        "efficientnet_b0", {}, (64, 64, 3), id="efficientnet_b0", marks=pytest.mark.architecture,
    ),
    pytest.param(
        "mobilenet_v1", dict(alpha=1.0), (96, 96, 3), id="mobilenet_v1",
        marks=pytest.mark.architecture,
    ),
    pytest.param(
        "mobilenet_v1", dict(alpha=0.25), (96, 96, 3), id="mobilenet_v1_0.25",
        marks=pytest.mark.architecture,
    ),
    pytest.param("resnet50", {}, (64, 64, 3), id="resnet50", marks=pytest.mark.architecture),
    pytest.param(
        "efficientnet_b1", {}, (64, 64, 3), id="efficientnet_b1",
        marks=pytest.mark.architecture,
    ),
]


def randomize_batch_norms(model, rng, inputs):
    """Random BatchNorm scales and offsets, moving statistics measured on `inputs`.

    keras' default initialisation (moving statistics 0 / 1) shrinks the signal layer
    after layer: MobileNet's logits then do not depend on the image (spread 1e-7
    across images), and a wrong stem would not show. Random moving statistics drawn
    independently of the activations (mean ~ N(0, 0.1), variance ~ U(0.5, 1.5)) do
    not fix that, and scaling them to the activations makes the logits explode
    (1e6 for EfficientNet-B0) as each layer amplifies the previous one's change.
    So: gamma ~ U(0.5, 1.5) and beta ~ N(0, 0.1) first, then one training-mode
    pass with momentum 0 (and no dropout) gives every BatchNorm the mean and
    variance of its actual inputs: non-trivial per-channel statistics under which
    the inference-mode activations stay of order 1 in every layer.
    """
    batch_norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
    momenta, rates = [l.momentum for l in batch_norms], [l.rate for l in dropouts]
    for layer in batch_norms:
        shape = layer.gamma.shape
        layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        layer.beta.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        layer.momentum = 0.0
    for layer in dropouts:
        layer.rate = 0.0
    model(inputs, training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum
    for layer, rate in zip(dropouts, rates):
        layer.rate = rate


def set_imagenet_normalization(model, variance):
    """Sets keras EfficientNet's input statistics (its weights=None default is 0 / 1)."""
    layer = next(l for l in model.layers if isinstance(l, keras.layers.Normalization))
    # `mean` / `variance` are derived from these weights by `finalize_state`.
    layer.adapt_mean.assign(np.asarray(IMAGENET_MEAN_RGB, "float32"))
    layer.adapt_variance.assign(np.asarray(variance, "float32"))
    layer.finalize_state()


def images(shape, batch=4):
    """Raw [0, 255] RGB test images."""
    return np.random.default_rng(0).uniform(0, 255, (batch,) + shape).astype("float32")


def keras_model(name, arguments, shape, **kwargs):
    """keras.applications' counterpart of zoo model `name`, randomly initialised."""
    constructor = getattr(keras.applications, KERAS_APPLICATIONS[name].constructor)
    model = constructor(weights=None, input_shape=shape, **arguments, **kwargs)
    if KERAS_APPLICATIONS[name].input_mode == "imagenet":
        set_imagenet_normalization(model, np.square(IMAGENET_STDDEV_RGB))
    # Statistics of the images the tests feed: activations of order 1 for them (on
    # other images the small deep feature maps' statistics, from a few pixels, can
    # be far off and amplify differences layer after layer).
    randomize_batch_norms(model, np.random.default_rng(SEED), keras_inputs(name, images(shape)))
    return model


def keras_inputs(name, pixels):
    """What keras' model takes for raw [0, 255] `pixels`: its preprocess_input's."""
    spec = KERAS_APPLICATIONS[name]
    if spec.input_mode == "imagenet":  # EfficientNet normalises inside.
        return pixels
    module = getattr(keras.applications, spec.module)
    return module.preprocess_input(pixels.copy())


@dataclasses.dataclass(frozen=True)
class Comparison:
    """max |ours - keras| at each stage, and how much keras' outputs vary."""

    normalized: float  # the first convolution's input
    copied: float  # outputs from the same (keras') normalised input
    end_to_end: float  # outputs from the same raw pixels
    spread: float  # max |output - mean over the images|: the images matter

    def check(self):
        message = f"max |ours - keras|: {self}"
        assert self.spread > 0.1, message
        assert self.normalized <= NORMALIZED_ATOL, message
        assert self.copied <= LOGITS_ATOL, message
        assert self.end_to_end <= END_TO_END_ATOL, message


def after_normalization(model, normalization):
    """`model` from the output of its layer `normalization` on."""
    return keras.Model(normalization.output, model.output)


def compare(name, source, model, pixels):
    """Runs both models on raw `pixels` (keras' after its preprocess_input)."""
    inputs = keras_inputs(name, pixels)
    expected = to_numpy(source(inputs, training=False))
    # keras' EfficientNet normalises inside, with Rescaling / Normalization layers.
    preprocessing = [
        l for l in source.layers
        if isinstance(l, (keras.layers.Rescaling, keras.layers.Normalization))
    ]
    if preprocessing:
        inputs = keras.Model(source.input, preprocessing[-1].output)(inputs)
    normalization = model.get_layer("normalization")
    copied = to_numpy(after_normalization(model, normalization)(inputs, training=False))
    actual = to_numpy(model(pixels, training=False))
    assert actual.shape == expected.shape
    return Comparison(
        normalized=float(np.max(np.abs(to_numpy(normalization(pixels)) - to_numpy(inputs)))),
        copied=float(np.max(np.abs(copied - expected))),
        end_to_end=float(np.max(np.abs(actual - expected))),
        spread=float(np.max(np.abs(expected - expected.mean(axis=0)))),
    )


@pytest.mark.parametrize("name,arguments,shape", PARITY_CASES)
def test_logits_equal_keras_applications(name, arguments, shape):
    head = dict(classes=CLASSES, classifier_activation=None)
    source = keras_model(name, arguments, shape, **head)
    model = getattr(zoo, name)(input_shape=shape, **arguments, **head)
    pairs = copy_keras_applications_weights(source, model)

    assert len(pairs) == sum(len(l.weights) for l in model.layers)
    compare(name, source, model, images(shape)).check()


def test_headless_pooled_features_equal_keras_applications():
    shape = (96, 96, 3)
    headless = dict(include_top=False, pooling="avg")
    source = keras_model("mobilenet_v2", {}, shape, **headless)
    model = zoo.mobilenet_v2(input_shape=shape, **headless)
    pairs = copy_keras_applications_weights(source, model)

    assert pairs[-1] == ("Conv_1_bn/moving_variance", "head_bn/moving_variance")
    compare("mobilenet_v2", source, model, images(shape)).check()


@pytest.mark.architecture
def test_mobilenet_classifier_conv_becomes_dense():
    source = keras_model("mobilenet_v1", dict(alpha=0.25), (64, 64, 3), classes=CLASSES)
    model = zoo.mobilenet_v1(alpha=0.25, input_shape=(64, 64, 3), classes=CLASSES)
    pairs = copy_keras_applications_weights(source, model)

    assert pairs[-2:] == [
        ("conv_preds/kernel", "predictions/kernel"),
        ("conv_preds/bias", "predictions/bias"),
    ]
    np.testing.assert_array_equal(
        to_numpy(model.get_layer("predictions").kernel),
        to_numpy(source.get_layer("conv_preds").kernel)[0, 0],
    )


def weights_snapshot(model):
    return [to_numpy(variable).copy() for variable in model.weights]


def assert_unchanged(model, snapshot):
    for variable, before in zip(model.weights, snapshot):
        np.testing.assert_array_equal(to_numpy(variable), before, err_msg=variable.path)


# Weight shapes do not depend on the input size: the default pairs reuse the shapes
# of the parity tests (JAX compiles each initializer per shape).
MISMATCHED_PAIRS = [
    # Same stem and first depthwise conv, then EfficientNet's squeeze-excitation
    # (1, 1, 32, 8) meets MobileNetV2's projection (1, 1, 32, 16).
    pytest.param(
        "EfficientNetB0", {}, "mobilenet_v2", {},
        r"keras.applications variable 'block1a_se_reduce/kernel' has shape \(1, 1, 32, "
        r"8\), but variable 'block0_project/kernel' of layer 'block0_project' \(Conv2D\) "
        r"of model 'mobilenet_v2' has shape \(1, 1, 32, 16\)",
        id="efficientnet_b0-vs-mobilenet_v2",
    ),
    # MobileNet's first pointwise conv (32 -> 64) vs MobileNetV2's first projection
    # (32 -> 16), after the same stem and depthwise conv.
    pytest.param(
        "MobileNet", {}, "mobilenet_v2", {},
        r"keras.applications variable 'conv_pw_1/kernel' has shape \(1, 1, 32, 64\), but "
        r"variable 'block0_project/kernel' of layer 'block0_project' \(Conv2D\) of model "
        r"'mobilenet_v2' has shape \(1, 1, 32, 16\)",
        id="mobilenet-vs-mobilenet_v2", marks=pytest.mark.architecture,
    ),
]


@pytest.mark.parametrize("constructor,arguments,name,our_arguments,message", MISMATCHED_PAIRS)
def test_other_architecture_raises_naming_the_layers_and_assigns_nothing(
    constructor, arguments, name, our_arguments, message
):
    shape = (96, 96, 3)
    source = getattr(keras.applications, constructor)(
        weights=None, input_shape=shape, classes=CLASSES, **arguments
    )
    model = getattr(zoo, name)(input_shape=shape, classes=CLASSES, **our_arguments)
    snapshot = weights_snapshot(model)

    with pytest.raises(ValueError, match=f"{message}.*architectures differ"):
        copy_keras_applications_weights(source, model)
    assert_unchanged(model, snapshot)


def test_include_top_mismatch_raises_naming_the_surplus_layer():
    source = keras_model("mobilenet_v2", {}, (96, 96, 3), classes=CLASSES)
    model = zoo.mobilenet_v2(input_shape=(96, 96, 3), include_top=False)
    snapshot = weights_snapshot(model)

    with pytest.raises(ValueError, match=r"layer 'predictions' \(Dense\).*include_top"):
        copy_keras_applications_weights(source, model)
    assert_unchanged(model, snapshot)


@pytest.mark.architecture
def test_efficientnet_without_the_sqrt_rescaling_is_refused():
    """The published file's variance (= std) without keras' extra Rescaling."""
    source = keras_model("efficientnet_b0", {}, (64, 64, 3), include_top=False)
    set_imagenet_normalization(source, IMAGENET_STDDEV_RGB)
    model = zoo.efficientnet_b0(input_shape=(64, 64, 3), include_top=False)
    snapshot = weights_snapshot(model)

    with pytest.raises(ValueError, match=r"std \[.*Rescaling\(1 / sqrt\(std\)\)"):
        copy_keras_applications_weights(source, model)
    assert_unchanged(model, snapshot)


@pytest.mark.architecture
def test_other_input_normalization_is_refused():
    source = keras_model("mobilenet_v2", {}, (96, 96, 3), include_top=False)
    model = zoo.mobilenet_v2(input_shape=(96, 96, 3), include_top=False)
    model.get_layer("normalization").mode = "caffe"  # as if the builder said so
    snapshot = weights_snapshot(model)

    with pytest.raises(ValueError, match=r"mobilenet_v2.preprocess_input.*mode 'caffe'"):
        copy_keras_applications_weights(source, model)
    assert_unchanged(model, snapshot)


@pytest.mark.architecture
def test_build_from_a_file_in_the_published_format(tmp_path):
    """keras decodes the .h5 file; the published EfficientNet variance is fixed up."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    shape = (64, 64, 3)
    published = keras_model("efficientnet_b0", {}, shape, include_top=False)
    set_imagenet_normalization(published, IMAGENET_STDDEV_RGB)  # as the files store it
    path = os.path.join(tmp_path, KERAS_APPLICATIONS["efficientnet_b0"].weights_file(
        include_top=False).file_name)
    with h5py.File(path, "w") as file:  # the legacy layout keras' files have
        legacy_h5_format.save_weights_to_hdf5_group(file, published)

    source = build_keras_applications_model(
        "efficientnet_b0", path, include_top=False, input_shape=shape
    )
    model = zoo.efficientnet_b0(input_shape=shape, include_top=False, pooling=None)
    copy_keras_applications_weights(source, model)

    normalization = next(l for l in source.layers if isinstance(l, keras.layers.Normalization))
    np.testing.assert_allclose(
        to_numpy(normalization.variance).reshape(-1), np.square(IMAGENET_STDDEV_RGB),
        rtol=1e-6,
    )
    compare("efficientnet_b0", source, model, images(shape)).check()


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"Unknown model_name 'vgg16'.*mobilenet_v2"):
        build_keras_applications_model("vgg16", "missing.h5")


# --- the table ---------------------------------------------------------------------
class _Requested(Exception):
    """Raised by the stub `get_file` to stop a constructor before any download."""


@pytest.mark.architecture
@pytest.mark.parametrize(
    "name,include_top,alpha,size",
    [
        ("mobilenet_v1", True, 0.25, 128),
        ("mobilenet_v1", False, 1.0, 224),
        ("mobilenet_v2", True, 0.35, 96),
        ("mobilenet_v2", False, 1.4, 160),
        ("resnet50", True, 1.0, 224),
        ("resnet50", False, 1.0, 224),
        ("efficientnet_b0", True, 1.0, 224),
        ("efficientnet_b1", False, 1.0, 240),
    ],
)
def test_weights_files_are_those_keras_requests(monkeypatch, name, include_top, alpha, size):
    """keras' constructor with weights="imagenet" asks for exactly the table's file."""
    from keras.src.utils import file_utils

    requested = {}

    def get_file(fname=None, origin=None, file_hash=None, **kwargs):
        requested.update(fname=fname, origin=origin, file_hash=file_hash)
        raise _Requested

    monkeypatch.setattr(file_utils, "get_file", get_file)
    spec = KERAS_APPLICATIONS[name]
    constructor = getattr(keras.applications, spec.constructor)
    arguments = {argument: alpha for argument in spec.arguments}
    with pytest.raises(_Requested):
        constructor(
            weights="imagenet", include_top=include_top, input_shape=(size, size, 3),
            **arguments,
        )
    expected = spec.weights_file(include_top=include_top, alpha=alpha, size=size)
    assert requested == dict(
        fname=expected.file_name, origin=expected.url, file_hash=expected.file_hash
    )
    assert expected.hash_algorithm == ("md5" if expected.file_hash else None)
    assert expected.file_hash is None or len(expected.file_hash) == 32  # md5 hex digest


def test_table_covers_the_published_widths():
    assert KERAS_APPLICATIONS["mobilenet_v1"].alphas == (0.25, 0.5, 0.75, 1.0)
    assert KERAS_APPLICATIONS["mobilenet_v2"].alphas == (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    assert KERAS_APPLICATIONS["mobilenet_v2"].sizes == (96, 128, 160, 192, 224)
    with pytest.raises(ValueError, match=r"alpha=0.3"):
        KERAS_APPLICATIONS["mobilenet_v1"].weights_file(alpha=0.3)
    with pytest.raises(ValueError, match=r"size=96"):
        KERAS_APPLICATIONS["mobilenet_v1"].weights_file(size=96)
    assert {name: spec.top1 for name, spec in KERAS_APPLICATIONS.items()} == {
        "mobilenet_v1": 70.4, "mobilenet_v2": 71.3, "resnet50": 74.9,
        "efficientnet_b0": 77.1, "efficientnet_b1": 79.1,
    }
