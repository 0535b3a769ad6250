"""`portable()`: trace the aggregation core with operations every exporter takes.

ONNX (tf2onnx and torch.onnx) and TFLite refuse a convolution whose kernel is
computed at run time with a shape that depends on the batch size, which is what the
per-example paths build (the batch folded into channels), and torch.onnx cannot follow
the views of `torch_conv`. Inside `portable()` the per-example convolutions are
sums over kernel taps (`keras_dynconv.ops.taps`: slices, products and matmuls, equal
to the other paths) and static depthwise convolutions are Keras' own op.
`keras_dynconv.export.export_model` traces inside it.
"""

import contextlib
import threading

_state = threading.local()


@contextlib.contextmanager
def portable():
    """Inside, the aggregation core emits only portable operations (see module doc).

    Example:
    >>> with portable():
    ...     model.export("model.onnx", format="onnx")  # doctest: +SKIP
    """
    previous = active()
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


def active():
    """True inside `portable()` (in this thread)."""
    return getattr(_state, "active", False)
