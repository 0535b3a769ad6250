"""`strategy="auto"`: per-example or mixture, by what was measured on each device kind.

The CondConv paper (Sec. 4) trained on TPUs: "with small numbers of experts (<=4), we
found it to be more efficient to train CondConv layers with the linear mixture of
experts formulation ... With larger numbers of experts (>4), training CondConv layers
directly with batch size one is more efficient."

On CPUs we measured the opposite for every backend (zoo/benchmarks/README.md, "Per-
example or mixture"; `keras-dynconv bench` of condconv_efficientnet_b0 with
num_experts 2, 4, 8 and both strategies): the per-example formulation was faster in
every cell, inference and training step, batch 4 and 32, on TensorFlow, JAX and
torch. The mixture runs E convolutions where the per-example one runs one, and a CPU
has no idle parallelism for the extra ones to fill. So:

* CPU: always per-example.
* GPU and TPU, training, E <= `MIXTURE_MAX_EXPERTS_IN_TRAINING`: mixture (the paper's
  rule; also the path that avoids cuDNN's grouped convolutions with the batch folded
  into channels, which fail at batch 256 in a torch training step).
* Otherwise per-example (inference always: one convolution instead of E).
"""

import functools

import keras

STRATEGIES = ("auto", "per_example", "mixture")
MIXTURE_MAX_EXPERTS_IN_TRAINING = 4


@functools.lru_cache(maxsize=None)
def _accelerated(backend):
    """True when `backend` computes on a GPU or TPU in this process."""
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU") or
                    tf.config.list_logical_devices("TPU"))
    if backend == "torch":
        from keras.src.backend.torch.core import get_device

        return get_device() != "cpu"
    return False


def on_accelerator():
    """True when the current Keras backend computes on a GPU or TPU."""
    return _accelerated(keras.backend.backend())


def resolve_strategy(strategy, num_experts, training, accelerator=None):
    """The formulation a layer uses: `strategy` itself unless it is `"auto"`.

    Args:
        strategy: `"auto"`, `"per_example"` or `"mixture"`.
        num_experts: E.
        training: whether the call is a training step.
        accelerator: whether computing on a GPU/TPU; default: asks the backend.

    `"auto"` is `"mixture"` only when training on an accelerator with at most
    `MIXTURE_MAX_EXPERTS_IN_TRAINING` experts (see the module docstring for the
    measurements), `"per_example"` otherwise.

    Example:
    >>> resolve_strategy("auto", 4, training=True, accelerator=False)
    'per_example'
    >>> resolve_strategy("auto", 4, training=True, accelerator=True)
    'mixture'
    """
    if strategy != "auto":
        return strategy
    if accelerator is None:
        accelerator = on_accelerator()
    if training and accelerator and num_experts <= MIXTURE_MAX_EXPERTS_IN_TRAINING:
        return "mixture"
    return "per_example"
