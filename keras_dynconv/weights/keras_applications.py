"""Copies `keras.applications` weights into the zoo's static baselines.

Supported pairs (keras.applications constructor -> zoo builder), see
`KERAS_APPLICATIONS`:

* `MobileNet(alpha=a)` -> `mobilenet_v1(alpha=a)`
* `MobileNetV2(alpha=a)` -> `mobilenet_v2(alpha=a)`
* `ResNet50` -> `resnet50`
* `EfficientNetB0` / `EfficientNetB1` -> `efficientnet_b0` / `efficientnet_b1`

with the same `include_top` (and `classes`) on both sides.

Matching is by order and shape, not by name (the zoo names its layers by block
index, keras.applications by stage): the layers that hold weights are taken in
`model.layers` order on both sides and zipped; within a layer the variables are
paired by their name (`kernel`, `bias`, `gamma`, `moving_mean`...). Both sides are
Keras layers with Keras layouts, so tensors are copied unchanged, with one exception:
keras' MobileNet classifies with a 1x1 `Conv2D` (`conv_preds`, kernel `(1, 1, C, K)`)
on the pooled features, where the zoo uses a `Dense` layer (kernel `(C, K)`): the
same matrix, reshaped.

Input normalisation. Zoo models take raw [0, 255] RGB and normalise inside with an
`ImageNormalization` layer (no weights). keras' MobileNet, MobileNetV2 and ResNet50
expect the caller to apply their module's `preprocess_input` ("tf" mode for the
MobileNets, i.e. our "inception" mode; "caffe" for ResNet50), while keras'
EfficientNet normalises inside with `Rescaling(1 / 255)` and a `Normalization` layer
whose `mean` / `variance` / `count` are (non-trainable) weights. Those weights are
not copied: the zoo hard-codes the statistics. Instead the normalisation the source
applies before its first convolution is computed from its `Rescaling` and
`Normalization` layers and must equal our model's `ImageNormalization` mode
(relative tolerance `NORMALIZATION_RTOL`), otherwise ValueError. keras'
`weights="imagenet"` quirk is taken into account that way: the published EfficientNet
files store the standard deviation as `variance` (so `Normalization` divides by
`sqrt(std)`), and keras then adds `Rescaling(1 / sqrt(std))` (only when
`weights="imagenet"`; tensorflow/tensorflow#49930); the two together divide by `std`.
A keras EfficientNet built with `weights=<path>` lacks that `Rescaling` and normalises
differently; `build_keras_applications_model` squares the stored variance instead,
which gives the same normalisation. For the MobileNets and ResNet50 the source
family is recognised by the name of its first layer with weights and its
`preprocess_input` mode (`KerasApplicationsSource.input_mode`) must equal ours. A zoo
model built with `include_preprocessing=False` has no `ImageNormalization` layer: no
check, the caller feeds what the keras model's normalisation would produce.

A count, layer-type or shape difference raises a ValueError naming the first
keras.applications layer (or variable) and our layer that do not fit; nothing is
assigned unless every variable fits. Padding, BatchNorm epsilon and activations are
properties of the builders (tests/test_keras_applications_parity.py checks the
logits).

The published ImageNet files: `KERAS_APPLICATIONS[name].weights_file(...)` gives the
file name, URL and hash exactly as keras' own source names them; download with

    file = KERAS_APPLICATIONS["mobilenet_v2"].weights_file(alpha=1.0, size=224)
    path = keras.utils.get_file(file.file_name, file.url, file_hash=file.file_hash,
                                cache_subdir="models")
    source = build_keras_applications_model("mobilenet_v2", path, alpha=1.0)
    model = zoo.mobilenet_v2(alpha=1.0)
    copy_keras_applications_weights(source, model)
"""

import dataclasses
import math

import keras
import numpy as np

from keras_dynconv.zoo.preprocessing import BGR_NORMALIZATIONS
from keras_dynconv.zoo.preprocessing import NORMALIZATIONS

