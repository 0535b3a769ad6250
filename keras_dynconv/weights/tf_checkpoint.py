"""Reads an official TensorFlow EfficientNet(-CondConv) checkpoint into a zoo model.

Supported checkpoints (tensorflow/tpu, models/official/efficientnet) -> zoo builder:

* `efficientnet-condconv-b0-4e` -> `condconv_efficientnet_b0(num_experts=4)`
* `efficientnet-condconv-b0-8e` -> `condconv_efficientnet_b0(num_experts=8)`
* `efficientnet-condconv-b0-8e-depth` -> `condconv_efficientnet_b0_depth()`
* the static `efficientnet-b0` checkpoints -> `efficientnet_b0()` (and, by the same
  naming, `efficientnet-b1` -> `efficientnet_b1()`)

The naming below is that of the code that published the CondConv checkpoints
(commit d1f59eb, 2019-10-18: efficientnet_model.py, condconv/condconv_layers.py,
condconv/efficientnet_condconv_builder.py, utils.py); running that code in graph
mode lists exactly these names (327 variables for `efficientnet-condconv-b0-4e`, 461
for `-b0-8e-depth`, 311 for `efficientnet-b0`).

`build_model` opens `tf.variable_scope(model_name)`, and the model calls its parts in
the variable scopes `stem`, `blocks_<i>` and `head` (squeeze-excite in
`blocks_<i>/se`); `i` counts the blocks of all groups from 0, as our `block<i>_*`
layers do. Two naming schemes meet there:

1. The `tf.layers` layers (`tf.layers.Conv2D` and `Dense`, `utils.DepthwiseConv2D`,
   the batch norms, named `tpu_batch_normalization` in training and in eval) are
   named after their class, made unique within their variable scope in the order
   they are first called. `MBConvBlock.call` calls: routing `dense` (CondConv blocks
   only), expand conv and its batch norm (only when the expand ratio is not 1, i.e.
   not in block 0 of B0, nor block 1 of the depth-1.1 model), depthwise conv and
   batch norm, `se/conv2d` (reduce) and `se/conv2d_1` (expand), project conv and
   batch norm. So with an expansion `conv2d` is the expand conv, `conv2d_1` the
   project conv and `tpu_batch_normalization`, `_1`, `_2` their batch norms in that
   order; without one, `conv2d` is the project conv and `tpu_batch_normalization`,
   `_1` the depthwise and project batch norms.
2. The CondConv layers (`CondConv2D`, `DepthwiseCondConv2D` of condconv_layers.py)
   are Keras layers: named when constructed, from a counter shared by the whole
   graph (`cond_conv2d`, `cond_conv2d_1`, ...; `depthwise_cond_conv2d`, `_1`, ...),
   and their variables take the *name scope* of the call, which includes the Keras
   model's own `model/` scope. Each CondConv block constructs three conv layers (an
   unused `_fused_conv`, `_expand_conv`, `_project_conv`), so block 8 of B0 holds
   `cond_conv2d_1` and `_2`, block 9 `cond_conv2d_4` and `_5`, and so on. These
   numbers depend on construction details and on the TensorFlow version, so the
   loader does not predict them: within a block it takes the `cond_conv2d*` layers
   in the order of their numbers (construction order: expand before project) and
   the block's one `depthwise_cond_conv2d*`, with or without one name scope
   (`model/`) between the model scope and `blocks_<i>`.

Names, under the model scope (`efficientnet-condconv-b0-4e/`, ...), and layouts:

| checkpoint variable | zoo variable | layout |
| --- | --- | --- |
| `stem/conv2d/kernel` | `stem_conv/kernel` | HWIO, as Keras |
| `stem/tpu_batch_normalization/*` | `stem_bn/*` | (see below) |
| `blocks_i/conv2d/kernel`, `conv2d_1/kernel` | `block<i>_expand`, `_project` | HWIO |
| `blocks_i/depthwise_conv2d/depthwise_kernel` | `block<i>_dwconv/kernel` | `[kh, kw, C, 1]` |
| `blocks_i/tpu_batch_normalization{,_1,_2}/*` | `block<i>_{expand,dwconv,project}_bn` | |
| `blocks_i/se/conv2d{,_1}/{kernel,bias}` | `block<i>_se_{reduce,expand}` | HWIO |
| `blocks_i/dense/{kernel,bias}` | `block<i>_routing/{kernel,bias}` | `[in, E]`, `[E]` |
| `[model/]blocks_i/cond_conv2d_<k>/condconv_kernel` | `block<i>_{expand,project}` | see below |
| `[model/]blocks_i/depthwise_cond_conv2d_<k>/...` | `block<i>_dwconv/kernel` | see below |
| `head/conv2d/kernel` | `head_conv/kernel` | HWIO |
| `head/tpu_batch_normalization/*` | `head_bn/*` | |
| `head/dense/{kernel,bias}` | `predictions/{kernel,bias}` | `[1280, classes]` |

Batch norms: `gamma`, `beta`, `moving_mean`, `moving_variance` -> the Keras
variables of the same names. Expert kernels, `condconv_kernel` `[E, kh*kw*I*O]` and
`depthwise_condconv_kernel` `[E, kh*kw*C*m]`: `get_condconv_initializer` flattens each
expert's kernel of shape `kernel_size + (in, out)` (depthwise: `kernel_size + (C, m)`)
with `tf.reshape(kernel, [-1])` and stacks the experts; `call` reshapes each row of
`routing_weights @ condconv_kernel` back to that shape. Row e is therefore expert e's
HWIO kernel in C order, and a reshape to `(E, kh, kw, I, O)` (`CondConv2D.kernel`) or
`(E, kh, kw, C, m)` (`CondDepthwiseConv2D.kernel`) is the whole conversion. An expert
bias `condconv_bias` `[E, O]` (the official blocks have none) -> `bias`. The
routing `dense` is applied to the global average of the block input, with a
sigmoid, as `Routing(activation="sigmoid")` does; its non-trainable `temperature`
is left as it is.

Moving averages: main.py trains with `tf.train.ExponentialMovingAverage` over the
trainable variables and the batch norm moving statistics (`utils.get_ema_vars`),
saved as `<variable>/ExponentialMovingAverage`, and the official evaluation
(`EvalCkptDriver.restore_model`, `enable_ema=True`) restores those in place of the
variables. With `prefer_ema=True` the loader does the same, variable by variable,
and reads the raw value where a variable has no average. Optimizer slots
(`<variable>/RMSProp`, ...) and everything outside `stem`, `blocks_<i>` and `head`
(`global_step`, ...) are skipped; any other variable in those scopes must find a
zoo variable. A missing, unexpected or mis-shaped variable raises a ValueError
naming it, and nothing is assigned unless every variable fits.

Not in the checkpoint (properties of the builders): TensorFlow "same" padding,
batch norm epsilon 1e-3, swish. Input scaling differs: the official
`efficientnet-condconv` builder feeds `(x - 127) / 128` (MEAN_RGB 127,
STDDEV_RGB 128), our CondConv models by default `(x - 127.5) / 127.5` (timm's), a
difference of 0.4% in scale. To reproduce the official logits exactly, build with
`normalization="condconv"` ((x - 127) / 128), or feed `127.5 + (x - 127) * 127.5 / 128`.
The static `efficientnet-b0` builder and `efficientnet_b0()` both use the ImageNet
mean and standard deviation.

TensorFlow is needed only to read the checkpoint (`pip install tensorflow-cpu`);
the model may be on any backend.
"""

