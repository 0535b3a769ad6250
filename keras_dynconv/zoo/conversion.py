"""Which layers of a zoo network are dynamic, and the one factory that builds them.

Every family builder asks a `LayerFactory` for its convolutions, batch norms and
classifier; the factory's `Conversion` decides whether a layer is a static Keras
layer or a CondConv / dynamic / sparse dynamic one. A variant of an architecture is
therefore a different `Conversion`, never a copied builder.
"""

import dataclasses

import keras

from keras_dynconv import layers as dynamic_layers
from keras_dynconv.layers import validation

LAYER_KINDS = ("static", "condconv", "dynamic", "sparse")
PADDING_STYLES = ("same", "symmetric")
# The layer each conversion kind uses for a convolution and a depthwise convolution.
CONV_LAYERS = {
    "static": dynamic_layers.Conv2D,
    "condconv": dynamic_layers.CondConv2D,
    "dynamic": dynamic_layers.DynamicConv2D,
    "sparse": dynamic_layers.SparseDynamicConv2D,
}
DEPTHWISE_LAYERS = {
    "static": dynamic_layers.DepthwiseConv2D,  # Keras' layer with the fast paths
    "condconv": dynamic_layers.CondDepthwiseConv2D,
    "dynamic": dynamic_layers.DynamicDepthwiseConv2D,
    "sparse": dynamic_layers.SparseDynamicDepthwiseConv2D,
}
# Builder arguments a static variant hides: it has no experts to configure.
STATIC_KNOBS = dict(num_experts=None, routing=None, strategy=None)