# Our ImageNormalization layer's name in every zoo builder (zoo/arguments.py).
NORMALIZATION_LAYER = "normalization"
# Float32 statistics (0.485 / (1 / 255)...) vs our float64 constants: ~1e-7 apart.
NORMALIZATION_RTOL = 1e-5
# The ImageNet standard deviation of [0, 1] RGB, as keras' efficientnet.py
# (IMAGENET_STDDEV_RGB); its published files store it as the `variance`.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
MD5 = "md5"
APACHE = "Apache-2.0"


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """One published weight file: `keras.utils.get_file(file_name, url, file_hash)`.

    `hash_algorithm` is "md5" or "sha256" (keras' `get_file` tells them apart by
    length), or None where keras' source gives no hash (`file_hash` None).
    """

    file_name: str
    url: str
    file_hash: str | None
    hash_algorithm: str | None


@dataclasses.dataclass(frozen=True)
class KerasApplicationsSource:
    """The keras.applications model a zoo baseline mirrors, and its published weights.

    Attributes:
        constructor: the `keras.applications` function, e.g. "MobileNetV2".
        module: the `keras.applications` submodule holding its `preprocess_input`.
        arguments: zoo builder arguments passed unchanged to the constructor
            (`alpha` for the MobileNets).
        input_mode: our `ImageNormalization` mode equal to keras' input pipeline
            (`preprocess_input` for the MobileNets and ResNet50, in-model for
            EfficientNet).
        first_layer: keras' name of the model's first layer with weights other than
            `Normalization`, which identifies the family of a keras model.
        base_url, top_file, notop_file, top_hash, notop_hash, hash_algorithm: the
            published files as keras' source names them; `{tag}` / `{size}` in a
            file name stand for the width tag of `alpha_tags` and the input size.
        alpha_tags: `(alpha, tag)` for each width with published weights.
        sizes: input sizes with a published file of their own (the MobileNets);
            empty: one file for every input size, trained at `default_size`.
        default_size: the constructor's default input size.
        top1: ImageNet top-1 accuracy (%) of keras.io/api/applications' table, at
            alpha 1.0 and `default_size`.
        license: license of the published weights.
        license_note: where the weights and their license come from.
    """

    constructor: str
    module: str
    arguments: tuple
    input_mode: str
    first_layer: str
    base_url: str
    top_file: str
    notop_file: str
    top_hash: str | None
    notop_hash: str | None
    hash_algorithm: str | None
    top1: float
    license: str
    license_note: str
    alpha_tags: tuple = ((1.0, ""),)
    sizes: tuple = ()
    default_size: int = 224

    @property
    def alphas(self):
        return tuple(alpha for alpha, _ in self.alpha_tags)

    def weights_file(self, include_top=True, alpha=1.0, size=None):
        """The published file for `include_top`, width `alpha` and input `size`.

        Args:
            include_top: the file with the classifier (else the `_no_top` /
                `_notop` file).
            alpha: width multiplier, one of `alphas`.
            size: input size, one of `sizes` (default: `default_size`); ignored
                when `sizes` is empty (one file for every size).

        Returns:
            A `WeightsFile`.

        Raises:
            ValueError: for an `alpha` or `size` without published weights.
        """
        size = self.default_size if size is None else size
        tags = dict(self.alpha_tags)
        if alpha not in tags:
            raise ValueError(
                f"keras.applications.{self.constructor} publishes weights for alpha in "
                f"{list(tags)}. Received alpha={alpha!r}"
            )
        if self.sizes and size not in self.sizes:
            raise ValueError(
                f"keras.applications.{self.constructor} publishes weights for input "
                f"sizes {list(self.sizes)}. Received size={size!r}"
            )
        template = self.top_file if include_top else self.notop_file
        file_name = template.format(tag=tags[alpha], size=size)
        file_hash = self.top_hash if include_top else self.notop_hash
        return WeightsFile(
            file_name=file_name,
            url=self.base_url + file_name,
            file_hash=file_hash,
            hash_algorithm=self.hash_algorithm if file_hash else None,
        )


_KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_SLIM_NOTE = (
    "Converted by Keras from the TF-Slim ImageNet checkpoints of tensorflow/models "
    "(Apache-2.0)."
)

# Files, URLs and hashes as in keras/src/applications/{mobilenet, mobilenet_v2,
# resnet, efficientnet}.py of keras 3 (BASE_WEIGHT(S)_PATH, WEIGHTS_HASHES and the
# file names built in each constructor).
KERAS_APPLICATIONS = {
    "mobilenet_v1": KerasApplicationsSource(
        constructor="MobileNet",
        module="mobilenet",
        arguments=("alpha",),
        input_mode="inception",
        first_layer="conv1",
        base_url=_KERAS_APPLICATIONS_URL + "mobilenet/",
        top_file="mobilenet_{tag}_{size}_tf.h5",
        notop_file="mobilenet_{tag}_{size}_tf_no_top.h5",
        top_hash=None,
        notop_hash=None,
        hash_algorithm=None,
        top1=70.4,
        license=APACHE,
        license_note=_SLIM_NOTE,
        alpha_tags=((0.25, "2_5"), (0.5, "5_0"), (0.75, "7_5"), (1.0, "1_0")),
        sizes=(128, 160, 192, 224),
    ),
    "mobilenet_v2": KerasApplicationsSource(
        constructor="MobileNetV2",
        module="mobilenet_v2",
        arguments=("alpha",),
        input_mode="inception",
        first_layer="Conv1",
        base_url=_KERAS_APPLICATIONS_URL + "mobilenet_v2/",
        top_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{tag}_{size}.h5",
        notop_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{tag}_{size}_no_top.h5",
        top_hash=None,
        notop_hash=None,
        hash_algorithm=None,
        top1=71.3,
        license=APACHE,
        license_note=_SLIM_NOTE,
        # keras formats the width with f"{float(alpha)}".
        alpha_tags=tuple((alpha, str(alpha)) for alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
        sizes=(96, 128, 160, 192, 224),
    ),
    "resnet50": KerasApplicationsSource(
        constructor="ResNet50",
        module="resnet50",
        arguments=(),
        input_mode="caffe",
        first_layer="conv1_conv",
        base_url=_KERAS_APPLICATIONS_URL + "resnet/",
        top_file="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        notop_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        top_hash="2cb95161c43110f7111970584f804107",
        notop_hash="4d473c1dd8becc155b73f8504c6f6626",
        hash_algorithm=MD5,
        top1=74.9,
        license="MIT",
        license_note=(
            "Ported by Keras from Kaiming He's original Caffe ResNet-50 "
            "(KaimingHe/deep-residual-networks, MIT license), as the README of "
            "fchollet/deep-learning-models states."
        ),
    ),
    "efficientnet_b0": KerasApplicationsSource(
        constructor="EfficientNetB0",
        module="efficientnet",
        arguments=(),
        input_mode="imagenet",
        first_layer="stem_conv",
        base_url="https://storage.googleapis.com/keras-applications/",
        top_file="efficientnetb0.h5",
        notop_file="efficientnetb0_notop.h5",
        top_hash="902e53a9f72be733fc0bcb005b3ebbac",
        notop_hash="50bc09e76180e00e4465e1a485ddc09d",
        hash_algorithm=MD5,
        top1=77.1,
        license=APACHE,
        license_note=(
            "Converted by Keras from the official EfficientNet checkpoints of "
            "tensorflow/tpu (Apache-2.0)."
        ),
    ),
    "efficientnet_b1": KerasApplicationsSource(
        constructor="EfficientNetB1",
        module="efficientnet",
        arguments=(),
        input_mode="imagenet",
        first_layer="stem_conv",
        base_url="https://storage.googleapis.com/keras-applications/",
        top_file="efficientnetb1.h5",
        notop_file="efficientnetb1_notop.h5",
        top_hash="1d254153d4ab51201f1646940f018540",
        notop_hash="74c4e6b3e1f6a1eea24c589628592432",
        hash_algorithm=MD5,
        top1=79.1,
        license=APACHE,
        license_note=(
            "Converted by Keras from the official EfficientNet checkpoints of "
            "tensorflow/tpu (Apache-2.0)."
        ),
        default_size=240,
    ),
}


def build_keras_applications_model(
    model_name, weights_path, include_top=True, classes=1000, **arguments
):
    """Builds the keras.applications model of zoo model `model_name` from a file.

    The file is decoded by keras itself (`weights=weights_path`, i.e.
    `model.load_weights`). keras adds the `Rescaling(1 / sqrt(std))` that completes
    EfficientNet's input normalisation only for `weights="imagenet"` (see the module
    docstring); when the loaded `Normalization` variance is the published standard
    deviation, it is squared here instead, so the model normalises as keras'
    `weights="imagenet"` model does.

    Args:
        model_name: a key of `KERAS_APPLICATIONS`, e.g. "mobilenet_v2".
        weights_path: a downloaded weight file (see `KerasApplicationsSource.
            weights_file`), with or without the top as `include_top` says.
        include_top, classes: as in keras.applications.
        **arguments: other constructor arguments (`alpha`, `input_shape`,
            `pooling`, `classifier_activation`...).

    Returns:
        The keras.applications `Functional` model.

    Raises:
        ValueError: for an unknown `model_name`; keras' own errors otherwise.
    """
    if model_name not in KERAS_APPLICATIONS:
        raise ValueError(
            f"Unknown model_name {model_name!r}. Expected one of "
            f"{sorted(KERAS_APPLICATIONS)}."
        )
    constructor = getattr(keras.applications, KERAS_APPLICATIONS[model_name].constructor)
    model = constructor(
        include_top=include_top, weights=weights_path, classes=classes, **arguments
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            variance = _channel_values(layer.variance, layer)
            if np.allclose(variance, IMAGENET_STDDEV_RGB, rtol=NORMALIZATION_RTOL):
                # `variance` is derived from the `adapt_variance` weight by
                # `finalize_state`, as after keras' own loading.
                squared = np.reshape(variance**2, layer.adapt_variance.shape)
                layer.adapt_variance.assign(squared.astype(layer.adapt_variance.dtype))
                layer.finalize_state()
    return model


# --- copying -------------------------------------------------------------------------
# The first isinstance match wins; DepthwiseConv2D is not a Conv2D subclass in Keras 3.
_LAYER_KINDS = (
    (keras.layers.BatchNormalization, "BatchNormalization"),
    (keras.layers.DepthwiseConv2D, "DepthwiseConv2D"),
    (keras.layers.Conv2D, "Conv2D"),
    (keras.layers.Dense, "Dense"),
)


def _kind(layer):
    for layer_type, kind in _LAYER_KINDS:
        if isinstance(layer, layer_type):
            return kind
    return type(layer).__name__


def _describe(layer, model):
    return f"layer '{layer.name}' ({type(layer).__name__}) of model '{model.name}'"


def _is_pointwise_classifier(source_layer, layer):
    """A 1x1 `Conv2D` (keras' MobileNet `conv_preds`) -> our `Dense`: same matrix."""
    return (
        _kind(source_layer) == "Conv2D"
        and _kind(layer) == "Dense"
        and tuple(source_layer.kernel.shape[:2]) == (1, 1)
    )


def _source_layers(source):
    """`source`'s layers with weights, without its input `Normalization`."""
    return [
        layer for layer in source.layers
        if layer.weights and not isinstance(layer, keras.layers.Normalization)
    ]


def _match_layer(source_layer, layer, source, model):
    """[(our variable, value, source path)] for one layer pair, or ValueError."""
    theirs, ours = _describe(source_layer, source), _describe(layer, model)
    reshape = _is_pointwise_classifier(source_layer, layer)
    if _kind(source_layer) != _kind(layer) and not reshape:
        raise ValueError(
            f"keras.applications {theirs} does not fit {ours}: different layer types "
            "at the same position; the architectures differ."
        )
    variables = {variable.name: variable for variable in layer.weights}
    assignments = []
    for source_variable in source_layer.weights:
        variable = variables.pop(source_variable.name, None)
        source_shape = tuple(source_variable.shape)
        if variable is None:
            raise ValueError(
                f"keras.applications variable '{source_variable.path}' with shape "
                f"{source_shape} has no counterpart in {ours}, which has "
                f"{[v.path for v in layer.weights]}: the architectures differ."
            )
        shape = tuple(variable.shape)
        fits = math.prod(source_shape) == math.prod(shape) if reshape else source_shape == shape
        if not fits:
            raise ValueError(
                f"keras.applications variable '{source_variable.path}' has shape "
                f"{source_shape}, but variable '{variable.path}' of {ours} has shape "
                f"{shape}: the architectures differ."
            )
        dtype = keras.backend.standardize_dtype(variable.dtype)
        value = keras.ops.convert_to_numpy(source_variable).astype(dtype).reshape(shape)
        assignments.append((variable, value, source_variable.path))
    if variables:
        missing = next(iter(variables.values()))
        raise ValueError(
            f"Variable '{missing.path}' of {ours} has no counterpart in keras.applications "
            f"{theirs}: the architectures differ."
        )
    return assignments


def _raise_count_mismatch(source, source_layers, model, layers):
    """ValueError naming the first layer pair that does not fit, else the surplus."""
    for source_layer, layer in zip(source_layers, layers):
        _match_layer(source_layer, layer, source, model)  # raises at the first misfit
    if len(source_layers) > len(layers):
        surplus = source_layers[len(layers)]
        raise ValueError(
            f"keras.applications {_describe(surplus, source)} has no counterpart: the "
            f"{len(layers)} layers with weights of model '{model.name}' are all used; "
            "the architectures differ (same include_top on both sides?)."
        )
    surplus = layers[len(source_layers)]
    raise ValueError(
        f"Layer '{surplus.name}' ({type(surplus).__name__}) of model '{model.name}' has "
        f"no keras.applications counterpart: the {len(source_layers)} layers with weights "
        f"of model '{source.name}' are all used; the architectures differ (same "
        "include_top on both sides?)."
    )


def _channel_values(tensor, layer):
    """A per-channel statistic of `layer` (broadcast shape) as a float64 (3,) array."""
    values = np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64).reshape(-1)
    if values.size not in (1, 3):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has {values.size} "
            "statistics; an RGB input normalisation has 1 or 3."
        )
    return np.broadcast_to(values, (3,))