import collections
import dataclasses
import glob
import math
import os
import re
from typing import Callable

import keras

from keras_dynconv.layers import CondConv2D
from keras_dynconv.layers import CondDepthwiseConv2D
from keras_dynconv.layers import ExpertLayer
from keras_dynconv.layers import Routing
from keras_dynconv.weights.layer_slots import check_every_variable_filled

EMA_SUFFIX = "ExponentialMovingAverage"

# Last name component of every variable of the official model.
_OFFICIAL_LEAVES = (
    "kernel", "bias", "depthwise_kernel", "condconv_kernel", "depthwise_condconv_kernel",
    "condconv_bias", "gamma", "beta", "moving_mean", "moving_variance",
)
# `<model scope>/[<name scope>/]<section>/<layer>/<leaf>`, where the layer is one
# name component, or two under the squeeze-excite scope `se`.
_OFFICIAL_VARIABLE = re.compile(
    r"^(?P<model_scope>[^/]+)/(?:[^/]+/)?(?P<section>stem|head|blocks_\d+)/"
    r"(?P<layer>(?:se/)?[^/]+)/(?P<leaf>" + "|".join(_OFFICIAL_LEAVES) + r")$"
)
_IN_MODEL_SECTION = re.compile(r"^[^/]+/(?:[^/]+/)?(?:stem|head|blocks_\d+)/")

