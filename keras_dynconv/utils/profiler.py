"""Multiply-adds and parameter counts, counted the way the papers count them.

Convention (CondConv paper, Sec. 3 and Table 1; SD-Conv, Table 2):
- A convolution costs `H_out * W_out * kh * kw * C_in / groups * C_out` multiply-adds
  per image, a depthwise convolution `H_out * W_out * kh * kw * C * multiplier`, a
  dense layer `units_in * units_out` per position.
- A dynamic layer costs one convolution with its per-example kernel, plus combining
  the experts: E multiply-adds per kernel (and bias) parameter, plus its own routing
  (or attention) function. Shared routing layers are counted once, where they are.
- Routing / attention and Mixture-of-Depths selectors cost their dense layers; the
  MoD block costs its conv block on the k selected channels.
- Sparse dynamic layers (SD-Conv) count the kernels they really use: the combination
  over each expert's kept weights, and the convolution over the positions at least
  one expert keeps (the sparsity of the aggregated kernel, SD-Conv Sec. 4.3).
  `sparse=False` counts them dense.
- Elementwise work is free, as in the papers: biases, batch norm (folded at
  inference), activations, pooling, residual additions, SE and MoD scaling.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.mod_block import MoDBlock
from keras_dynconv.layers.routing import Routing
from keras_dynconv.layers.sparse_dynamic_conv import SparseMaskMixin


@dataclasses.dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model.

    Example:
    >>> ParamCount(trainable=10, non_trainable=2).total
    12
    """

    trainable: int
    non_trainable: int

    @property
    def total(self):
        return self.trainable + self.non_trainable


def count_params(model):
    """Trainable and non-trainable parameter counts of `model` (a `ParamCount`).

    Non-trainable weights include batch-norm statistics and the dynamic layers'
    schedule variables (routing temperature, sparse target density).

    Example:
    >>> count_params(zoo.condconv_efficientnet_b0(num_experts=8)).trainable
    24013284
    """

    def size(weights):
        return sum(math.prod(weight.shape) for weight in weights)

    return ParamCount(size(model.trainable_weights), size(model.non_trainable_weights))


def count_madds(model, sparse=True):
    """Multiply-adds per image of `model` at inference (see the module docstring).

    Example:
    >>> round(count_madds(zoo.condconv_mobilenet_v1(alpha=0.25, num_experts=32)) / 1e6, 1)
    55.6
    """
    return sum(madds_by_layer(model, sparse=sparse).values())


def madds_by_layer(model, sparse=True):
    """`{layer path: multiply-adds per image}` for every layer that costs any.

    Example:
    >>> costs = madds_by_layer(zoo.mobilenet_v1(alpha=0.25))
    >>> max(costs, key=costs.get)  # doctest: +SKIP
    'conv_pw_13'
    """
    costs = {}
    _collect(model, "", costs, sparse)
    return costs


def _collect(model, prefix, costs, sparse):
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            _collect(layer, f"{path}/", costs, sparse)
            continue
        madds = _layer_madds(layer, path, costs, sparse)
        if madds:
            costs[path] = madds


def _first(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) else tensors


def _spatial_positions(layer, shape):
    positions = shape[1:-1]
    if any(side is None for side in positions):
        raise ValueError(
            f"count_madds needs a model with a fixed input shape; layer "
            f"'{layer.name}' has the shape {tuple(shape)}. Build the model with "
            "`input_shape=(height, width, 3)`."
        )
    return math.prod(positions)


def _layer_madds(layer, path, costs, sparse):
    if isinstance(layer, ExpertLayer):
        return _expert_layer_madds(layer, sparse)
    if isinstance(layer, Routing):
        return _routing_madds(layer)
    if isinstance(layer, MoDBlock):
        if isinstance(layer.block, keras.Model):
            _collect(layer.block, f"{path}/", costs, sparse)
            block_madds = 0
        else:
            block_madds = _layer_madds(layer.block, f"{path}/{layer.block.name}", costs, sparse)
        return block_madds + math.prod(layer.selector_hidden_kernel.shape) + math.prod(
            layer.selector_kernel.shape
        )
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
        positions = _spatial_positions(layer, _first(layer.output).shape)
        return positions * math.prod(layer.kernel.shape)
    return 0


def _routing_madds(routing):
    madds = math.prod(routing.kernel.shape)
    if routing.hidden_units is not None:
        madds += math.prod(routing.hidden_kernel.shape)
    return madds


def _expert_layer_madds(layer, sparse):
    num_experts = layer.num_experts
    expert_size = math.prod(layer.kernel.shape[1:])
    positions = _spatial_positions(layer, _first(layer.output).shape)
    combine = num_experts * expert_size
    convolve = positions * expert_size
    if sparse and isinstance(layer, SparseMaskMixin):
        mask = np.asarray(keras.ops.convert_to_numpy(layer._mask())) > 0.5
        combine = int(mask.sum())
        convolve = positions * int(mask.any(axis=0).sum())
    if layer.bias is not None:
        combine += math.prod(layer.bias.shape)
    routing = _routing_madds(layer.routing_fn) if layer.routing_fn is not None else 0
    return convolve + combine + routing
