"""Channel selection for the MoD blocks: pick the top-k channels, gather them, add the
processed ones back.

`stable_top_k`: `keras.ops.top_k` leaves the order of tied values to the backend, so the
channels are chosen by a stable descending sort, which torch's CPU sort makes slow: 1.9 ms
for scores of shape [32, 1024], 20 ms of each ResNet75-MoD call at batch 32. On torch
the same selection is one `topk` of integer keys that order by value, then by index.

`take_channels` and `add_to_leading_channels` are `take_along_axis` and a concatenation
in `keras.ops`; on torch a `gather` of broadcast indices (`take_along_dim` also wraps
every broadcast index: 9.0 against 4.5 ms at [32, 56, 56, 256]) and an add into a copy
(`cat` of a strided slice is slower than a copy). Equal to the generic paths
(tests/test_ops.py).
"""

import keras
from keras import ops

from keras_dynconv.ops import torch_conv


def stable_top_k(values, k):
    """`(indices, top_values)`, each `[..., k]`: the k largest entries of every row of
    `values` `[..., N]`, largest first, tied values in index order.

    Example:
    >>> indices, top = stable_top_k(keras.ops.convert_to_tensor([[0.5, 0.9, 0.5, 0.1]]), 2)
    >>> keras.ops.convert_to_numpy(indices).tolist()
    [[1, 0]]
    """
    if torch_conv.available(values):
        indices = _torch_stable_top_k_indices(values, k)
    else:
        indices = ops.argsort(-values, axis=-1)[..., :k]
    return indices, ops.take_along_axis(values, indices, axis=-1)


def take_channels(inputs, channels):
    """`[B, H, W, k]`: `inputs[b, :, :, channels[b, j]]` for `inputs` `[B, H, W, C]` and
    integer `channels` `[B, k]`.

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(8.0), (1, 1, 2, 4))
    >>> keras.ops.convert_to_numpy(take_channels(x, [[3, 0]])).tolist()
    [[[[3.0, 0.0], [7.0, 4.0]]]]
    """
    if torch_conv.available(inputs):
        import torch

        inputs = torch_conv.torch_tensor(inputs)
        channels = torch_conv.torch_tensor(channels).long()
        batch, height, width, _ = inputs.shape
        indices = channels[:, None, None, :].expand(batch, height, width, channels.shape[-1])
        return torch.gather(inputs, 3, indices)
    return ops.take_along_axis(inputs, ops.expand_dims(channels, (1, 2)), axis=-1)


def add_to_leading_channels(inputs, update):
    """`inputs` with `update` `[..., k]` added to its first k channels.

    Example:
    >>> y = add_to_leading_channels(keras.ops.zeros((1, 3)), keras.ops.ones((1, 2)))
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[1.0, 1.0, 0.0]]
    """
    k = update.shape[-1]
    if torch_conv.available(inputs):
        inputs, update = torch_conv.torch_tensor(inputs), torch_conv.torch_tensor(update)
        outputs = inputs.clone()
        outputs[..., :k] += update
        return outputs
    return ops.concatenate([inputs[..., :k] + update, inputs[..., k:]], axis=-1)


def _torch_stable_top_k_indices(values, k):
    """`topk` of int64 keys: the float32 bits in an order-preserving integer form,
    shifted up 32 bits, plus `N - 1 - index`, so that ties go to the lowest index."""
    import torch

    values = keras.ops.convert_to_tensor(values)
    # + 0.0 turns -0.0 into +0.0, which compare equal as floats.
    bits = (values.detach().float() + 0.0).contiguous().view(torch.int32).long()
    # Negative floats order backwards as integers; flipping their magnitude bits fixes that.
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    positions = torch.arange(values.shape[-1], device=values.device)
    keys = ordered * 2**32 + (values.shape[-1] - 1 - positions)
    return torch.topk(keys, k, dim=-1).indices.int()
