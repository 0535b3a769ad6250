"""Pretrained weights: the registry, downloads, and converters from published formats.

Zoo builders take `weights="imagenet"` (and the other registered names, see
`list_weights`); these are the pieces they use, public for other checkpoints:

* `load_timm_state_dict(model, state_dict)`: timm EfficientNet-family state_dicts.
* `load_tf_checkpoint(model, path)`: the official CondConv EfficientNet checkpoints.
* `copy_keras_applications_weights(source, model)`: keras.applications models.
* `read_torch_state_dict(path)`: `torch.save` files as NumPy, without torch;
  `read_state_dict(path)` also reads `.safetensors`.
* `upcycle(static_model, dynamic_model)`: a dynamic model computing its static twin.

See weights/README.md for the tensor layouts and the cache.
"""

from keras_dynconv.weights.download import WeightsDownloadError
from keras_dynconv.weights.keras_applications import copy_keras_applications_weights
from keras_dynconv.weights.registry import PretrainedWeights
from keras_dynconv.weights.registry import WeightsSource
from keras_dynconv.weights.registry import find_weights
from keras_dynconv.weights.registry import list_weights
from keras_dynconv.weights.tf_checkpoint import load_tf_checkpoint
from keras_dynconv.weights.timm_state_dict import load_timm_state_dict
from keras_dynconv.weights.torch_checkpoint import read_state_dict
from keras_dynconv.weights.torch_checkpoint import read_torch_state_dict
from keras_dynconv.weights.upcycling import upcycle

__all__ = [
    "PretrainedWeights",
    "WeightsDownloadError",
    "WeightsSource",
    "copy_keras_applications_weights",
    "find_weights",
    "list_weights",
    "load_tf_checkpoint",
    "load_timm_state_dict",
    "read_state_dict",
    "read_torch_state_dict",
    "upcycle",
]
