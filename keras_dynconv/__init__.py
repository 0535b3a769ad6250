"""keras-dynconv: dynamic convolutions for Keras 3 on TensorFlow, JAX and PyTorch."""

from keras_dynconv import analysis
from keras_dynconv import callbacks
from keras_dynconv import data
from keras_dynconv import layers
from keras_dynconv import ops
from keras_dynconv import training
from keras_dynconv import transfer
from keras_dynconv import utils
from keras_dynconv import zoo

__version__ = "0.1.0.dev0"

__all__ = [
    "analysis",
    "callbacks",
    "data",
    "layers",
    "ops",
    "training",
    "transfer",
    "utils",
    "zoo",
    "__version__",
]
