"""A `keras.Sequential` of plain layers run without Keras' per-layer call machinery, for
eager inference on torch.

`Layer.__call__` converts inputs, binds the call signature, resolves `training` and
masks, opens name and autocast scopes and runs torch's module hooks: about 0.1-0.2 ms
per layer on this project's 2-core CPU (a ReLU layer 112 µs against 12 µs for its
`call`). A MoD block at batch 1 runs 8 such layers on a handful of channels, so the
overhead is most of its cost: ResNet75-MoD, whose 11 MoD blocks hold 88 of them,
takes 217 ms at batch 1 through `__call__` and 190 ms through `call` (1648 and 1610 ms
at batch 32; `python scripts/bench_mod_direct_calls.py`). Where none of that machinery has work to
do, `call` alone gives the same result; `run` checks that it has none and otherwise
calls the block as Keras does (tests/test_layers.py).
"""

import keras


def run(block, inputs, training=None):
    """`block(inputs, training=training)`.

    When `block` is a built `keras.Sequential` of leaf layers (no sublayers), called
    eagerly on torch for inference (`training` falsy), with float inputs of every
    layer's compute and variable dtype, no autocast scope, distribution, mask, activity
    regularizer, quantization or torch module hook, its layers' `call` methods are
    called one after the other instead; those conditions are what make the two equal.
    """
    if _direct_calls_apply(block, inputs, training):
        outputs = inputs
        for layer in block.layers:
            if layer._call_has_training_arg:
                outputs = layer.call(outputs, training=False)
            else:
                outputs = layer.call(outputs)
        return outputs
    return block(inputs, training=training)


def _direct_calls_apply(block, inputs, training):
    if training or keras.backend.backend() != "torch" or type(block) is not keras.Sequential:
        return False
    import torch
    # Keras exports neither; they are what `Layer.__call__` itself consults.
    from keras.src.backend import get_autocast_scope
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope

    if not isinstance(inputs, torch.Tensor) or getattr(inputs, "_keras_mask", None) is not None:
        return False
    if (
        get_autocast_scope() is not None
        or keras.distribution.distribution() is not None
        or in_symbolic_scope()
        or not block.built
        or _hooked(block)
    ):
        return False
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return all(_plain_layer(layer, dtype) for layer in block.layers)


def _plain_layer(layer, dtype):
    policy = layer.dtype_policy
    return (
        layer.built
        and not layer._layers
        and layer.activity_regularizer is None
        and policy.quantization_mode is None
        and policy.compute_dtype == policy.variable_dtype == dtype
        and not _hooked(layer)
    )


def _hooked(module):
    return bool(module._forward_hooks or module._forward_pre_hooks)
