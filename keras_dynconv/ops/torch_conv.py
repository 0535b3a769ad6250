"""Convolutions on torch without Keras' layout copies.

`keras.ops.depthwise_conv` on torch copies its channels-last input to channels-first
and then to torch's channels-last memory format; with the batch folded into the
channels on top, the generic path makes five full copies of the activations around
one convolution. On this project's 2-core CPU that is 35 ms for a 5x5 layer of
CondConv-EfficientNet-B0 at batch 32 against 12 ms for the static layer. A permuted
view of a channels-last tensor already is torch's channels-last memory format, so
this path calls `torch.nn.functional.conv2d` on views and copies twice: to fold the
batch into the channels and back. The weight gradient of that folded convolution is
torch's weak spot past 3x3 kernels (368 ms for a 5x5 layer at 7x7x1152, batch 32,
against 4.5 ms for the input gradient): there it is computed as the correlation of the
padded input with the output gradient, one depthwise convolution (13 ms;
`scripts/bench_torch_depthwise_gradient.py`). For inference on a CPU the folded
depthwise convolution and the 1x1 CondConv kernels go a chunk of examples at a time, so
that a chunk's data stays in cache (`DEPTHWISE_CHUNK_BYTES`, `POINTWISE_CHUNK_BYTES`;
`scripts/bench_torch_chunks.py`). The shared-kernel convolutions of the zoo's static
layers (`conv`, `depthwise_conv`) copy nothing, where `keras.ops.conv` copies the
activations three times per layer. Equal to the generic paths (tests/test_ops.py).
"""

import functools

import keras

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import native_pointwise
from keras_dynconv.ops import portability
from keras_dynconv.ops import torch_weights
from keras_dynconv.ops.taps import output_size_and_padding
from keras_dynconv.ops.taps import pair


# torch's own depthwise weight gradient is the faster one up to this kernel size.
LARGEST_NATIVE_GRADIENT_KERNEL = 3

# Inference runs the per-example convolutions on chunks of examples, not the whole batch
# at once (`scripts/bench_torch_chunks.py`). Depthwise: the input of one chunk is about
# one core's L2 cache (oneDNN's depthwise kernel on the whole batch folded into channels
# is 2-5x slower per example than on a static layer's batch). Pointwise: the combined
# kernels of one chunk stay in the L3 cache.
DEPTHWISE_CHUNK_BYTES = 2 * 2**20
POINTWISE_CHUNK_BYTES = 8 * 2**20


def available(inputs):
    """Whether the convolutions can take this path (torch, not exporting)."""
    return keras.backend.backend() == "torch" and not portability.active()


def correlation_gradient_pays(kernel_size, dilation_rate):
    """Whether the folded depthwise weight gradient should be the correlation: kernels
    larger than `LARGEST_NATIVE_GRADIENT_KERNEL`, undilated."""
    return max(kernel_size) > LARGEST_NATIVE_GRADIENT_KERNEL and pair(dilation_rate) == (1, 1)


def padding_amounts(sizes, kernel_size, strides, dilation_rate, padding):
    """`[(before, after)]` per spatial axis of `sizes`, as TensorFlow pads for
    `padding` ("valid" or "same")."""
    return list(_padding_amounts(
        tuple(sizes), tuple(kernel_size), pair(strides), pair(dilation_rate), padding.lower()
    ))


@functools.lru_cache(maxsize=4096)
def _padding_amounts(sizes, kernel_size, strides, dilation_rate, padding):
    # Cached: every layer asks again on every call.
    return tuple(
        output_size_and_padding(size, kernel, stride, dilation, padding)[1]
        for size, kernel, stride, dilation in zip(sizes, kernel_size, strides, dilation_rate)
    )


def padding_plan(sizes, kernel_size, strides, dilation_rate, padding):
    """`(input_pad, torch_padding)` for images of spatial `sizes`: symmetric "same"
    padding as conv2d's own argument (`input_pad` None), asymmetric padding as
    `(left, right, top, bottom)` to pad the input with first."""
    if padding.lower() != "same":
        return None, [0, 0]
    pads = padding_amounts(sizes, kernel_size, strides, dilation_rate, padding)
    if all(before == after for before, after in pads):
        return None, [before for before, _ in pads]
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom), [0, 0]


def pad_channels_last(nchw, input_pad):
    """`nchw` padded by `input_pad` (from `padding_plan`), in channels-last memory."""
    if input_pad is None:
        return nchw
    import torch
    import torch.nn.functional as functional

    return functional.pad(nchw, input_pad).contiguous(memory_format=torch.channels_last)


