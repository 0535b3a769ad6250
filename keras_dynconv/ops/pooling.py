"""`max_pool`: `keras.ops.max_pool` without Keras' copies on torch.

Keras' torch backend copies a channels-last input to channels-first memory before
pooling and returns a permuted view of the result: for ResNet-50's stem pooling at batch
32 (114x114x64) that is 300 ms on this project's 2-core CPU against 45 ms for torch's
pooling of a channels-last view (`python scripts/bench_max_pool.py`). Equal to Keras'
op (tests/test_ops.py).
"""

import keras
from keras import ops

from keras_dynconv.ops import torch_conv
from keras_dynconv.ops.taps import pair


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """2D max pooling, equal to `keras.ops.max_pool`.

    Args:
        inputs: `[B, H, W, C]` (channels_last; anything else goes to Keras as is).
        pool_size, strides, padding, data_format: as in `keras.ops.max_pool`.

    Returns:
        `[B, H', W', C]`. On torch, torch's pooling of a channels-last view of the input
        where the padding is symmetric (always for "valid"); elsewhere
        `keras.ops.max_pool`.

    Example:
    >>> tuple(max_pool(keras.ops.ones((2, 9, 9, 3)), 3, strides=2).shape)
    (2, 4, 4, 3)
    """
    data_format = data_format or keras.config.image_data_format()
    pool_size = pair(pool_size)
    strides = pool_size if strides is None else pair(strides)
    if data_format == "channels_last" and len(inputs.shape) == 4 and torch_conv.available(inputs):
        pads = torch_conv.padding_amounts(inputs.shape[1:3], pool_size, strides, 1, padding)
        if all(before == after for before, after in pads):
            return torch_conv.max_pool(inputs, pool_size, strides, [before for before, _ in pads])
    return ops.max_pool(inputs, pool_size, strides, padding, data_format)
