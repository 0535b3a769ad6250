"""The `keras.applications` arguments every zoo builder takes: inputs, head, weights."""

import dataclasses
import os

import keras

from keras_dynconv.zoo.model import ZooModel
from keras_dynconv.zoo.preprocessing import ImageNormalization

POOLINGS = (None, "avg", "max")
MIN_INPUT_SIZE = 32


def check_common_arguments(name, include_top, weights, pooling, classes):
    """Raises ValueError for arguments no builder accepts."""
    if pooling not in POOLINGS:
        raise ValueError(
            f"Invalid value for argument `pooling`. Expected one of {list(POOLINGS)}. "
            f"Received pooling={pooling!r}"
        )
    if include_top and (
        isinstance(classes, bool) or not isinstance(classes, int) or classes < 1
    ):
        raise ValueError(
            "Invalid value for argument `classes`. Expected a strictly positive "
            f"integer. Received classes={classes!r}"
        )
    # Registered names ("imagenet", ...) are resolved by the zoo's registered
    # builders (keras_dynconv.weights.pretrained) before the generic builder runs.
    if weights is not None and not (
        isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)
    ):
        raise ValueError(
            f"Invalid value for argument `weights` of `{name}`. Expected None or the path "
            f"of a .weights.h5 file. Received weights={weights!r}"
        )


def resolve_input_shape(name, input_shape, input_tensor, default_size, include_top):
    """The model's input shape, validated: RGB channels last, sides >= 32 or None."""
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        size = default_size if include_top else None
        return (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"Invalid value for argument `input_shape` of `{name}`. Expected "
            f"(height, width, 3). Received input_shape={input_shape}"
        )
    if input_shape[-1] != 3:
        raise ValueError(
            f"`{name}` takes RGB images: `input_shape` must have 3 channels (channels "
            f"last). Received input_shape={input_shape}"
        )
    for side in input_shape[:2]:
        if side is not None and side < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} for "
                f"`{name}`. Received input_shape={input_shape}"
            )
    return input_shape


def model_inputs(name, input_shape, input_tensor, default_size, include_top):
    """(image input tensor, model inputs) as keras.applications creates them."""
    shape = resolve_input_shape(name, input_shape, input_tensor, default_size, include_top)
    if input_tensor is None:
        image = keras.Input(shape=shape, name="image")
        return image, image
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, keras.utils.get_source_inputs(input_tensor)
    image = keras.Input(tensor=input_tensor, shape=shape, name="image")
    return image, image


def preprocess(images, normalization, include_preprocessing):
    """Raw [0, 255] RGB -> the reference's normalised input."""
    if not include_preprocessing or normalization is None:
        return images
    return ImageNormalization(normalization, name="normalization")(images)


def classification_head(
    features, factory, include_top, pooling, classes, classifier_activation, dropout_rate
):
    """Global pooling, dropout and classifier (or the requested pooling only)."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        return factory.classifier(x, classes, classifier_activation)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(features)
    return features


def load_weights(model, weights):
    """Loads `weights` (a .weights.h5 path, or None) into `model`."""
    if weights is not None:
        model.load_weights(weights)
    return model


def pyramid_level(inputs, level):
    """Marks `inputs` as pyramid output P`level` (stride 2**level) of the backbone.

    An identity layer named `P{level}` on the main path: it survives serialisation,
    so `keras_dynconv.zoo.pyramid_outputs(model)` finds it in a reloaded model too.
    """
    return keras.layers.Identity(name=f"P{level}")(inputs)


@dataclasses.dataclass(frozen=True)
class ApplicationArguments:
    """The arguments of a `keras.applications` builder, checked once.

    Builders create one, take their input from `inputs()` and end with `finish()`.
    """

    name: str
    include_top: bool = True
    weights: object = None
    input_tensor: object = None
    input_shape: object = None
    pooling: object = None
    classes: int = 1000
    classifier_activation: object = "softmax"

    def __post_init__(self):
        check_common_arguments(
            self.name, self.include_top, self.weights, self.pooling, self.classes
        )

    def inputs(self, default_size):
        """(image tensor, model inputs); the image is raw [0, 255] RGB."""
        return model_inputs(
            self.name, self.input_shape, self.input_tensor, default_size, self.include_top
        )

    def finish(self, features, inputs, factory, dropout_rate):
        """Adds the head (or pooling), builds the model and loads its weights."""
        outputs = classification_head(
            features, factory, self.include_top, self.pooling, self.classes,
            self.classifier_activation, dropout_rate,
        )
        model = ZooModel(inputs, outputs, name=self.name)
        return load_weights(model, self.weights)