def _padding(nchw, kernel_size, strides, dilation_rate, padding):
    """`(nchw, torch_padding)`: symmetric "same" padding as conv2d's argument, asymmetric
    padding applied to the input (channels-last memory kept)."""
    input_pad, torch_padding = padding_plan(
        nchw.shape[2:], kernel_size, strides, dilation_rate, padding
    )
    return pad_channels_last(nchw, input_pad), torch_padding


def _conv2d_on_views(
    nchw, weight, groups, strides, padding, dilation_rate, folded=False, bias=None
):
    """`conv2d` of an NCHW view of channels-last memory; returns NCHW, channels-last memory.

    `folded`: a depthwise convolution of the batch folded into the channels, whose
    weight gradient may be the correlation (module docstring). `bias` `[O]`: added by
    the convolution itself, not as a pass of its own over the output."""
    import torch
    import torch.nn.functional as functional

    strides, dilation_rate = pair(strides), pair(dilation_rate)
    nchw, torch_padding = _padding(nchw, weight.shape[2:], strides, dilation_rate, padding)
    weight = weight.to(nchw.dtype)
    if bias is not None:
        bias = torch_tensor(bias).to(nchw.dtype)
    if (
        folded
        and correlation_gradient_pays(weight.shape[2:], dilation_rate)
        and torch.is_grad_enabled()
        and weight.requires_grad
    ):
        return _folded_depthwise_function().apply(nchw, weight, strides, torch_padding)
    return functional.conv2d(
        nchw,
        weight,
        bias,
        stride=strides,
        padding=torch_padding,
        dilation=dilation_rate,
        groups=groups,
    )


def conv(inputs, kernel, strides, padding, dilation_rate, bias=None):
    """`keras.ops.conv` (2D, channels_last, kernel `[kh, kw, I, O]`), plus `bias` `[O]`
    when given, with no copy of the activations."""
    inputs, kernel = torch_tensor(inputs), torch_tensor(kernel)
    groups = inputs.shape[-1] // kernel.shape[2]
    if tuple(kernel.shape[:2]) == (1, 1) and pair(strides) != (1, 1):
        # A 1x1 kernel reads every stride-th pixel and pads nothing ("same" included).
        # Subsampled first, because torch 2.13's CPU weight gradient of a strided 1x1
        # convolution of channels-last memory is wrong for some shapes (tests/test_ops.py;
        # keras.ops.conv has the same error).
        stride_h, stride_w = pair(strides)
        inputs, strides = inputs[:, ::stride_h, ::stride_w, :], 1
    weight = torch_weights.conv_weight(kernel, inference_available(inputs, kernel))
    outputs = _conv2d_on_views(
        inputs.permute(0, 3, 1, 2), weight, groups, strides, padding, dilation_rate,
        bias=bias,
    )
    return outputs.permute(0, 2, 3, 1)


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, bias=None):
    """`keras.ops.depthwise_conv` (channels_last), plus `bias` `[C*M]` when given, with
    no copy of the activations; for inference at small batches or uneven padding, the
    compiled kernel (`native_depthwise.static_applies`)."""
    inputs, kernel = torch_tensor(inputs), torch_tensor(kernel)
    inference = inference_available(inputs, kernel)
    if bias is not None:
        bias = torch_tensor(bias)
    # The kernel records no gradient, for a bias either.
    if (
        inference
        and (bias is None or not needs_gradient(bias))
        and native_depthwise.static_applies(inputs, kernel, strides, padding, dilation_rate, bias)
    ):
        return native_depthwise.depthwise_conv(
            inputs, kernel, strides, padding, dilation_rate, bias=bias
        )
    weight = torch_weights.depthwise_weight(kernel, inference)
    outputs = _conv2d_on_views(
        inputs.permute(0, 3, 1, 2), weight, kernel.shape[2], strides, padding, dilation_rate,
        bias=bias,
    )
    return outputs.permute(0, 2, 3, 1)