@dataclasses.dataclass(frozen=True)
class Conversion:
    """The dynamic layers of a network.

    Attributes:
        kind: "static", "condconv" (CondConv2D, routing shared per block),
            "dynamic" (DynamicConv2D, softmax attention per layer) or "sparse"
            (SparseDynamicConv2D).
        num_experts: experts per CondConv layer, or kernels K per dynamic layer.
        first_block: index of the first converted block in the network's flat list
            of blocks; negative counts from the end (-6: the last six blocks).
        first_group: instead of `first_block`, the first converted block group of
            a block table; negative counts from the end (-3: the last three groups,
            whatever the depth multiplier makes of their repeats).
        head_conv: convert the 1x1 convolution before global pooling.
        classifier: convert the classifier (CondDense with its own routing).
        shortcut: convert ResNet projection shortcuts.
        routing: CondConv routing activation.
        strategy: "auto", "per_example" or "mixture" (see `CondConv2D`).
        reduction: attention reduction of dynamic / sparse layers.
        target_density: initial target of sparse layers.
    """

    kind: str = "static"
    num_experts: int = 8
    first_block: int = 0
    first_group: object = None
    head_conv: bool = False
    classifier: bool = False
    shortcut: bool = False
    routing: str = "sigmoid"
    strategy: str = "auto"
    reduction: int = 4
    target_density: float = 0.5

    def __post_init__(self):
        validation.one_of("kind", self.kind, LAYER_KINDS)
        validation.positive_int("num_experts", self.num_experts)
        validation.positive_int("reduction", self.reduction)
        validation.one_of("strategy", self.strategy, ("auto", "per_example", "mixture"))
        validation.one_of(
            "routing", self.routing, dynamic_layers.routing.ROUTING_ACTIVATIONS
        )
        validation.density("target_density", self.target_density)

    def with_overrides(self, **overrides):
        """A copy with the given fields replaced; `None` values are ignored."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **given) if given else self

    @property
    def is_static(self):
        return self.kind == "static"

    def converts_block(self, index, num_blocks, group=None, num_groups=None):
        """Whether block `index` (of `num_blocks`, in `group` of `num_groups`) is dynamic."""
        if self.is_static:
            return False
        if self.first_group is not None:
            return group >= _from_start(self.first_group, num_groups)
        return index >= _from_start(self.first_block, num_blocks)


def _from_start(index, length):
    return max(index if index >= 0 else length + index, 0)


# CondConv paper, Appendix A (EfficientNet-B0, MnasNet-A1): the final three block
# groups are CondConv, routing shared within each block; SE, stem, head and
# classifier stay static.
CONDCONV_LAST_THREE_GROUPS = Conversion(kind="condconv", first_group=-3)


class LayerFactory:
    """Builds the layers of one network in the style of its reference.

    Args:
        conversion: a `Conversion`.
        padding: "same" (TensorFlow's, asymmetric for stride 2, as
            keras.applications and the official TF models) or "symmetric"
            (k // 2 on each side, as PyTorch and timm's non-`tf_` models).
        bn_epsilon, bn_momentum: of every BatchNormalization.
        kernel_initializer: of every convolution.
        dense_initializer: of the classifier.
    """

    def __init__(
        self,
        conversion=Conversion(),
        padding="same",
        bn_epsilon=1e-3,
        bn_momentum=0.99,
        kernel_initializer="glorot_uniform",
        dense_initializer="glorot_uniform",
    ):
        self.conversion = conversion
        self.padding = validation.one_of("padding", padding, PADDING_STYLES)
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.kernel_initializer = kernel_initializer
        self.dense_initializer = dense_initializer

    # --- routing --------------------------------------------------------------
    def block_routing(self, inputs, name):
        """CondConv's routing shared by a block's convolutions, or None.

        Only CondConv shares routing within a block (CondConv paper, Sec. 4 and
        Appendix A); dynamic and sparse layers each compute their own attention.
        """
        if self.conversion.kind != "condconv":
            return None
        return dynamic_layers.Routing(
            self.conversion.num_experts, activation=self.conversion.routing, name=name
        )(inputs)

    # --- convolutions ---------------------------------------------------------
    def _pad(self, inputs, kernel_size, strides, name):
        """Explicit symmetric padding for strided convs; returns (inputs, padding)."""
        if self.padding == "same" or strides == 1 or kernel_size == 1:
            return inputs, "same"
        pad = kernel_size // 2
        return keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(inputs), "valid"

    def _dynamic_arguments(self, routing_weights):
        conversion = self.conversion
        arguments = dict(strategy=conversion.strategy)
        if conversion.kind == "condconv":
            arguments.update(
                num_experts=conversion.num_experts,
                routing=None if routing_weights is not None else conversion.routing,
            )
        else:
            arguments.update(num_kernels=conversion.num_experts, reduction=conversion.reduction)
        if conversion.kind == "sparse":
            arguments["target_density"] = conversion.target_density
        return arguments

    def _apply(self, layer_classes, positional, arguments, inputs, dynamic, routing_weights):
        kind = self.conversion.kind if dynamic else "static"
        if kind != "static":
            arguments = {**arguments, **self._dynamic_arguments(routing_weights)}
        layer = layer_classes[kind](*positional, **arguments)
        if routing_weights is None:
            return layer(inputs)
        return layer(inputs, routing_weights=routing_weights)

    def conv(
        self,
        inputs,
        filters,
        kernel_size,
        name,
        strides=1,
        dynamic=False,
        routing_weights=None,
        use_bias=False,
        activation=None,
    ):
        """A 2D convolution, dynamic when `dynamic` and the conversion is not static."""
        inputs, padding = self._pad(inputs, kernel_size, strides, name)
        arguments = dict(
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=self.kernel_initializer,
            name=name,
        )
        return self._apply(
            CONV_LAYERS, (filters, kernel_size), arguments, inputs, dynamic, routing_weights
        )

    def depthwise(
        self, inputs, kernel_size, name, strides=1, dynamic=False, routing_weights=None
    ):
        """A depthwise convolution (no bias), dynamic as `conv`."""
        inputs, padding = self._pad(inputs, kernel_size, strides, name)
        # keras.layers.DepthwiseConv2D names its kernel initializer differently.
        initializer = "kernel" if dynamic and not self.conversion.is_static else "depthwise"
        arguments = {
            "strides": strides,
            "padding": padding,
            "use_bias": False,
            f"{initializer}_initializer": self.kernel_initializer,
            "name": name,
        }
        return self._apply(
            DEPTHWISE_LAYERS, (kernel_size,), arguments, inputs, dynamic, routing_weights
        )

    def batch_norm(self, inputs, name):
        return dynamic_layers.BatchNormalization(
            epsilon=self.bn_epsilon, momentum=self.bn_momentum, name=name
        )(inputs)

    def classifier(self, inputs, classes, activation, name="predictions"):
        """The final dense layer: `CondDense` with its own routing when converted."""
        if self.conversion.classifier and not self.conversion.is_static:
            return dynamic_layers.CondDense(
                classes,
                num_experts=self.conversion.num_experts,
                routing=self.conversion.routing,
                strategy=self.conversion.strategy,
                use_bias=True,
                activation=activation,
                kernel_initializer=self.dense_initializer,
                name=name,
            )(inputs)
        return keras.layers.Dense(
            classes,
            activation=activation,
            kernel_initializer=self.dense_initializer,
            name=name,
        )(inputs)
