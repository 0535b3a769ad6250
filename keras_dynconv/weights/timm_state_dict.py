"""Copies a timm EfficientNet-family `state_dict` into a zoo model.

Supported pairs (timm model -> zoo builder):

* `tf_efficientnet_b0` / `tf_efficientnet_b1` -> `efficientnet_b0` / `efficientnet_b1`
* `efficientnet_lite0` -> `efficientnet_lite0` (`tf_efficientnet_lite0` has the same
  tensors, but TF "same" padding, BN eps 1e-3 and mean = std = 0.5 inputs)
* `semnasnet_100` -> `mnasnet_a1`
* `tf_efficientnet_cc_b0_4e` -> `condconv_efficientnet_b0(num_experts=4)`
* `tf_efficientnet_cc_b0_8e` -> `condconv_efficientnet_b0` (8 experts)
* `tf_efficientnet_cc_b1_8e` -> `condconv_efficientnet_b1` (8 experts)

Matching is by module order and shape, not by name: timm's `state_dict` is grouped
into modules (`blocks.4.0.conv_pw`, `blocks.4.0.bn1`, ...) in its order, the Keras
model's layers that hold weights are taken in `model.layers` order, and the two lists
are zipped. The only reordering is CondConv's routing: timm's `CondConvResidual`
(timm/models/_efficientnet_blocks.py) creates `routing_fn = nn.Linear(in_chs,
num_experts)` after the block's convolutions, so it comes last among the block's
modules, while our block creates its `Routing` layer first (from the block input,
before the expand conv). Each `*.routing_fn` module is therefore moved in front of
the first module of its block (the modules sharing its parent prefix).

A count, layout or shape difference raises a ValueError naming the first timm tensor
(or Keras layer) that does not fit; nothing is assigned unless every tensor fits.
The loader copies tensors only: padding, BN epsilon, activations and the input
normalisation are properties of the builder (see tests/test_timm_parity.py).

PyTorch / timm layouts and what they become here:

* `nn.Conv2d.weight` `[O, I / groups, kh, kw]` (OIHW) -> `Conv2D.kernel`
  `[kh, kw, I / groups, O]` (HWIO).
* depthwise `nn.Conv2d.weight` (groups = C) `[C * m, 1, kh, kw]`, output channel
  `c * m + j` -> `DepthwiseConv2D.kernel` `[kh, kw, C, m]` (m = depth multiplier).
* `nn.Linear.weight` `[out, in]` -> `Dense.kernel` `[in, out]`.
* timm `CondConv2d.weight` `[E, O * (I / groups) * kh * kw]` (timm/layers/
  cond_conv2d.py: `weight_shape = (out_channels, in_channels // groups) +
  kernel_size`; `forward` computes `routing_weights @ weight` and views each row as a
  kernel of `weight_shape`, so row e is expert e's OIHW kernel flattened in C order)
  -> `CondConv2D.kernel` `(E, kh, kw, I, O)` or, depthwise,
  `CondDepthwiseConv2D.kernel` `(E, kh, kw, C, m)`; `CondConv2d.bias` `[E, O]` ->
  `bias` `(E, O)`.
* the block's `routing_fn` `nn.Linear` (`weight` `[E, I]`, `bias` `[E]`) ->
  `Routing.kernel` `(I, E)` and `Routing.bias` `(E,)`. timm applies a sigmoid to it,
  as `Routing(activation="sigmoid")` does; the non-trainable `temperature` is left
  as it is.
* BatchNorm `weight`, `bias`, `running_mean`, `running_var` -> `gamma`, `beta`,
  `moving_mean`, `moving_variance`; `num_batches_tracked` is skipped.

Only NumPy and Keras are used: the state_dict values may be NumPy arrays or anything
`numpy.asarray` accepts (e.g. `tensor.detach().cpu().numpy()` of a PyTorch tensor).
"""

import dataclasses
from typing import Callable

import keras
import numpy as np

from keras_dynconv.layers import CondConv2D
from keras_dynconv.layers import CondDepthwiseConv2D
from keras_dynconv.layers import ExpertLayer
from keras_dynconv.layers import Routing
from keras_dynconv.weights.layer_slots import check_every_variable_filled