# Our layers, by section, in the order the official model calls their counterparts
# (the order in which the `tf.layers` name counters advance).
_STEM_LAYERS = ("stem_conv", "stem_bn")
_HEAD_LAYERS = ("head_conv", "head_bn", "predictions")
_BLOCK_ROLES = (
    "routing", "expand", "expand_bn", "dwconv", "dwconv_bn", "se_reduce", "se_expand",
    "project", "project_bn",
)
_SQUEEZE_EXCITE_ROLES = ("se_reduce", "se_expand")
_BLOCK_LAYER = re.compile(r"^block(?P<index>\d+)_(?P<role>" + "|".join(_BLOCK_ROLES) + ")$")


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One Keras variable and the official variable (leaf name, shape) that fills it."""

    leaf: str
    variable: object
    official_shape: tuple
    convert: Callable


def _identity(array):
    return array


def _same_layout_slot(leaf, variable):
    return _Slot(leaf, variable, tuple(variable.shape), _identity)


# --- Keras layers and their official counterparts -------------------------------------
def _conv_slots(layer):
    """`Conv2D`: official `kernel` is HWIO as Keras'; `bias` `[O]`."""
    slots = [_same_layout_slot("kernel", layer.kernel)]
    if layer.use_bias:
        slots.append(_same_layout_slot("bias", layer.bias))
    return slots


def _depthwise_slots(layer):
    """`DepthwiseConv2D`: official `depthwise_kernel` `[kh, kw, C, m]`, as Keras'."""
    slots = [_same_layout_slot("depthwise_kernel", layer.kernel)]
    if layer.use_bias:
        slots.append(_same_layout_slot("bias", layer.bias))
    return slots


def _dense_slots(layer):
    """`Dense`: official `kernel` `[in, out]`, as Keras'; `bias` `[out]`."""
    slots = [_same_layout_slot("kernel", layer.kernel)]
    if layer.use_bias:
        slots.append(_same_layout_slot("bias", layer.bias))
    return slots


def _routing_slots(layer):
    """`Routing` <- the block's routing `tf.layers.Dense(E, activation=sigmoid)`."""
    if layer.hidden_units is not None or layer.activation != "sigmoid":
        raise ValueError(
            f"Layer '{layer.name}' (Routing) has hidden_units={layer.hidden_units} and "
            f"activation='{layer.activation}'; the official CondConv routing is one "
            "dense layer with a sigmoid (hidden_units=None, activation='sigmoid')."
        )
    return [_same_layout_slot("kernel", layer.kernel), _same_layout_slot("bias", layer.bias)]


def _batch_norm_slots(layer):
    """`BatchNormalization`: gamma, beta, moving_mean, moving_variance, same names."""
    variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
    leaves = ("gamma", "beta", "moving_mean", "moving_variance")
    return [
        _same_layout_slot(leaf, variable)
        for leaf, variable in zip(leaves, variables)
        if variable is not None  # gamma / beta are None with scale / center False
    ]


def _expert_slots(layer, kernel_leaf):
    """Expert kernel `[E, prod(expert shape)]` (C-order rows) -> `(E, *expert shape)`."""
    shape = tuple(layer.kernel.shape)
    flat_shape = (shape[0], math.prod(shape[1:]))
    slots = [_Slot(kernel_leaf, layer.kernel, flat_shape, lambda array: array.reshape(shape))]
    if layer.use_bias:
        slots.append(_same_layout_slot("condconv_bias", layer.bias))
    return slots


def _cond_conv_slots(layer):
    """`CondConv2D.kernel` `(E, kh, kw, I, O)` <- `condconv_kernel` `[E, kh*kw*I*O]`."""
    return _expert_slots(layer, "condconv_kernel")


def _cond_depthwise_slots(layer):
    """`CondDepthwiseConv2D.kernel` `(E, kh, kw, C, m)` <- `[E, kh*kw*C*m]`."""
    return _expert_slots(layer, "depthwise_condconv_kernel")


