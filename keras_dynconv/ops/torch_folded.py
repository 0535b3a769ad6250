"""Convolutions with the batch normalisation that follows them folded in, prepared once
for inference on torch.

In inference a batch normalisation is `x * scale + shift` per channel, with
`scale = gamma / sqrt(variance + epsilon)` and `shift = beta - mean * scale`. After a
convolution it can be folded into the convolution: the kernel's output channels
multiplied by `scale`, and `shift` (plus the convolution's bias times `scale`) added as
its bias, which torch's and the native kernels add while they write the output. That
saves one pass over every normalised activation: EfficientNet-B0's 49 normalisations
took 59 ms of 376 ms per batch of 32 on eager torch on this project's 2-core CPU.
CondConv's experts fold the same way: the combined kernel of `scale * W_e` is `scale`
times the combined kernel.

The functions here make the folded weights once (`keras_dynconv.layers.prepared_calls`
keeps them while the weights are unchanged) and return functions of the input. The
results equal the convolution followed by the normalisation up to float rounding
(tests/test_folded_normalization.py).
"""

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import torch_conv
from keras_dynconv.ops.torch_prepared import prepared_conv


def scale_and_shift(mean, variance, offset, scale, epsilon):
    """`(scale, shift)` float32 torch tensors `[C]` of an inference batch normalisation
    with these statistics and (possibly None) `offset` (beta) and `scale` (gamma)."""
    import torch

    def tensor(value):
        return torch_conv.torch_tensor(value).detach().to(torch.float32)

    factor = torch.rsqrt(tensor(variance) + epsilon)
    if scale is not None:
        factor = factor * tensor(scale)
    shift = -tensor(mean) * factor
    if offset is not None:
        shift = shift + tensor(offset)
    return factor, shift


def prepared_folded_conv(inputs, kernel, bias, strides, padding, dilation_rate, scale, shift,
                         depthwise=False):
    """A static convolution (`kernel` `[kh, kw, I, O]`, or `[kh, kw, C, M]` with
    `depthwise`; `bias` `[O]` or None) followed by the normalisation `x * scale + shift`
    (`scale_and_shift`), as one `torch_prepared.prepared_conv` of inputs like `inputs`."""
    kernel = torch_conv.torch_tensor(kernel).detach()
    if depthwise:
        # Output channel c * M + m comes from kernel[..., c, m].
        factor = scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        factor = scale
    folded_bias = shift if bias is None else shift + torch_conv.torch_tensor(bias).detach() * scale
    return prepared_conv(
        inputs, kernel * factor, strides, padding, dilation_rate, bias=folded_bias,
        depthwise=depthwise,
    )


def prepared_folded_pointwise_experts(inputs, experts, scale, shift):
    """A CondConv 1x1 convolution of experts `[E, 1, 1, I, O]` (stride 1) followed by
    the normalisation, as a function `(x, routing_weights)` for inputs like `inputs`
    (`torch_conv.pointwise_conv_of_experts` with the folded experts and the shift as
    its bias); None where that path does not take them."""
    import torch

    experts = torch_conv.torch_tensor(experts).detach()
    if not torch_conv.inference_available(inputs, experts):
        return None
    # A parameter, as a layer's weight is: the native kernel keeps its packed copy.
    folded = torch.nn.Parameter(experts * scale, requires_grad=False)
    bias = shift.to(experts.dtype)

    def run(x, routing_weights):
        return torch_conv.pointwise_conv_of_experts(x, folded, routing_weights, bias=bias)

    return run


def prepared_folded_depthwise_experts(inputs, experts, strides, padding, dilation_rate,
                                      scale, shift):
    """A CondConv depthwise convolution of experts `[E, kh, kw, C, 1]` followed by the
    normalisation, as a function `(x, routing_weights)` for inputs like `inputs`: the
    examples' kernels combined from the folded experts by one matrix product, then the
    native per-example kernel, which adds the shift; None where that kernel does not
    take them."""
    import torch

    experts = torch_conv.torch_tensor(experts).detach()
    if not (
        torch_conv.inference_available(inputs, experts)
        and native_depthwise.applies(inputs, experts)
    ):
        return None
    num_experts = experts.shape[0]
    folded = (experts * scale.reshape(-1, 1)).reshape(num_experts, -1)
    bias = shift.to(experts.dtype)
    kernel_shape = tuple(experts.shape[1:])

    def run(x, routing_weights):
        kernels = torch.mm(routing_weights, folded).view((x.shape[0],) + kernel_shape)
        return native_depthwise.per_example_depthwise_conv(
            x, kernels, strides, padding, dilation_rate, bias=bias
        )

    return run