SKIPPED_SUFFIX = "num_batches_tracked"
ROUTING_MODULE = "routing_fn"  # timm CondConvResidual's routing Linear


@dataclasses.dataclass
class _TimmModule:
    """The tensors of one timm module, by leaf name ("weight", "running_var"...)."""

    prefix: str
    tensors: dict

    def tensor_name(self, leaf):
        return f"{self.prefix}.{leaf}" if self.prefix else leaf

    def describe(self):
        first = next(iter(self.tensors))
        return f"'{self.tensor_name(first)}' with shape {self.tensors[first].shape}"


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One Keras variable and the timm tensor (leaf name, timm shape) that fills it."""

    leaf: str
    variable: object
    timm_shape: tuple
    convert: Callable


def _identity(array):
    return array


# --- timm layouts -> Keras layouts ---------------------------------------------------
def _conv_slots(layer):
    """`Conv2D`: OIHW `[O, I/g, kh, kw]` -> HWIO `[kh, kw, I/g, O]`."""
    kh, kw, cin, cout = layer.kernel.shape
    slots = [
        _Slot("weight", layer.kernel, (cout, cin, kh, kw), lambda w: w.transpose(2, 3, 1, 0))
    ]
    if layer.use_bias:
        slots.append(_Slot("bias", layer.bias, (cout,), _identity))
    return slots


def _depthwise_slots(layer):
    """`DepthwiseConv2D`: `[C*m, 1, kh, kw]` -> `[kh, kw, C, m]`."""
    kh, kw, channels, multiplier = layer.kernel.shape

    def convert(weight):
        return weight.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)

    slots = [_Slot("weight", layer.kernel, (channels * multiplier, 1, kh, kw), convert)]
    if layer.use_bias:
        slots.append(_Slot("bias", layer.bias, (channels * multiplier,), _identity))
    return slots


def _dense_slots(layer):
    """`Dense`: Linear `[out, in]` -> `[in, out]`."""
    fan_in, units = layer.kernel.shape
    slots = [_Slot("weight", layer.kernel, (units, fan_in), lambda w: w.T)]
    if layer.use_bias:
        slots.append(_Slot("bias", layer.bias, (units,), _identity))
    return slots


def _batch_norm_slots(layer):
    """`BatchNormalization`: weight/bias/running_mean/running_var."""
    (channels,) = layer.moving_mean.shape
    pairs = [("weight", layer.gamma), ("bias", layer.beta),
             ("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)]
    return [
        _Slot(leaf, variable, (channels,), _identity)
        for leaf, variable in pairs
        if variable is not None  # gamma / beta are None with scale / center False
    ]


def _routing_slots(layer):
    """`Routing` <- timm's block `routing_fn` Linear `[E, in]`, `[E]`."""
    if layer.hidden_units is not None:
        raise ValueError(
            f"Layer '{layer.name}' (Routing) has a hidden layer; timm's CondConv "
            "routing_fn is a single Linear layer."
        )
    fan_in, experts = layer.kernel.shape
    return [
        _Slot("weight", layer.kernel, (experts, fan_in), lambda w: w.T),
        _Slot("bias", layer.bias, (experts,), _identity),
    ]


def _expert_bias_slot(layer):
    experts, channels = layer.bias.shape
    return [_Slot("bias", layer.bias, (experts, channels), _identity)]


def _cond_conv_slots(layer):
    """`CondConv2D` (E, kh, kw, I, O) <- timm CondConv2d `[E, O*I*kh*kw]` (OIHW rows)."""
    experts, kh, kw, cin, cout = layer.kernel.shape

    def convert(weight):
        return weight.reshape(experts, cout, cin, kh, kw).transpose(0, 3, 4, 2, 1)

    slots = [_Slot("weight", layer.kernel, (experts, cout * cin * kh * kw), convert)]
    return slots + (_expert_bias_slot(layer) if layer.use_bias else [])


def _cond_depthwise_slots(layer):
    """`CondDepthwiseConv2D` (E, kh, kw, C, m) <- CondConv2d `[E, C*m*1*kh*kw]`."""
    experts, kh, kw, channels, multiplier = layer.kernel.shape

    def convert(weight):
        return weight.reshape(experts, channels, multiplier, kh, kw).transpose(0, 3, 4, 1, 2)

    slots = [
        _Slot("weight", layer.kernel, (experts, channels * multiplier * kh * kw), convert)
    ]
    return slots + (_expert_bias_slot(layer) if layer.use_bias else [])


