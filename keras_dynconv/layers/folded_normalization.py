"""A convolution layer and the batch normalisation after it, run as one for inference on
torch.

`keras_dynconv.zoo.graph_plan` finds, in a zoo model's graph, each convolution whose only
consumer is a `BatchNormalization` (`foldable`), and calls the pair as one
`NormalizedConvolution` where `direct_calls.folded_call` allows: eager torch inference,
float32 layers without autocast. Its prepared function folds the normalisation into the
convolution's weights (`keras_dynconv.ops.torch_folded`), kept by
`keras_dynconv.layers.prepared_calls` while both layers' weights are unchanged, so the
normalised activations are written once instead of twice. Convolutions it takes: the
zoo's `Conv2D` and `DepthwiseConv2D` (their own convolution, channels last, no
activation), and `CondConv2D` with 1x1 kernels and `CondDepthwiseConv2D` (per-example,
no bias, no activation). Where the normalisation's only reader is a ReLU, ReLU6 or
swish layer, the pair takes that too and applies it in place on the output it has just
written (`inplace_activation`): a new output of 50-150 MB, as EfficientNet-B0's first
layers write at batch 32, costs more in page faults than the activation's arithmetic
(swish on 32x112x112x32: 27 ms into a new tensor, 4 ms in place). Equal to the layers'
calls up to float rounding (tests/test_folded_normalization.py).
"""

import keras

from keras_dynconv.layers.cond_conv import CondConv2D
from keras_dynconv.layers.cond_conv import CondDepthwiseConv2D
from keras_dynconv.layers.conv2d import Conv2D
from keras_dynconv.layers.conv2d import own_convolution_op
from keras_dynconv.layers.conv2d import convolution_variables
from keras_dynconv.layers.depthwise_conv import DepthwiseConv2D
from keras_dynconv.layers.normalization import BatchNormalization
from keras_dynconv.ops import torch_folded

_EXPERT_LAYERS = (CondConv2D, CondDepthwiseConv2D)


def foldable(convolution, normalization):
    """Whether `normalization` can be folded into `convolution` (both layers, built):
    see the module docstring; a normalisation along the channels of 4D inputs."""
    if type(normalization) is not BatchNormalization or normalization.axis not in (-1, 3):
        return False
    if not (convolution.built and normalization.built):
        return False
    linear = convolution.activation in (None, keras.activations.linear)
    if type(convolution) in (Conv2D, DepthwiseConv2D):
        return (
            linear
            and convolution.data_format == "channels_last"
            and (type(convolution) is DepthwiseConv2D or own_convolution_op(convolution))
        )
    if type(convolution) in _EXPERT_LAYERS:
        pointwise = type(convolution) is CondConv2D and (
            convolution.kernel_size == (1, 1) and convolution.strides == (1, 1)
        )
        return (
            linear
            and not convolution.use_bias
            and convolution.strategy in ("auto", "per_example")
            and (pointwise or type(convolution) is CondDepthwiseConv2D)
        )
    return False


def inplace_activation(layer):
    """The torch function that computes the Keras `Activation` or `ReLU` layer `layer`
    in place on its input, or None for other layers and activations."""
    import torch
    import torch.nn.functional as functional

    if type(layer) is keras.layers.ReLU:
        plain = layer.max_value is None and not layer.negative_slope and not layer.threshold
        return torch.relu_ if plain else None
    if type(layer) is not keras.layers.Activation:
        return None
    return {
        keras.activations.relu: torch.relu_,
        keras.activations.silu: lambda x: functional.silu(x, inplace=True),
        keras.activations.relu6: lambda x: functional.hardtanh_(x, 0.0, 6.0),
    }.get(layer.activation)


class NormalizedConvolution:
    """`convolution` followed by `normalization` (and the `activation` layer, if given)
    for inference, with a prepared function that folds the normalisation in
    (`keras_dynconv.layers.prepared_calls`).

    `call(inputs, routing_weights)` is the layers' own calls, one after the other; the
    prepared function takes the same arguments (the routing weights of a CondConv layer,
    else None)."""

    def __init__(self, convolution, normalization, activation=None):
        self.convolution = convolution
        self.normalization = normalization
        self.activation = activation

    @property
    def layers(self):
        """The layers the pair computes, in order."""
        return [self.convolution, self.normalization] + (
            [self.activation] if self.activation is not None else []
        )

    @property
    def experts(self):
        """Whether the convolution is a CondConv layer (it takes routing weights)."""
        return type(self.convolution) in _EXPERT_LAYERS

    def call(self, inputs, routing_weights=None):
        if self.experts:
            outputs = self.convolution.call(inputs, routing_weights=routing_weights)
        else:
            outputs = self.convolution.call(inputs)
        outputs = self.normalization.call(outputs, training=False)
        return outputs if self.activation is None else self.activation.call(outputs)

    def prepared_variables(self):
        """The variables `prepared_inference` reads."""
        convolution = self.convolution
        variables = [convolution.kernel] if self.experts else convolution_variables(convolution)
        return variables + self.normalization.prepared_variables()

    def prepared_inference(self, inputs):
        """The pair's inference on float32 inputs like `inputs`, as a function
        `(x, routing_weights)`; None where it does not fold (`torch_folded` says)."""
        run = self._prepared_normalized(inputs)
        activate = inplace_activation(self.activation) if self.activation is not None else None
        if run is None or activate is None:
            return run
        return lambda x, routing_weights=None: activate(run(x, routing_weights))

    def _prepared_normalized(self, inputs):
        import torch

        convolution, normalization = self.convolution, self.normalization
        if inputs.dtype != torch.float32 or any(
            variable.dtype != "float32" for variable in self.prepared_variables()
        ):
            return None
        gain, shift = torch_folded.layer_gain_and_shift(normalization)
        if type(convolution) is CondConv2D:
            return torch_folded.prepared_folded_pointwise_experts(
                inputs, convolution.kernel, gain, shift
            )
        if type(convolution) is CondDepthwiseConv2D:
            return torch_folded.prepared_folded_depthwise_experts(
                inputs, convolution.kernel, convolution.strides, convolution.padding,
                convolution.dilation_rate, gain, shift,
            )
        run = torch_folded.prepared_folded_conv(
            inputs, convolution.kernel, convolution.bias if convolution.use_bias else None,
            convolution.strides, convolution.padding, convolution.dilation_rate, gain, shift,
            depthwise=type(convolution) is DepthwiseConv2D,
        )
        return lambda x, routing_weights=None: run(x)
