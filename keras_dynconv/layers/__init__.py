"""Backend-agnostic dynamic-convolution layers."""

from keras_dynconv.layers.cond_conv import CondConv2D
from keras_dynconv.layers.cond_conv import CondDense
from keras_dynconv.layers.cond_conv import CondDepthwiseConv2D
from keras_dynconv.layers.conv2d import Conv2D
from keras_dynconv.layers.depthwise_conv import DepthwiseConv2D
from keras_dynconv.layers.dynamic_conv import DynamicConv2D
from keras_dynconv.layers.dynamic_conv import DynamicDepthwiseConv2D
from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.strategy import resolve_strategy
from keras_dynconv.layers.mod_block import MoDBlock
from keras_dynconv.layers.normalization import BatchNormalization
from keras_dynconv.layers.pooling import MaxPooling2D
from keras_dynconv.layers.routing import Routing
from keras_dynconv.layers.sparse_dynamic_conv import SparseDynamicConv2D
from keras_dynconv.layers.sparse_dynamic_conv import SparseDynamicDepthwiseConv2D

__all__ = [
    "BatchNormalization",
    "CondConv2D",
    "CondDense",
    "CondDepthwiseConv2D",
    "Conv2D",
    "DepthwiseConv2D",
    "DynamicConv2D",
    "DynamicDepthwiseConv2D",
    "ExpertLayer",
    "MaxPooling2D",
    "MoDBlock",
    "Routing",
    "SparseDynamicConv2D",
    "SparseDynamicDepthwiseConv2D",
    "resolve_strategy",
]