@dataclasses.dataclass(frozen=True)
class _OfficialKind:
    """How the official model names a layer of this kind, and its variables' slots.

    `base_name` is the official layer's name before uniquification. `named_by_keras`:
    the official layer is a Keras layer, numbered by a graph-wide counter (matched by
    order within its block), not a `tf.layers` layer numbered within its scope.
    """

    layer_type: type
    base_name: str
    named_by_keras: bool
    slots: Callable


# The first isinstance match wins: specific classes before general ones.
_OFFICIAL_KINDS = (
    _OfficialKind(CondDepthwiseConv2D, "depthwise_cond_conv2d", True, _cond_depthwise_slots),
    _OfficialKind(CondConv2D, "cond_conv2d", True, _cond_conv_slots),
    _OfficialKind(Routing, "dense", False, _routing_slots),
    _OfficialKind(
        keras.layers.BatchNormalization, "tpu_batch_normalization", False, _batch_norm_slots
    ),
    _OfficialKind(keras.layers.DepthwiseConv2D, "depthwise_conv2d", False, _depthwise_slots),
    _OfficialKind(keras.layers.Conv2D, "conv2d", False, _conv_slots),
    _OfficialKind(keras.layers.Dense, "dense", False, _dense_slots),
)


def _official_kind(layer):
    if isinstance(layer, ExpertLayer) and layer.routing_fn is not None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) computes its own routing; the "
            "official EfficientNet-CondConv shares one routing function per block (build "
            "the CondConv zoo model, whose blocks share a Routing layer)."
        )
    for kind in _OFFICIAL_KINDS:
        if isinstance(layer, kind.layer_type):
            return kind
    raise ValueError(
        f"Layer '{layer.name}' of type {type(layer).__name__} has no counterpart in the "
        "official EfficientNet checkpoints."
    )


def _layer_slots(layer, kind):
    """The `_Slot`s of `layer`; every variable but Routing's temperature is filled."""
    slots = kind.slots(layer)
    check_every_variable_filled(layer, slots, "official EfficientNet checkpoint")
    return slots


def _model_sections(model):
    """`{official section: [our layers in official call order]}`, stem first.

    Raises:
        ValueError: for a layer with weights whose name is not one of the zoo's
            EfficientNet layer names.
    """
    order = {name: ("stem", rank) for rank, name in enumerate(_STEM_LAYERS)}
    order.update({name: ("head", rank) for rank, name in enumerate(_HEAD_LAYERS)})
    placed = []
    for layer in model.layers:
        if not layer.weights:
            continue
        block = _BLOCK_LAYER.match(layer.name)
        if block:
            index = int(block.group("index"))
            key = (1, index, _BLOCK_ROLES.index(block.group("role")))
            section = f"blocks_{index}"
        elif layer.name in order:
            section, rank = order[layer.name]
            key = (0 if section == "stem" else 2, 0, rank)
        else:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) of model '{model.name}' is "
                "not a layer of the zoo's EfficientNet models (stem_conv, stem_bn, "
                "block<i>_expand, ..., head_bn, predictions): the official checkpoints "
                "have no counterpart for it."
            )
        placed.append((key, section, layer))
    sections = {}
    for _, section, layer in sorted(placed, key=lambda item: item[0]):
        sections.setdefault(section, []).append(layer)
    return sections


# --- the checkpoint side -----------------------------------------------------------------
@dataclasses.dataclass
class _OfficialLayer:
    """The model variables of one official layer: `{leaf: full checkpoint name}`."""

    section: str
    name: str
    variables: dict = dataclasses.field(default_factory=dict)


