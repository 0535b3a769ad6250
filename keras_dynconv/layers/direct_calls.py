"""Layers called without Keras' per-layer call machinery, for eager inference on torch.

`Layer.__call__` converts inputs, binds the call signature, resolves `training` and
masks, opens name and autocast scopes and runs torch's module hooks: 0.1-0.2 ms per
layer on this project's 2-core CPU (a ReLU layer 112 µs against 12 µs for its `call`),
more than the convolutions of many layers at batch 1. Where none of that machinery has
work to do, a layer's `call` alone gives the same result: `inference_call` calls it
directly then (the static layers' prepared functions where they have them:
`prepared_calls`), and through `__call__` otherwise. `run` applies it to the inner block of
a MoD block, `keras_dynconv.zoo.ZooModel` to the zoo's models: EfficientNet-B0 at
batch 1 141 -> 75 ms, ResNet75-MoD 214 -> 151 ms (`python scripts/bench_direct_calls.py`;
zoo/benchmarks/README.md). Equal to the calls through Keras
(tests/test_direct_calls.py).
"""

import functools

import keras

from keras_dynconv.layers import prepared_calls

# Keras exports none of these; they are what `Layer.__call__` itself consults, and the
# base of the merging layers (`Add`, `Multiply`, `Concatenate`, ...), which derive no
# mask from inputs without masks. A Keras that moved them gets no direct calls.
try:
    from keras.src.backend import get_autocast_scope
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    from keras.src.layers.merging.base_merge import Merge
    from keras.src.utils.python_utils import is_default

    KERAS_INTERNALS_FOUND = True
except ImportError:
    KERAS_INTERNALS_FOUND = False


def applies(inputs, training):
    """Whether calls for these model inputs may go direct: eager inference (`training`
    falsy) on torch, on tensors without masks, outside symbolic scopes, with no
    distribution, not exporting or compiling. (Autocast scopes are each layer's
    question: `_plain`.)"""
    if training or keras.backend.backend() != "torch" or not KERAS_INTERNALS_FOUND:
        return False
    import torch

    from keras_dynconv.ops import portability

    tensors = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return (
        all(isinstance(x, torch.Tensor) and _mask(x) is None for x in tensors)
        and not in_symbolic_scope()
        and keras.distribution.distribution() is None
        and not portability.active()
        and not torch.compiler.is_compiling()
        and not _global_hooks()
    )


def inference_call(operation, training=None):
    """`operation` as a function of its call arguments for inference (where `applies`):
    its `call` where it is a plain layer for those arguments (`_plain`), else its
    `__call__`; `training` (None or False) passed where Keras' functional models pass it
    (not None; to layers whose `call` takes it)."""

    def call(*args, **kwargs):
        if not isinstance(operation, keras.layers.Layer):
            return operation(*args, **kwargs)
        if training is not None:
            kwargs["training"] = training
        tensors = _tensor_arguments(args, kwargs)
        if tensors is not None and _plain(operation, tensors):
            if len(args) == 1 and all(
                key == "training" or (key == "mask" and value is None)
                for key, value in kwargs.items()
            ):
                outputs = prepared_calls.call(operation, args[0])
                if outputs is not None:
                    return outputs
            if not operation._call_has_training_arg:
                kwargs.pop("training", None)
            return operation.call(*args, **kwargs)
        return operation(*args, **kwargs)

    return call


def folded_call(pair, args, kwargs):
    """A `folded_normalization.NormalizedConvolution`'s output for these call arguments
    of its convolution (where `applies`), computed by its prepared function: where its
    layers are plain float32 layers outside autocast scopes and the arguments are the
    input and, for a CondConv layer, routing weights; None otherwise (each layer is then
    called as usual)."""
    convolution = pair.convolution
    if len(args) != 1 or any(
        key not in ("training", "routing_weights") or (key == "training" and value)
        for key, value in kwargs.items()
    ):
        return None
    routing_weights = kwargs.get("routing_weights")
    if (routing_weights is not None and not pair.experts) or (
        pair.experts and routing_weights is None and convolution.routing_fn is None
    ):
        return None
    tensors = _tensor_arguments(args, {"routing_weights": routing_weights})
    if (
        tensors is None
        or get_autocast_scope() is not None
        or any(layer.dtype_policy.name != "float32" for layer in pair.layers)
        # A CondConv layer's own routing sublayer is called below, as its `call` would.
        or not _plain(convolution, tensors, container=pair.experts)
        or not all(_plain(layer, tensors[:1]) for layer in pair.layers[1:])
    ):
        return None
    if pair.experts and routing_weights is None:
        routing_weights = inference_call(convolution.routing_fn)(args[0])
    return prepared_calls.call(pair, args[0], routing_weights)


def run(block, inputs, training=None):
    """`block(inputs, training=training)` for a `keras.Sequential` `block`: for inference
    (where `applies`) its layers one after the other through `inference_call`."""
    if not _sequential_runs_directly(block, inputs, training):
        return block(inputs, training=training)
    outputs = inputs
    for layer in block.layers:
        outputs = inference_call(layer, training)(outputs)
    return outputs


def _sequential_runs_directly(block, inputs, training):
    return (
        type(block) is keras.Sequential
        and applies(inputs, training)
        and _plain(block, [inputs], container=True)
    )


def _tensor_arguments(args, kwargs):
    """The tensors among the call arguments, lists and tuples of them included; None
    for deeper structures (left to Keras, whose tree functions cost more than a direct
    call saves)."""
    import torch

    tensors = []
    for value in list(args) + list(kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, torch.Tensor):
                tensors.append(item)
            elif isinstance(item, (list, tuple, dict)):
                return None
    return tensors


def _plain(layer, tensors, container=False):
    """A built layer without sublayers (or one whose `call` passes `training` to them
    itself: `passes_training_to_sublayers`; or a `container` whose layers are checked
    one by one), whose tensor arguments carry no mask and have its compute dtype, and
    for which Keras would keep the autocast scope as it is (`_keeps_autocast_scope`);
    no activity regularizer, quantization, torch hook or output mask of its own."""
    policy = layer.dtype_policy
    return (
        layer.built
        and (
            container
            or not layer._layers
            or getattr(layer, "passes_training_to_sublayers", False)
        )
        and layer.activity_regularizer is None
        and policy.quantization_mode is None
        and _keeps_autocast_scope(layer, policy)
        and all(_dtype_name(x.dtype) == policy.compute_dtype and _mask(x) is None for x in tensors)
        and (
            container
            or not layer.supports_masking
            or is_default(layer.compute_mask)
            or isinstance(layer, Merge)
        )
        and not _hooked(layer)
    )


def _keeps_autocast_scope(layer, policy):
    """Whether `Layer.__call__` would run this layer in the current autocast scope, as
    a direct call does: with no scope, a layer whose variables have its compute dtype
    (a mixed layer opens one); in a mixed model's scope, an autocasting layer of the
    scope's compute dtype (others open their own or clear it)."""
    scope = get_autocast_scope()
    if scope is None:
        return policy.compute_dtype == policy.variable_dtype
    return layer.autocast and scope.dtype == policy.compute_dtype


@functools.cache
def _dtype_name(dtype):
    return keras.backend.standardize_dtype(dtype)


def _mask(tensor):
    return getattr(tensor, "_keras_mask", None)


def _hooked(module):
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _global_hooks():
    from torch.nn.modules import module

    return bool(
        module._global_forward_hooks
        or module._global_forward_pre_hooks
        or module._global_backward_hooks
        or module._global_backward_pre_hooks
    )