def max_pool(inputs, pool_size, strides, padding):
    """2D max pooling of channels-last `inputs` with symmetric `padding` `[ph, pw]`
    (pads never win), with no copy of the activations."""
    import torch.nn.functional as functional

    inputs = torch_tensor(inputs)
    outputs = functional.max_pool2d(
        inputs.permute(0, 3, 1, 2), pool_size, stride=strides, padding=padding
    )
    return outputs.permute(0, 2, 3, 1)


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate):
    inputs, kernels = torch_tensor(inputs), torch_tensor(kernels)
    inference = inference_available(inputs, kernels)
    if inference and native_depthwise.applies(inputs, kernels):
        return native_depthwise.per_example_depthwise_conv(
            inputs, kernels, strides, padding, dilation_rate
        )
    batch, _, _, channels = inputs.shape
    kernel_h, kernel_w, _, multiplier = kernels.shape[1:]
    # Group b*C + c writes outputs (b*C + c)*M + m with kernels[b, :, :, c, m].
    weight = kernels.permute(0, 3, 4, 1, 2).reshape(
        batch * channels * multiplier, 1, kernel_h, kernel_w
    )
    if not inference:
        outputs = _folded_depthwise_conv(inputs, weight, strides, padding, dilation_rate)
        return outputs.permute(2, 0, 1, 3).contiguous()
    import torch

    chunk = _chunk_size(inputs[0].numel() * inputs.element_size(), batch, DEPTHWISE_CHUNK_BYTES)
    weights_per_example = channels * multiplier
    outputs = None
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        part = _folded_depthwise_conv(
            inputs[start:stop],
            weight[start * weights_per_example:stop * weights_per_example],
            strides, padding, dilation_rate,
        )
        if outputs is None:
            outputs = torch.empty(
                (batch,) + tuple(part.shape[:2]) + (part.shape[3],),
                dtype=part.dtype, device=part.device,
            )
        # Copied while the chunk's output is still in cache.
        outputs[start:stop].copy_(part.permute(2, 0, 1, 3))
    return outputs


def _folded_depthwise_conv(inputs, weight, strides, padding, dilation_rate):
    """`[H', W', B, C*M]` (a view): the depthwise convolution of `inputs` `[B, H, W, C]`
    folded into one image of B*C channels, with `weight` `[B*C*M, 1, kh, kw]`."""
    batch, height, width, channels = inputs.shape
    # [1, B*C, H, W] as a view of channels-last memory, channel b*C + c; a copy unless
    # B is 1.
    folded = inputs.permute(1, 2, 0, 3).reshape(1, height, width, batch * channels)
    outputs = _conv2d_on_views(
        folded.permute(0, 3, 1, 2), weight, batch * channels, strides, padding,
        dilation_rate, folded=True,
    )
    out_h, out_w = outputs.shape[2], outputs.shape[3]
    return outputs.permute(0, 2, 3, 1).reshape(out_h, out_w, batch, -1)


def pointwise_conv_of_experts(inputs, experts, routing_weights, bias=None):
    """`[B, H, W, O]`: the 1x1 convolution of each example `inputs[b]` `[H, W, I]` with
    its kernel `sum_e routing_weights[b, e] * experts[e]` (`experts` `[E, 1, 1, I, O]`),
    plus `bias` `[O]` when given (in the same pass), for inference.

    Where `native_pointwise.applies`, the compiled kernel, which never writes the
    combined kernels to memory (28 MB per layer of CondConv-EfficientNet-B0's 7x7 stage
    at batch 32). Otherwise they are made and used chunk by chunk in one buffer that
    stays in the cache, instead of being written for the whole batch and read back.
    """
    import torch

    inputs, experts, routing_weights = (
        torch_tensor(tensor) for tensor in (inputs, experts, routing_weights)
    )
    if native_pointwise.applies(inputs, experts, routing_weights):
        return native_pointwise.pointwise_conv_of_experts(
            inputs, experts, routing_weights, bias=bias
        )
    batch, height, width, in_channels = inputs.shape
    num_experts, out_channels = experts.shape[0], experts.shape[-1]
    flat_experts = experts.reshape(num_experts, in_channels * out_channels)
    pixels = inputs.reshape(batch, height * width, in_channels)
    kernel_bytes = flat_experts[0].numel() * flat_experts.element_size()
    chunk = _chunk_size(kernel_bytes, batch, POINTWISE_CHUNK_BYTES)
    kernels = torch.empty(
        (chunk, in_channels * out_channels), dtype=inputs.dtype, device=inputs.device
    )
    outputs = torch.empty(
        (batch, height * width, out_channels), dtype=inputs.dtype, device=inputs.device
    )
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        size = stop - start
        torch.mm(routing_weights[start:stop], flat_experts, out=kernels[:size])
        if bias is None:
            torch.bmm(
                pixels[start:stop],
                kernels[:size].view(size, in_channels, out_channels),
                out=outputs[start:stop],
            )
        else:
            torch.baddbmm(
                bias, pixels[start:stop], kernels[:size].view(size, in_channels, out_channels),
                out=outputs[start:stop],
            )
    return outputs.view(batch, height, width, out_channels)