class _Checkpoint:
    """The official model's variables in a checkpoint, grouped by layer.

    A model variable may be stored raw, as its moving average
    (`<name>/ExponentialMovingAverage`) or both; `names` holds the raw names.
    """

    def __init__(self, shapes):
        self.shapes = shapes
        self.names = set()
        for name in shapes:
            base = name[: -len(EMA_SUFFIX) - 1] if name.endswith("/" + EMA_SUFFIX) else name
            if _OFFICIAL_VARIABLE.match(base):
                self.names.add(base)
        for name in sorted(shapes):
            parent = name.rpartition("/")[0]
            if name in self.names or parent in self.names:
                continue  # a model variable, its moving average or an optimizer slot
            if _IN_MODEL_SECTION.match(name):
                raise ValueError(
                    f"Checkpoint variable '{name}' with shape {tuple(shapes[name])} is "
                    "not a variable of the official EfficientNet models: the architectures "
                    "differ."
                )
        self.model_scope = self._single_model_scope()
        self.layers = {}
        for name in sorted(self.names):
            match = _OFFICIAL_VARIABLE.match(name)
            key = (match.group("section"), match.group("layer"))
            layer = self.layers.setdefault(key, _OfficialLayer(*key))
            other = layer.variables.setdefault(match.group("leaf"), name)
            if other != name:
                raise ValueError(
                    f"Checkpoint variables '{other}' and '{name}' are both "
                    f"'{'/'.join(key)}/{match.group('leaf')}' of the official model."
                )

    def _single_model_scope(self):
        scopes = sorted({_OFFICIAL_VARIABLE.match(name).group("model_scope")
                         for name in self.names})
        if not scopes:
            raise ValueError(
                "The checkpoint holds no official EfficientNet variables (names like "
                "'efficientnet-condconv-b0-4e/stem/conv2d/kernel')."
            )
        if len(scopes) > 1:
            raise ValueError(
                f"The checkpoint holds the variables of several models {scopes}; the "
                "loader reads one."
            )
        return scopes[0]

    def keras_named_layers(self, section, base_name):
        """The section's `base_name`, `base_name_1`, ... layers, by their numbers."""
        pattern = re.compile(rf"^{re.escape(base_name)}(?:_(\d+))?$")
        numbered = []
        for (layer_section, name), layer in self.layers.items():
            match = pattern.match(name)
            if layer_section == section and match:
                numbered.append((int(match.group(1) or 0), layer))
        return [layer for _, layer in sorted(numbered, key=lambda item: item[0])]

    def stored_names(self, name, prefer_ema):
        """The stored copies of model variable `name`, the one to read first."""
        copies = [name + "/" + EMA_SUFFIX, name]
        if not prefer_ema:
            copies.reverse()
        return [copy for copy in copies if copy in self.shapes]