# The first isinstance match wins: specific classes before general ones.
_SLOT_BUILDERS = (
    (CondDepthwiseConv2D, _cond_depthwise_slots),
    (CondConv2D, _cond_conv_slots),
    (Routing, _routing_slots),
    (keras.layers.BatchNormalization, _batch_norm_slots),
    (keras.layers.DepthwiseConv2D, _depthwise_slots),
    (keras.layers.Conv2D, _conv_slots),
    (keras.layers.Dense, _dense_slots),
)


def _layer_slots(layer):
    """The `_Slot`s of one Keras layer; ValueError for layers timm has no module for."""
    if isinstance(layer, ExpertLayer) and layer.routing_fn is not None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) computes its own routing or "
            "attention; timm's EfficientNet family shares one routing_fn per block "
            "(build the CondConv zoo model, whose blocks share a Routing layer)."
        )
    for layer_type, build_slots in _SLOT_BUILDERS:
        if isinstance(layer, layer_type):
            slots = build_slots(layer)
            break
    else:
        raise ValueError(
            f"Layer '{layer.name}' of type {type(layer).__name__} has no timm "
            "EfficientNet-family counterpart."
        )
    check_every_variable_filled(layer, slots, "timm")
    return slots


# --- the timm side ---------------------------------------------------------------------
# timm's EfficientNet module order (timm/models/efficientnet.py and
# _efficientnet_blocks.py: the order in which each module's __init__ creates them).
_TOP_LEVEL_ORDER = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier")
_INVERTED_RESIDUAL_ORDER = (
    "conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3", "routing_fn"
)
_DEPTHWISE_SEPARABLE_ORDER = ("conv_dw", "bn1", "se", "conv_pw", "bn2")
_SE_ORDER = ("conv_reduce", "conv_expand")


def _timm_module_order(names):
    """`names` in timm's module order, or None if they are not timm EfficientNet names.

    A `.safetensors` file stores its tensors sorted by name (timm's hub files do),
    which loses the module order the matching relies on; this restores it. On a
    `state_dict()` in its own order it changes nothing.
    """
    if not all(name.split(".", 1)[0] in _TOP_LEVEL_ORDER for name in names):
        return None
    blocks_with_pwl = {
        tuple(name.split(".")[1:3]) for name in names if ".conv_pwl." in name
    }

    def rank(name):
        parts = name.split(".")
        top = _TOP_LEVEL_ORDER.index(parts[0])
        if parts[0] != "blocks":
            return (top, 0, 0, 0, 0)
        stage, block, module = int(parts[1]), int(parts[2]), parts[3]
        order = (
            _INVERTED_RESIDUAL_ORDER
            if (parts[1], parts[2]) in blocks_with_pwl
            else _DEPTHWISE_SEPARABLE_ORDER
        )
        if module not in order:
            return None
        inner = _SE_ORDER.index(parts[4]) if module == "se" and parts[4] in _SE_ORDER else 0
        return (top, stage, block, order.index(module), inner)

    ranks = {name: rank(name) for name in names}
    if any(value is None for value in ranks.values()):
        return None
    return sorted(names, key=lambda name: ranks[name])  # stable: leaves keep their order


def _timm_modules(state_dict):
    """The state_dict as `_TimmModule`s, in order, without `num_batches_tracked`."""
    ordered = _timm_module_order(list(state_dict))
    if ordered is not None:
        state_dict = {name: state_dict[name] for name in ordered}
    modules = {}
    for name, value in state_dict.items():
        if name.endswith(SKIPPED_SUFFIX):
            continue
        prefix, _, leaf = name.rpartition(".")
        module = modules.setdefault(prefix, _TimmModule(prefix, {}))
        module.tensors[leaf] = np.asarray(value)
    return _routing_first(list(modules.values()))


