"""Static convolution kernels in torch's layout, made once per weight value for inference.

A Keras kernel `[kh, kw, I, O]` is, permuted, an `[O, I, kh, kw]` view that is neither
contiguous nor channels-last, so every torch convolution of it first copies it: a
transposing copy that can cost more than the convolution at batch 1 on this project's
2-core CPU (3x3, 256 -> 256 at 14x14: 3.8 against 2.2 ms with a channels-last kernel;
1x1, 512 -> 2048 at 7x7: 5.4 against 1.7 ms; `python scripts/bench_torch_weights.py`).
For inference the layout is made once and kept while the weight is unchanged: the key is
the weight tensor itself (a Keras variable's torch parameter), its storage and its
version counter, which every in-place write (`assign`, `set_weights`, optimizer steps,
`load_state_dict`) increments. A training step, which wants gradients through the
layout, takes the view as before. The kept copies cost as much memory as the static
kernels they were made from; they go with their weight tensor.
"""

import weakref

# id(weight) -> (weak reference to the weight, (layout, storage, version), kernel)
_LAYOUTS = {}


def conv_weight(kernel, cacheable):
    """`[O, I, kh, kw]` of a `[kh, kw, I, O]` kernel, in channels-last memory (the
    layout torch's CPU convolution of channels-last inputs takes without a copy) when
    `cacheable`, else the permuted view."""
    if not _keeps(kernel, cacheable):
        return kernel.permute(3, 2, 0, 1)
    return _kept(kernel, "conv", conv_layout)


def depthwise_weight(kernel, cacheable):
    """`[C*M, 1, kh, kw]` of a `[kh, kw, C, M]` depthwise kernel (a copy unless kept)."""
    if not _keeps(kernel, cacheable):
        return depthwise_layout(kernel)
    return _kept(kernel, "depthwise", depthwise_layout)


def conv_layout(kernel):
    """`[O, I, kh, kw]` of a `[kh, kw, I, O]` kernel in channels-last memory (a copy)."""
    import torch

    return kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)


def depthwise_layout(kernel):
    """`[C*M, 1, kh, kw]` of a `[kh, kw, C, M]` depthwise kernel (a copy)."""
    kernel_h, kernel_w, channels, multiplier = kernel.shape
    return kernel.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kernel_h, kernel_w)


def packed_experts(experts, columns):
    """`[ceil(O / columns), I, E, columns]` of 1x1 `experts` `[E, 1, 1, I, O]`, output
    channels zero-padded to whole blocks (`native_pointwise`'s layout), kept while the
    weight is unchanged (the caller has checked that no gradient is wanted); None for
    experts that are not a persistent weight, which packing for one call would not pay."""
    if not _keeps(experts, True):
        return None
    return _kept(
        experts, f"packed_experts_{columns}",
        lambda weight: packed_experts_layout(weight, columns),
    )


def packed_experts_layout(experts, columns):
    """`packed_experts`, a copy."""
    import torch

    num_experts, _, _, in_channels, out_channels = experts.shape
    blocks = -(-out_channels // columns)
    padded = torch.zeros(
        (num_experts, in_channels, blocks * columns), dtype=experts.dtype, device=experts.device
    )
    padded[:, :, :out_channels] = experts.reshape(num_experts, in_channels, out_channels)
    return padded.view(num_experts, in_channels, blocks, columns).permute(2, 1, 0, 3).contiguous()


def _keeps(kernel, cacheable):
    """Only persistent weights are kept: a Keras variable's value is a torch parameter;
    any other tensor (a kernel computed in the call) would never be asked for again."""
    import torch

    return cacheable and isinstance(kernel, torch.nn.Parameter)


def _kept(kernel, layout, make):
    key = id(kernel)
    state = (layout, kernel.data_ptr(), kernel._version)
    entry = _LAYOUTS.get(key)
    if entry is not None and entry[0]() is kernel and entry[1] == state:
        return entry[2]
    weight = make(kernel.detach())
    # The callback runs as the weight is freed, before its id can be reused.
    reference = weakref.ref(kernel, lambda _, key=key: _LAYOUTS.pop(key, None))
    _LAYOUTS[key] = (reference, state, weight)
    return weight
