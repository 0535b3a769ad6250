"""keras-dynconv: dynamic convolutions for Keras 3 on TensorFlow, JAX and PyTorch."""

from keras_dynconv import callbacks
from keras_dynconv import layers
from keras_dynconv import ops
from keras_dynconv import utils
from keras_dynconv import zoo

__version__ = "0.1.0.dev0"

__all__ = ["callbacks", "layers", "ops", "utils", "zoo", "__version__"]
