"""A compiled 1x1 convolution whose kernel for every example is combined from experts,
for torch inference on CPUs.

A CondConv 1x1 layer multiplies example b's pixels by `sum_e routing[b, e] * experts[e]`.
On torch the kernels are combined by a matrix product and applied by a batched one
(`torch_conv.pointwise_conv_of_experts`): at CondConv-EfficientNet-B0's 7x7 stage at
batch 32 the combined kernels are 28 MB per layer, written and read back, and those 1x1
layers cost 2-3x their static twins (most of the model's excess over EfficientNet-B0 on
eager torch). `native/pointwise_of_experts.c` combines each tile of a kernel in the
cache and multiplies by it at once, the experts read once per batch: at batch 32
1.15-1.3x the static layer at 7x7 where torch's path took 1.6-2.5x, and at batch 1
0.5-0.8x the static layer (`python scripts/bench_native_depthwise.py --pointwise`). A
layer's experts are read from a copy packed in the order the combination reads them
(`torch_weights.packed_experts`, made once per weight value: as much memory again as
the 1x1 experts, 77 MiB for CondConv-EfficientNet-B0), a quarter faster than reading
them in place. Each block of output channels reads the inputs again, from memory once
they outgrow the cache, so many pixels of large inputs stay on torch's path (`applies`;
at 14x14 the two are within 10% of each other).

Built and loaded with the depthwise kernel (`native_depthwise.library`: the same cache,
compiler, `KERAS_DYNCONV_NATIVE` switch and OpenMP rule). Equal to the batched product
(tests/test_native_pointwise.py). TensorFlow runs the same kernel as an op
(`native_tensorflow`), under the same shape rule (`shape_applies`).
"""

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import torch_weights

# The kernel takes whole vectors of output channels (4, 8 or 16 floats by instruction set).
CHANNEL_MULTIPLE = 16
# Past this many pixels per example, and inputs of more than `MAX_INPUT_BYTES`, each
# block of output channels reads the inputs from memory again, and torch's batched
# product is as fast (`python scripts/bench_native_depthwise.py --pointwise`).
MAX_PIXELS = 64
MAX_INPUT_BYTES = 8 * 2**20


def applies(inputs, experts, routing_weights):
    """Whether `pointwise_conv_of_experts` takes these torch tensors (the caller has
    checked `torch_conv.inference_available`): float32, whole vectors of output
    channels, few pixels or small inputs, and the kernel built and loaded."""
    import torch

    return (
        all(t.dtype == torch.float32 for t in (inputs, experts, routing_weights))
        and shape_applies(tuple(inputs.shape), experts.shape[-1])
        and native_depthwise.enabled()
        and native_depthwise.library() is not None
    )


def shape_applies(input_shape, out_channels):
    """Whether the kernel is used for float32 inputs of `input_shape` `[B, H, W, I]` and
    `out_channels` outputs (on torch and TensorFlow alike): whole vectors of output
    channels, and at most `MAX_PIXELS` pixels per example or `MAX_INPUT_BYTES` of
    inputs."""
    batch, height, width, in_channels = input_shape
    return (
        out_channels % CHANNEL_MULTIPLE == 0
        and in_channels > 0
        and (
            height * width <= MAX_PIXELS
            or batch * height * width * in_channels * 4 <= MAX_INPUT_BYTES
        )
    )


def pointwise_conv_of_experts(inputs, experts, routing_weights, bias=None):
    """`[B, H, W, O]`: each example of `inputs` `[B, H, W, I]` times its kernel
    `sum_e routing_weights[b, e] * experts[e]` (`experts` `[E, 1, 1, I, O]`), plus
    `bias` `[O]` when given, as `torch_conv.pointwise_conv_of_experts`."""
    import torch

    library = native_depthwise.library()
    columns = library.pointwise_block_columns()
    batch, height, width, in_channels = inputs.shape
    num_experts, out_channels = experts.shape[0], experts.shape[-1]
    if out_channels % (columns // 2):
        raise ValueError(
            f"the native 1x1 convolution takes whole vectors of output channels; received "
            f"{out_channels} (check `applies` first)"
        )
    # A layer's weights: packed once (a copy as large as the experts), kept while unchanged.
    layout = torch_weights.packed_experts(experts, columns)
    if layout is not None:
        strides = (in_channels * num_experts * columns, num_experts * columns, columns)
    else:
        layout = experts.detach().contiguous()
        strides = (columns, out_channels, in_channels * out_channels)
    inputs, routing_weights = (t.detach().contiguous() for t in (inputs, routing_weights))
    if bias is not None:
        bias = bias.detach().contiguous()
    outputs = torch.empty(
        (batch, height, width, out_channels), dtype=inputs.dtype, device=inputs.device
    )
    if outputs.numel() == 0:
        return outputs
    failed = library.pointwise_of_experts(
        inputs.data_ptr(), layout.data_ptr(), *strides, routing_weights.data_ptr(),
        None if bias is None else bias.data_ptr(), outputs.data_ptr(),
        batch, height * width, in_channels, out_channels, num_experts,
        torch.get_num_threads(),
    )
    if failed:
        raise MemoryError("the native 1x1 convolution could not allocate its buffers")
    return outputs