def inference_available(*tensors):
    """Whether the chunked inference paths apply to these tensors: torch on a CPU (the
    chunks are sized for its caches), one dtype, not exporting, not under
    `torch.compile` (which fuses the whole-batch path itself), no gradient wanted."""
    if not available(tensors[0]):
        return False
    import torch

    tensors = [torch_tensor(tensor) for tensor in tensors]
    return (
        all(tensor.device.type == "cpu" for tensor in tensors)
        and len({tensor.dtype for tensor in tensors}) == 1
        and not torch.compiler.is_compiling()
        and not needs_gradient(*tensors)
    )


def torch_tensor(value):
    """`keras.ops.convert_to_tensor(value)` on torch, without its cost (5-11 µs, more
    than many convolutions at batch 1) for what the layers pass: a tensor already on
    Keras' device is itself, a Keras variable its value."""
    torch, get_device = _torch_and_get_device()
    if isinstance(value, keras.Variable):
        value = value.value
    if isinstance(value, torch.Tensor) and value.device == _torch_device(get_device()):
        return value
    return keras.ops.convert_to_tensor(value)


@functools.cache
def _torch_and_get_device():
    # Once: an import statement in `torch_tensor` would cost as much as the rest of it.
    import torch
    from keras.src.backend.torch.core import get_device  # where convert_to_tensor moves

    return torch, get_device


@functools.lru_cache(maxsize=16)
def _torch_device(name):
    import torch

    return torch.device(name)


def needs_gradient(*tensors):
    """Whether autograd records an op on these torch tensors."""
    import torch

    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


def _chunk_size(bytes_per_example, batch, chunk_bytes):
    """Examples per chunk: as many as fit in `chunk_bytes`, at least one."""
    return max(1, min(batch, chunk_bytes // max(1, bytes_per_example)))


@functools.cache
def _folded_depthwise_function():
    """The folded depthwise convolution (`[1, G, H, W]`, `groups = G`) as a
    `torch.autograd.Function` whose weight gradient is `correlation_weight_gradient`."""
    import torch
    import torch.nn.functional as functional

    class FoldedDepthwiseConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, weight, strides, padding):
            ctx.save_for_backward(inputs, weight)
            ctx.strides, ctx.padding = strides, padding
            return functional.conv2d(
                inputs, weight, stride=strides, padding=padding, groups=inputs.shape[1]
            )

        @staticmethod
        def backward(ctx, output_gradient):
            inputs, weight = ctx.saved_tensors
            input_gradient = weight_gradient = None
            if ctx.needs_input_grad[0]:
                input_gradient = torch.ops.aten.convolution_backward(
                    output_gradient, inputs, weight, None, list(ctx.strides),
                    list(ctx.padding), [1, 1], False, [0, 0], inputs.shape[1],
                    [True, False, False],
                )[0]
            if ctx.needs_input_grad[1]:
                weight_gradient = correlation_weight_gradient(
                    inputs, output_gradient, weight.shape[2:], ctx.strides, ctx.padding
                )
            return input_gradient, weight_gradient, None, None

    return FoldedDepthwiseConv


def correlation_weight_gradient(inputs, output_gradient, kernel_size, strides, padding):
    """`[G*M, 1, kh, kw]`: the weight gradient of a depthwise convolution of one image
    `inputs` `[1, G, H, W]` (M outputs per channel).

    `dW[g*M + m, 0, i, j] = sum_(h, w) padded[0, g, h*sh + i, w*sw + j] * dY[0, g*M + m, h, w]`:
    the padded input (each channel repeated M times) convolved with the output gradient
    as a depthwise filter, dilated by the stride.
    """
    import torch.nn.functional as functional

    (kernel_h, kernel_w), (pad_h, pad_w) = kernel_size, padding
    multiplier = output_gradient.shape[1] // inputs.shape[1]
    padded = functional.pad(inputs, (pad_w, pad_w, pad_h, pad_h)) if pad_h or pad_w else inputs
    if multiplier > 1:
        padded = padded.repeat_interleave(multiplier, dim=1)
    correlation = functional.conv2d(
        padded, output_gradient.transpose(0, 1), dilation=strides, groups=padded.shape[1]
    )
    # Rows past the kernel's are windows the forward pass never reached.
    return correlation[:, :, :kernel_h, :kernel_w].transpose(0, 1).contiguous()