def _routing_first(modules):
    """Moves each block's `routing_fn` in front of the block's first module.

    timm registers `routing_fn` after the convolutions of a `CondConvResidual`; our
    block builds its `Routing` layer first (see the module docstring).
    """
    ordered = []
    for module in modules:
        parent, _, leaf_module = module.prefix.rpartition(".")
        if leaf_module != ROUTING_MODULE:
            ordered.append(module)
            continue
        block_start = next(
            (index for index, other in enumerate(ordered)
             if other.prefix.startswith(parent + ".")),
            len(ordered),
        )
        ordered.insert(block_start, module)
    return ordered


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def _match(layer, module, model_name):
    """[(variable, Keras array, timm name)] of `layer` <- `module`, or ValueError.

    The module's tensors are checked in state_dict order, so the error names the
    first one that does not fit; then tensors the layer needs but timm lacks.
    """
    slots = {slot.leaf: slot for slot in _layer_slots(layer)}
    kind = f"layer '{layer.name}' ({type(layer).__name__}) of model '{model_name}'"
    for leaf, array in module.tensors.items():
        name = module.tensor_name(leaf)
        slot = slots.get(leaf)
        if slot is None:
            raise ValueError(
                f"timm tensor '{name}' with shape {tuple(array.shape)} does not fit "
                f"{kind}, which takes {[module.tensor_name(other) for other in slots]}: the "
                "architectures differ."
            )
        if tuple(array.shape) != tuple(slot.timm_shape):
            raise ValueError(
                f"timm tensor '{name}' has shape {tuple(array.shape)}, but {kind} needs "
                f"{tuple(slot.timm_shape)} for its variable '{slot.variable.path}' of "
                f"shape {tuple(slot.variable.shape)}: the architectures differ."
            )
    assignments = []
    for leaf, slot in slots.items():
        name = module.tensor_name(leaf)
        if leaf not in module.tensors:
            raise ValueError(
                f"{kind[0].upper()}{kind[1:]} needs timm tensor '{name}' (shape "
                f"{slot.timm_shape}), which the state_dict lacks: the architectures differ."
            )
        dtype = keras.backend.standardize_dtype(slot.variable.dtype)
        value = np.ascontiguousarray(slot.convert(module.tensors[leaf]).astype(dtype))
        assignments.append((slot.variable, value, name))
    return assignments


def load_timm_state_dict(model, state_dict):
    """Copies a timm EfficientNet-family `state_dict` into a zoo `model`.

    Args:
        model: a zoo model whose architecture is the timm model's, e.g.
            `zoo.condconv_efficientnet_b0(num_experts=4)` for timm's
            `tf_efficientnet_cc_b0_4e` (pairs in the module docstring).
        state_dict: mapping `name -> array` in timm's order (as
            `model.state_dict()` returns it), PyTorch layouts, converted with
            `numpy.asarray`; `num_batches_tracked` entries are ignored.

    Returns:
        `[(timm tensor name, Keras variable path)]`, in loading order.

    Raises:
        ValueError: when the two architectures differ (a different number of modules,
            or a tensor whose name or shape does not fit the Keras layer at the same
            position); the message names the first tensor (or layer) that does not
            fit. The model is left unchanged.

    Example:
    >>> from safetensors.numpy import load_file  # doctest: +SKIP
    >>> model = zoo.condconv_efficientnet_b0(num_experts=8, classifier_activation=None)
    >>> load_timm_state_dict(model, load_file("tf_efficientnet_cc_b0_8e.safetensors"))  # doctest: +SKIP
    """
    modules = _timm_modules(state_dict)
    layers = _weighted_layers(model)
    assignments = []
    for index, layer in enumerate(layers):
        if index >= len(modules):
            last = modules[-1].prefix if modules else None
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) of model '{model.name}' "
                f"has no timm counterpart: the state_dict's {len(modules)} modules are "
                f"all used (the last, '{last}', went to layer '{layers[index - 1].name}'"
                "): the architectures differ."
            )
        assignments.extend(_match(layer, modules[index], model.name))
    if len(modules) > len(layers):
        raise ValueError(
            f"timm tensor {modules[len(layers)].describe()} has no counterpart: the "
            f"{len(layers)} layers with weights of model '{model.name}' are all used: "
            "the architectures differ."
        )
    for variable, value, _ in assignments:
        variable.assign(value)
    return [(name, variable.path) for variable, value, name in assignments]