def _in_model_normalization(source):
    """(mean, std) of [0, 255] pixels that `source` normalises with, or None.

    Composes the `Rescaling` and `Normalization` layers in front of the source's
    first layer with other weights into `x * scale + offset`, i.e.
    `(x - mean) / std` with `std = 1 / scale` and `mean = -offset / scale`.
    """
    scale, offset, found = np.ones(3), np.zeros(3), False
    for layer in source.layers:
        if isinstance(layer, keras.layers.Rescaling):
            factor = _channel_values(layer.scale, layer)
            scale, offset = scale * factor, offset * factor + _channel_values(layer.offset, layer)
        elif isinstance(layer, keras.layers.Normalization):
            if layer.invert:
                raise ValueError(
                    f"Layer '{layer.name}' of model '{source.name}' denormalises "
                    "(invert=True); expected an input normalisation."
                )
            mean = _channel_values(layer.mean, layer)
            deviation = np.maximum(
                np.sqrt(_channel_values(layer.variance, layer)), keras.backend.epsilon()
            )
            scale, offset = scale / deviation, (offset - mean) / deviation
        elif layer.weights:
            break
        else:
            continue
        found = True
    return (-offset / scale, 1.0 / scale) if found else None


def _check_normalization(source, model):
    """ValueError unless `source`'s input pipeline is our `ImageNormalization`'s."""
    names = {layer.name for layer in model.layers}
    if NORMALIZATION_LAYER not in names:
        return  # include_preprocessing=False: the caller normalises.
    mode = model.get_layer(NORMALIZATION_LAYER).mode
    our_mean, our_std = (np.asarray(values, np.float64) for values in NORMALIZATIONS[mode])
    theirs = _in_model_normalization(source)
    if theirs is None:
        # Normalised outside the model, by the family's preprocess_input: recognise
        # the family by its first layer's name (keras.applications fixes them).
        first_layers = [layer.name for layer in _source_layers(source)[:1]]
        families = {spec.first_layer: spec for spec in KERAS_APPLICATIONS.values()}
        spec = families.get(first_layers[0]) if first_layers else None
        if spec is not None and spec.input_mode != mode:
            raise ValueError(
                f"keras.applications.{spec.constructor} model '{source.name}' expects "
                f"inputs normalised by keras.applications.{spec.module}.preprocess_input "
                f"(our mode {spec.input_mode!r}), but layer '{NORMALIZATION_LAYER}' of "
                f"model '{model.name}' normalises with mode {mode!r}."
            )
        return
    their_mean, their_std = theirs
    same = mode not in BGR_NORMALIZATIONS and np.allclose(
        their_std, our_std, rtol=NORMALIZATION_RTOL
    ) and np.allclose(their_mean, our_mean, rtol=0, atol=NORMALIZATION_RTOL * our_std.min())
    if not same:
        raise ValueError(
            f"keras.applications model '{source.name}' normalises [0, 255] RGB inputs "
            f"with mean {np.round(their_mean, 4).tolist()} and std "
            f"{np.round(their_std, 4).tolist()}, but layer '{NORMALIZATION_LAYER}' of "
            f"model '{model.name}' uses mode {mode!r} (mean {list(NORMALIZATIONS[mode][0])}, "
            f"std {list(NORMALIZATIONS[mode][1])}). A keras EfficientNet built with "
            "`weights=<file>` lacks the Rescaling(1 / sqrt(std)) keras adds for "
            "weights='imagenet'; build it with build_keras_applications_model."
        )


