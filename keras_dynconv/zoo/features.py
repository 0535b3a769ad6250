"""Multi-scale features of zoo backbones, for detection necks (keras-hub's idea)."""

import re

import keras

from keras_dynconv.zoo.model import ZooModel

_LEVEL = re.compile(r"^P(\d+)$")


def pyramid_outputs(model):
    """`{"P1": tensor, ...}`: the last feature map at each stride 2**level.

    Every zoo builder marks these with identity layers named `P{level}`, so this
    works on freshly built and on reloaded models alike.

    Example:
    >>> outputs = pyramid_outputs(zoo.mobilenet_v1(alpha=0.25, include_top=False,
    ...                                            input_shape=(224, 224, 3)))
    >>> list(outputs), tuple(outputs["P5"].shape)
    (['P1', 'P2', 'P3', 'P4', 'P5'], (None, 7, 7, 256))
    """
    levels = {}
    for layer in model.layers:
        match = _LEVEL.match(layer.name)
        if match:
            levels[int(match.group(1))] = layer.output
    if not levels:
        raise ValueError(
            f"Model '{model.name}' has no pyramid outputs: expected identity layers "
            "named P1, P2, ... as every keras_dynconv.zoo builder creates."
        )
    return {f"P{level}": levels[level] for level in sorted(levels)}


def feature_extractor(model, levels=None):
    """A model from `model`'s inputs to a dict of its pyramid outputs.

    Args:
        model: a zoo model (with or without its classification top).
        levels: names such as `("P3", "P4", "P5")`; all levels when None.

    Example:
    >>> model = zoo.condconv_mobilenet_v2(include_top=False, input_shape=(224, 224, 3))
    >>> backbone = feature_extractor(model, ("P4", "P5"))
    >>> [tuple(tensor.shape) for tensor in backbone.outputs]
    [(None, 14, 14, 96), (None, 7, 7, 1280)]
    """
    outputs = pyramid_outputs(model)
    if levels is not None:
        unknown = [level for level in levels if level not in outputs]
        if unknown:
            raise ValueError(
                f"Unknown pyramid levels {unknown}. Expected some of {list(outputs)}"
            )
        outputs = {level: outputs[level] for level in levels}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return ZooModel(inputs, outputs, name=f"{model.name}_features")