def _resolve_prefix(path, tf):
    """The checkpoint prefix of `path`: a prefix, one of its files, or a directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix:
            return prefix
        # The `checkpoint` file may be missing, or name a path of the machine that
        # wrote it: fall back to the directory's only checkpoint.
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
        raise ValueError(
            f"Directory '{path}' holds {len(indexes)} checkpoints "
            f"({[os.path.basename(index) for index in indexes]}) and no usable "
            "`checkpoint` file: pass the prefix of one, e.g. '<directory>/model.ckpt'."
        )
    file_suffix = re.search(r"\.(index|meta|data-\d+-of-\d+)$", path)
    if file_suffix and not os.path.exists(path + ".index"):
        return path[: file_suffix.start()]
    return path


def _import_tensorflow():
    try:
        import tensorflow as tf  # noqa: PLC0415 (only this loader needs TensorFlow)
    except ImportError as error:
        raise ImportError(
            "Reading TensorFlow checkpoints needs TensorFlow: `pip install "
            "tensorflow-cpu` (the model itself may run on any Keras backend)."
        ) from error
    return tf


# --- matching ----------------------------------------------------------------------------
def _official_layer_for(layer, kind, section, checkpoint, legacy_counts, keras_named):
    """The `_OfficialLayer` of `layer`, or its expected name (str) when it is absent."""
    sub_scope = "se/" if layer.name.endswith(_SQUEEZE_EXCITE_ROLES) else ""
    if not kind.named_by_keras:
        count = legacy_counts[(sub_scope, kind.base_name)]
        legacy_counts[(sub_scope, kind.base_name)] += 1
        name = sub_scope + (kind.base_name if count == 0 else f"{kind.base_name}_{count}")
        return checkpoint.layers.get((section, name), name)
    if kind.base_name not in keras_named:
        keras_named[kind.base_name] = collections.deque(
            checkpoint.keras_named_layers(section, kind.base_name)
        )
    queue = keras_named[kind.base_name]
    if not queue:
        found = [
            official.name for official in checkpoint.keras_named_layers(section, kind.base_name)
        ]
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no counterpart in the "
            f"checkpoint: '{checkpoint.model_scope}/[model/]{section}' holds "
            f"{len(found)} '{kind.base_name}*' layers {found}, fewer than the block "
            "needs: the architectures differ."
        )
    return queue.popleft()


def _match(model, checkpoint, prefer_ema):
    """`[(Keras variable, slot, stored name)]` for every variable of `model`."""
    matches = []
    for section, layers in _model_sections(model).items():
        legacy_counts = collections.Counter()
        keras_named = {}
        for layer in layers:
            kind = _official_kind(layer)
            slots = _layer_slots(layer, kind)
            official = _official_layer_for(
                layer, kind, section, checkpoint, legacy_counts, keras_named
            )
            variables = official.variables if isinstance(official, _OfficialLayer) else {}
            layer_name = official.name if isinstance(official, _OfficialLayer) else official
            for slot in slots:
                full_name = f"{checkpoint.model_scope}/{section}/{layer_name}/{slot.leaf}"
                what = (
                    f"variable '{slot.variable.path}' (shape {tuple(slot.variable.shape)}) of "
                    f"layer '{layer.name}' ({type(layer).__name__})"
                )
                if slot.leaf not in variables:
                    raise ValueError(
                        f"The checkpoint lacks '{full_name}' (shape {slot.official_shape}) "
                        f"for {what}: the architectures differ."
                    )
                stored = checkpoint.stored_names(variables[slot.leaf], prefer_ema)
                for copy in stored:
                    shape = tuple(checkpoint.shapes[copy])
                    if shape != slot.official_shape:
                        raise ValueError(
                            f"Checkpoint variable '{copy}' has shape {shape}, but {what} "
                            f"needs {slot.official_shape}: the architectures differ."
                        )
                matches.append((slot, variables[slot.leaf], stored[0]))
    used = {name for _, name, _ in matches}
    unused = sorted(checkpoint.names - used)
    if unused:
        raise ValueError(
            f"Checkpoint variable '{unused[0]}' with shape "
            f"{tuple(checkpoint.shapes[unused[0]])} has no counterpart in model "
            f"'{model.name}' ({len(unused)} unused in all): the architectures differ."
        )
    return matches


def load_tf_checkpoint(model, path, prefer_ema=True):
    """Copies an official TensorFlow EfficientNet(-CondConv) checkpoint into `model`.

    Args:
        model: a zoo model of the checkpoint's architecture, e.g.
            `zoo.condconv_efficientnet_b0(num_experts=4)` for
            `efficientnet-condconv-b0-4e` (pairs in the module docstring), with its
            top (1000 classes) included. The input size may differ.
        path: the checkpoint prefix (`.../model.ckpt`), one of its files, or a
            directory holding one checkpoint (as the official tarballs extract to),
            found through its `checkpoint` file when that names a file present.
        prefer_ema: read each variable's exponential moving average
            (`<name>/ExponentialMovingAverage`, what the official evaluation uses)
            when the checkpoint has it; otherwise, or with False, the raw variable.

    Returns:
        `[(checkpoint variable name read, Keras variable path)]`, in the order of the
        model's layers; the names read end in `/ExponentialMovingAverage` where the
        average was used.

    Raises:
        ImportError: when TensorFlow, needed to read the checkpoint, is missing.
        ValueError: when the checkpoint cannot be read, or the architectures differ:
            a variable the model needs is missing or has another shape, or a model
            variable of the checkpoint has no counterpart in `model` (the message
            names it). The model is left unchanged.

    Example:
    >>> model = zoo.condconv_efficientnet_b0(num_experts=8)
    >>> read = load_tf_checkpoint(model, "efficientnet-condconv-b0-8e/")  # doctest: +SKIP
    """
    tf = _import_tensorflow()
    prefix = _resolve_prefix(path, tf)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"Cannot read a TensorFlow checkpoint at '{path}': {error}") from error
    checkpoint = _Checkpoint(reader.get_variable_to_shape_map())
    matches = _match(model, checkpoint, prefer_ema)
    values = []
    for slot, _, stored_name in matches:
        dtype = keras.backend.standardize_dtype(slot.variable.dtype)
        values.append(slot.convert(reader.get_tensor(stored_name)).astype(dtype))
    for (slot, _, _), value in zip(matches, values):
        slot.variable.assign(value)
    return [(stored_name, slot.variable.path) for slot, _, stored_name in matches]
