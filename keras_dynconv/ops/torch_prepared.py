"""Static convolutions and normalisations on torch, prepared once for inference.

At batch 1 on this project's 2-core CPU a static layer's own call costs more than its
arithmetic: a 1x1 convolution at 14x14x16 takes 86 µs through `conv` against 14 µs
for torch's `conv2d`, a normalisation 60 against 24 µs. The rest is per-call work whose
result does not change between calls: reading and converting Keras variables, the
kernel's layout and dtype, the padding. Each function here does that work once and
returns a function of the input that calls torch alone, equal to the generic op for
inputs of the same shape, dtype and device, and weights that have not changed since
(`keras_dynconv.layers.prepared_calls` keeps them per layer and checks both). Nothing
here records gradients: the weights are detached. A prepared convolution holds its
kernel in torch's layout, a copy as large as the kernel (as `torch_weights` keeps for
the generic path's inference).
"""

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import torch_conv
from keras_dynconv.ops import torch_weights
from keras_dynconv.ops.taps import pair


def prepared_conv(inputs, kernel, strides, padding, dilation_rate, bias=None, depthwise=False):
    """`torch_conv.conv` (or `depthwise_conv`, kernel `[kh, kw, C, M]`) as a function
    of channels-last inputs shaped, typed and placed like `inputs`. A depthwise
    convolution runs the compiled kernel where `native_depthwise.static_applies`, as
    `depthwise_conv` does."""
    import torch.nn.functional as functional

    inputs, kernel = torch_conv.torch_tensor(inputs), torch_conv.torch_tensor(kernel).detach()
    if depthwise:
        weight, groups = torch_weights.depthwise_layout(kernel), kernel.shape[2]
    else:
        weight, groups = torch_weights.conv_layout(kernel), inputs.shape[-1] // kernel.shape[2]
    weight = weight.to(inputs.dtype)
    if bias is not None:
        bias = torch_conv.torch_tensor(bias).detach().to(inputs.dtype)
    strides, dilation_rate = pair(strides), pair(dilation_rate)
    sizes = tuple(inputs.shape[1:3])
    subsample = None
    if not depthwise and tuple(kernel.shape[:2]) == (1, 1) and strides != (1, 1):
        # As `torch_conv.conv`: a strided 1x1 kernel reads every stride-th pixel.
        subsample, strides = strides, (1, 1)
        sizes = tuple(-(-size // stride) for size, stride in zip(sizes, subsample))
    input_pad, torch_padding = torch_conv.padding_plan(
        sizes, tuple(kernel.shape[:2]), strides, dilation_rate, padding
    )

    native = (
        depthwise
        and torch_conv.inference_available(inputs, kernel)
        and native_depthwise.static_applies(inputs, kernel, strides, padding, dilation_rate, bias)
    )
    if native:
        kernel = kernel.contiguous()

    def run(x):
        # KERAS_DYNCONV_NATIVE=0 turns the kernel off per call, as on the unprepared path
        # (a function prepared while it was 0 keeps oneDNN's path).
        if native and native_depthwise.enabled():
            return native_depthwise.depthwise_conv(
                x, kernel, strides, padding, dilation_rate, bias=bias
            )
        if subsample is not None:
            x = x[:, ::subsample[0], ::subsample[1], :]
        nchw = torch_conv.pad_channels_last(x.permute(0, 3, 1, 2), input_pad)
        outputs = functional.conv2d(
            nchw, weight, bias, stride=strides, padding=torch_padding,
            dilation=dilation_rate, groups=groups,
        )
        return outputs.permute(0, 2, 3, 1)

    return run


def prepared_batch_normalization(mean, variance, offset, scale, epsilon):
    """`normalization.batch_normalization` along the last axis of 4D channels-last
    inputs of the statistics' dtype, as a function of the input."""
    import torch.nn.functional as functional

    mean, variance = (torch_conv.torch_tensor(value).detach() for value in (mean, variance))
    offset, scale = (
        None if value is None else torch_conv.torch_tensor(value).detach()
        for value in (offset, scale)
    )

    def run(x):
        outputs = functional.batch_norm(
            x.permute(0, 3, 1, 2), mean, variance, weight=scale, bias=offset,
            training=False, eps=epsilon,
        )
        return outputs.permute(0, 2, 3, 1)

    return run


def prepared_routing(inputs, kernel, bias, temperature, activation, hidden=None):
    """`Routing.call` (mean over the spatial axes, optional ReLU hidden layer, then
    `activation((pooled @ kernel + bias) / temperature)`) as a function of inputs of
    `inputs`' dtype and rank, the same ops in the same order on kept torch tensors.
    `hidden`: `(kernel, bias)` of the hidden layer, or None; `activation`: one of
    `layers.routing.ROUTING_ACTIVATIONS`."""
    import torch

    dtype = torch_conv.torch_tensor(inputs).dtype

    def kept(value):
        return torch_conv.torch_tensor(value).detach().to(dtype)

    kernel, bias, temperature = kept(kernel), kept(bias), kept(temperature)
    if hidden is not None:
        hidden = tuple(kept(value) for value in hidden)
    spatial_axes = tuple(range(1, len(inputs.shape) - 1))
    activate = {
        "sigmoid": torch.sigmoid,
        "softmax": lambda logits: torch.softmax(logits, dim=-1),
        "tanh": torch.tanh,
        "relu": torch.relu,
    }[activation]

    def run(x):
        pooled = x.mean(dim=spatial_axes) if spatial_axes else x
        if hidden is not None:
            pooled = torch.relu(torch.matmul(pooled, hidden[0]) + hidden[1])
        return activate((torch.matmul(pooled, kernel) + bias) / temperature)

    return run
