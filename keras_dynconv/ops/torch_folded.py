"""Convolutions with the batch normalisation that follows them folded in, prepared once
for inference on torch.

In inference a batch normalisation is `x * gain + shift` per channel, with
`gain = gamma / sqrt(variance + epsilon)` and `shift = beta - mean * gain`. After a
convolution it can be folded into the convolution: the kernel's output channels
multiplied by `gain`, and `shift` (plus the convolution's bias times `gain`) added as
its bias, which torch's and the native kernels add while they write the output. That
saves one pass over every normalised activation: EfficientNet-B0's 49 normalisations
took 59 ms of 376 ms per batch of 32 on eager torch on this project's 2-core CPU.
CondConv's experts fold the same way: the combined kernel of `gain * W_e` is `gain`
times the combined kernel. `keras_dynconv.layers.folded_block` folds a MoD block's inner
layers with the same functions.

The functions here make the folded weights once (`keras_dynconv.layers.prepared_calls`
keeps them while the weights are unchanged) and return functions of the input. The
results equal the convolution followed by the normalisation up to float rounding
(tests/test_folded_normalization.py).
"""

from keras_dynconv.ops import native_depthwise
from keras_dynconv.ops import torch_conv
from keras_dynconv.ops.torch_prepared import prepared_conv


def gain_and_shift(mean, variance, offset, scale, epsilon):
    """`(gain, shift)`, float64 torch tensors `[C]`, of an inference batch normalisation
    `x * gain + shift` with these statistics and (possibly None) `offset` (beta) and
    `scale` (gamma). Float64, so that folding adds no rounding of its own."""
    def value(variable):
        return torch_conv.torch_tensor(variable).detach().double()

    gain = (value(variance) + epsilon).rsqrt()
    if scale is not None:
        gain = gain * value(scale)
    shift = -value(mean) * gain
    if offset is not None:
        shift = shift + value(offset)
    return gain, shift


def layer_gain_and_shift(layer):
    """`gain_and_shift` of a Keras `BatchNormalization` layer's moving statistics."""
    return gain_and_shift(
        layer.moving_mean, layer.moving_variance, layer.beta if layer.center else None,
        layer.gamma if layer.scale else None, layer.epsilon,
    )


def folded_kernel_and_bias(kernel, bias, gain, shift, depthwise=False):
    """`(kernel, bias)` of a convolution (`kernel` `[..., O]`, or `[kh, kw, C, M]` with
    `depthwise`; `bias` `[O]` or None) followed by `x * gain + shift`: detached torch
    tensors of the kernel's dtype."""
    kernel = torch_conv.torch_tensor(kernel).detach()
    # A depthwise kernel's output channel c * M + m comes from kernel[..., c, m].
    factor = gain.reshape(kernel.shape[-2:]) if depthwise else gain
    if bias is not None:
        shift = shift + torch_conv.torch_tensor(bias).detach().double() * gain
    return (kernel.double() * factor).to(kernel.dtype), shift.to(kernel.dtype)


def prepared_folded_conv(inputs, kernel, bias, strides, padding, dilation_rate, gain, shift,
                         depthwise=False):
    """A static convolution (`kernel` `[kh, kw, I, O]`, or `[kh, kw, C, M]` with
    `depthwise`; `bias` `[O]` or None) followed by the normalisation `x * gain + shift`
    (`gain_and_shift`), as one `torch_prepared.prepared_conv` of inputs like `inputs`."""
    kernel, bias = folded_kernel_and_bias(kernel, bias, gain, shift, depthwise=depthwise)
    return prepared_conv(
        inputs, kernel, strides, padding, dilation_rate, bias=bias, depthwise=depthwise
    )


def prepared_folded_pointwise_experts(inputs, experts, gain, shift):
    """A CondConv 1x1 convolution of experts `[E, 1, 1, I, O]` (stride 1) followed by
    the normalisation, as a function `(x, routing_weights)` for inputs like `inputs`
    (`torch_conv.pointwise_conv_of_experts` with the folded experts and the shift as
    its bias); None where that path does not take them."""
    import torch

    experts = torch_conv.torch_tensor(experts).detach()
    if not torch_conv.inference_available(inputs, experts):
        return None
    folded, bias = folded_kernel_and_bias(experts, None, gain, shift)
    # A parameter, as a layer's weight is: the native kernel keeps its packed copy.
    folded = torch.nn.Parameter(folded, requires_grad=False)

    def run(x, routing_weights):
        return torch_conv.pointwise_conv_of_experts(x, folded, routing_weights, bias=bias)

    return run


def prepared_folded_depthwise_experts(inputs, experts, strides, padding, dilation_rate,
                                      gain, shift):
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
    num_experts, kernel_shape = experts.shape[0], tuple(experts.shape[1:])
    folded, bias = folded_kernel_and_bias(experts, None, gain, shift, depthwise=True)
    folded = folded.reshape(num_experts, -1)

    def run(x, routing_weights):
        kernels = torch.mm(routing_weights, folded).view((x.shape[0],) + kernel_shape)
        return native_depthwise.per_example_depthwise_conv(
            x, kernels, strides, padding, dilation_rate, bias=bias
        )

    return run
