"""The zoo's static layers' torch inference, prepared once per layer and kept.

`direct_calls` spares a layer Keras' `__call__`; what is left of a static convolution or
normalisation at batch 1 is mostly its own per-call work (reading variables, the
kernel's layout, casts, padding; `keras_dynconv.ops.torch_prepared`). A layer that
defines `prepared_inference(inputs)` (a function of the input, made from the layer's
current weights) and `prepared_variables()` (the variables it read) has that function
kept here and called while the input's shape, dtype and device, the autocast scope and
the variables' torch tensors (identity and version counter, which every in-place write
increments: `assign`, `set_weights`, optimizer steps, `load_state_dict`) are those it
was made for; otherwise it is made again. Only where no gradient is wanted (the
prepared functions hold detached weights) and outside stateless scopes (whose values
are not the variables' own). Equal to the layers' `call` (tests/test_prepared_calls.py).
"""

import functools
import weakref

try:  # what `keras.Variable.value` consults; not exported
    from keras.src.backend import get_autocast_scope
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    KERAS_INTERNALS_FOUND = True
except ImportError:
    KERAS_INTERNALS_FOUND = False

# layer -> (key, function, the torch tensors the key names, kept alive so that their
# ids stay theirs)
_PREPARED = weakref.WeakKeyDictionary()


def call(layer, inputs, *arguments):
    """`layer.call(inputs, *arguments)` for inference (`training` falsy, no mask)
    through the layer's kept function, or None where the layer has none or it does not
    apply (a gradient wanted, a stateless scope, variables that are not torch tensors, a
    layer configuration its `prepared_inference` does not take). The function is made
    for `inputs` (`arguments`, if any, are passed through: routing weights)."""
    if not KERAS_INTERNALS_FOUND or not _prepares(type(layer)):
        return None
    import torch

    if in_stateless_scope() or not isinstance(inputs, torch.Tensor):
        return None
    tensors = [getattr(variable, "_value", None) for variable in layer.prepared_variables()]
    if not all(isinstance(tensor, torch.Tensor) for tensor in tensors):
        return None
    if torch.is_grad_enabled() and (
        inputs.requires_grad
        or any(tensor.requires_grad for tensor in tensors)
        or any(getattr(argument, "requires_grad", False) for argument in arguments)
    ):
        return None
    scope = get_autocast_scope()
    key = (
        inputs.shape, inputs.dtype, inputs.device, None if scope is None else scope.dtype,
        tuple((id(tensor), tensor._version) for tensor in tensors),
    )
    kept = _PREPARED.get(layer)
    if kept is None or kept[0] != key:
        kept = (key, layer.prepared_inference(inputs), tensors)
        _PREPARED[layer] = kept
    function = kept[1]
    return None if function is None else function(inputs, *arguments)


@functools.cache
def _prepares(cls):
    """Whether `cls` has a prepared inference for the `call` it runs: the class that
    defines `prepared_inference` also defines that `call` (a subclass's own `call`
    computes something else)."""
    for base in cls.__mro__:
        if "prepared_inference" in base.__dict__:
            return cls.call is base.__dict__.get("call")
    return False