def copy_keras_applications_weights(source, model):
    """Copies the weights of a keras.applications model into a zoo `model`.

    Args:
        source: a built keras.applications model, e.g. `keras.applications.
            MobileNetV2(weights=...)` or `build_keras_applications_model(...)`.
        model: the matching zoo model (pairs in the module docstring), built with
            the same `include_top` and `classes`.

    Returns:
        `[(source variable path, our variable path)]`, in copying order.

    Raises:
        ValueError: when the architectures differ (another number of layers with
            weights, or a layer whose type, variables or shapes do not fit our layer
            at the same position): the message names the first keras.applications
            layer or variable and our layer that do not fit; or when the source
            normalises its inputs differently than our `ImageNormalization` layer
            (see the module docstring). The model is left unchanged.

    Example:
    >>> source = keras.applications.MobileNetV2(weights="imagenet")  # doctest: +SKIP
    >>> model = zoo.mobilenet_v2()
    >>> copy_keras_applications_weights(source, model)  # doctest: +SKIP
    """
    source_layers = _source_layers(source)
    layers = [layer for layer in model.layers if layer.weights]
    if len(source_layers) != len(layers):
        _raise_count_mismatch(source, source_layers, model, layers)
    assignments = []
    for source_layer, layer in zip(source_layers, layers):
        assignments.extend(_match_layer(source_layer, layer, source, model))
    _check_normalization(source, model)
    for variable, value, _ in assignments:
        variable.assign(value)
    return [(path, variable.path) for variable, value, path in assignments]
