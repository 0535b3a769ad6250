"""The examples in docstrings run and print what they say (doctest).

Modules whose examples are self-contained; zoo builders' examples (which build whole
networks) and ones marked `+SKIP` (downloads, files) are not executed here.
"""

import doctest
import importlib

import keras
import numpy as np
import pytest

from keras_dynconv import zoo
from keras_dynconv.training import get_recipe

# Examples of the numerical core run on every backend; the others build whole zoo
# models, which cost minutes of compilation on JAX, and depend on the backend only
# through what the core already checks: `architecture` (torch in the default suite).
EVERY_BACKEND = [
    "keras_dynconv.ops.aggregation",
    "keras_dynconv.ops.convolution",
    "keras_dynconv.ops.depthwise",
    "keras_dynconv.ops.normalization",
    "keras_dynconv.ops.pooling",
    "keras_dynconv.layers.strategy",
    "keras_dynconv.layers.conv2d",
    "keras_dynconv.layers.depthwise_conv",
    "keras_dynconv.layers.normalization",
    "keras_dynconv.layers.pooling",
    "keras_dynconv.layers.routing",
    "keras_dynconv.layers.mod_block",
    "keras_dynconv.layers.expert_layer",
    "keras_dynconv.detection.losses",
    "keras_dynconv.detection.targets",
    "keras_dynconv.data.imagenet_labels",
    "keras_dynconv.analysis.experts",
]
ONE_BACKEND = [
    "keras_dynconv.analysis.routing",
    "keras_dynconv.utils.summary",
    "keras_dynconv.utils.profiler",
    "keras_dynconv.export",
    "keras_dynconv.zoo.features",
    "keras_dynconv.zoo.registry",
    "keras_dynconv.weights.registry",
    "keras_dynconv.weights.upcycling",
    "keras_dynconv.training.compile",
    "keras_dynconv.training.optimizers",
    "keras_dynconv.training.recipes",
    "keras_dynconv.training.schedules",
    "keras_dynconv.detection.anchors",
    "keras_dynconv.data.catalog",
    "keras_dynconv.transfer",
]
MODULES = EVERY_BACKEND + [pytest.param(name, marks=pytest.mark.architecture) for name in ONE_BACKEND]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    globs = {**vars(module), "keras": keras, "np": np, "zoo": zoo, "get_recipe": get_recipe}
    result = doctest.testmod(module, globs=globs, optionflags=doctest.ELLIPSIS,
                             raise_on_error=False, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


PUBLIC_MODULES = [
    "keras_dynconv.ops", "keras_dynconv.layers", "keras_dynconv.zoo", "keras_dynconv.weights",
    "keras_dynconv.utils", "keras_dynconv.callbacks", "keras_dynconv.data",
    "keras_dynconv.detection", "keras_dynconv.training", "keras_dynconv.transfer",
    "keras_dynconv.analysis", "keras_dynconv.bench", "keras_dynconv.export",
]


def test_every_public_function_and_class_has_an_example():
    import inspect

    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        public = getattr(module, "__all__", None) or [
            attribute for attribute in dir(module) if not attribute.startswith("_")]
        for attribute in public:
            value = getattr(module, attribute)
            if inspect.isfunction(value) or inspect.isclass(value):
                doc = inspect.getdoc(value) or ""
                if ">>>" not in doc and "Example" not in doc:
                    missing.append(f"{name}.{attribute}")
    assert not missing, f"no docstring example: {missing}"
