"""The aggregation core: every dynamic layer computes through these functions
(and `conv`, `depthwise_conv`, `max_pool` and `batch_normalization`, static ops with
the same fast paths).

They are written in `keras.ops` only, so they run unchanged on TensorFlow, JAX and
PyTorch, inside `jit`, and with a batch size that is unknown at trace time.
"""

from keras_dynconv.ops.aggregation import combine_experts
from keras_dynconv.ops.aggregation import mixture_conv
from keras_dynconv.ops.aggregation import mixture_dense
from keras_dynconv.ops.aggregation import mixture_depthwise_conv
from keras_dynconv.ops.aggregation import per_example_conv
from keras_dynconv.ops.aggregation import per_example_conv_of_experts
from keras_dynconv.ops.aggregation import per_example_dense
from keras_dynconv.ops.aggregation import per_example_depthwise_conv
from keras_dynconv.ops.aggregation import per_example_depthwise_conv_of_experts
from keras_dynconv.ops.convolution import conv
from keras_dynconv.ops.depthwise import depthwise_conv
from keras_dynconv.ops.normalization import batch_normalization
from keras_dynconv.ops.pooling import max_pool
from keras_dynconv.ops.portability import portable
from keras_dynconv.ops.selection import add_to_leading_channels
from keras_dynconv.ops.selection import stable_top_k
from keras_dynconv.ops.selection import take_channels

__all__ = [
    "add_to_leading_channels",
    "batch_normalization",
    "combine_experts",
    "conv",
    "depthwise_conv",
    "max_pool",
    "mixture_conv",
    "mixture_dense",
    "mixture_depthwise_conv",
    "per_example_conv",
    "per_example_conv_of_experts",
    "per_example_dense",
    "per_example_depthwise_conv",
    "per_example_depthwise_conv_of_experts",
    "portable",
    "stable_top_k",
    "take_channels",
]
