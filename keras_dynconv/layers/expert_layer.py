"""The one base class of every conditionally parameterized layer.

It owns what CondConv, dynamic and sparse dynamic layers share: E expert kernels in
one weight, optional per-expert biases, routing (own or shared), expert dropout, and
the choice between the per-example and the mixture formulation. Subclasses only say
what an expert kernel looks like and which aggregation-core function applies it.
"""

import keras
from keras import ops

from keras_dynconv import ops as dynconv_ops
from keras_dynconv.layers import validation
from keras_dynconv.layers.routing import ROUTING_ACTIVATIONS
from keras_dynconv.layers.routing import Routing
from keras_dynconv.layers.strategy import STRATEGIES
from keras_dynconv.layers.strategy import resolve_strategy

def per_expert_initializer(initializer):
    """Initializes each expert as its own kernel, as the official CondConv and timm do.

    Called on the whole `(E, ...)` shape, a variance-scaling initializer would count
    E in the fan-in and shrink every expert by about sqrt(E); activations then vanish
    through a few CondConv layers. Keras' random initializers hold an integer seed
    (drawn at construction when none is given) and return the same values at every
    call, so expert e is drawn with seed + e: the experts differ.
    """

    def initialize(shape, dtype=None):
        seed = getattr(initializer, "seed", None)
        experts = []
        for index in range(shape[0]):
            expert_initializer = initializer
            if isinstance(seed, int):
                expert_initializer = initializer.__class__.from_config(
                    {**initializer.get_config(), "seed": seed + index}
                )
            experts.append(expert_initializer(tuple(shape[1:]), dtype=dtype))
        return ops.stack(experts)

    return initialize


class ExpertLayer(keras.layers.Layer):
    """Base of layers whose kernel is a per-example mix of `num_experts` kernels.

    Subclasses implement `expert_kernel_shape`, `output_channels`,
    `apply_per_example`, `apply_mixture` and `compute_output_shape`; they set
    `input_rank` (an exact rank) or `min_input_rank`.

    Example (every CondConv, dynamic and sparse dynamic layer is one):
    >>> from keras_dynconv.layers import CondConv2D
    >>> layer = CondConv2D(8, 3, num_experts=4)
    >>> isinstance(layer, ExpertLayer), tuple(layer(keras.ops.ones((2, 9, 9, 3))).shape)
    (True, (2, 9, 9, 8))
    """

    input_rank = None
    min_input_rank = 2

    def __init__(
        self,
        num_experts=8,
        routing="sigmoid",
        routing_hidden_units=None,
        temperature=1.0,
        strategy="auto",
        expert_dropout=0.0,
        use_bias=False,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        routing_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = validation.positive_int("num_experts", num_experts)
        self.routing = validation.one_of(
            "routing", routing, ROUTING_ACTIVATIONS + (None,)
        )
        if routing_hidden_units is not None:
            validation.positive_int("routing_hidden_units", routing_hidden_units)
        self.routing_hidden_units = routing_hidden_units
        self.temperature = validation.positive_float("temperature", temperature)
        self.strategy = validation.one_of("strategy", strategy, STRATEGIES)
        self.expert_dropout = validation.fraction("expert_dropout", expert_dropout)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.routing_initializer = keras.initializers.get(routing_initializer)
        self.seed = seed
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.expert_dropout > 0 else None
        )
        self.routing_fn = None

    # --- what subclasses define -------------------------------------------------
    def expert_kernel_shape(self, input_channels):
        raise NotImplementedError

    def output_channels(self, input_channels):
        raise NotImplementedError

    def apply_per_example(self, inputs, kernels):
        raise NotImplementedError

    def apply_per_example_experts(self, inputs, experts, routing_weights):
        """The per-example strategy from the experts; a layer whose core op can skip
        forming every example's kernel overrides this."""
        return self.apply_per_example(
            inputs, dynconv_ops.combine_experts(routing_weights, experts)
        )

    def apply_mixture(self, inputs, experts, routing_weights):
        raise NotImplementedError

    def routing_hidden_units_for(self, input_channels):
        return self.routing_hidden_units

    def expert_kernels(self):
        """The `[E, ...]` expert kernels the layer computes with."""
        return self.kernel

    # --- build and call ---------------------------------------------------------
    def _check_input_shape(self, shape):
        validation.input_shape(
            self.name,
            shape,
            rank=self.input_rank,
            min_rank=self.min_input_rank,
            built_channels=getattr(self, "input_channels", None),
        )

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        input_channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_experts,) + tuple(self.expert_kernel_shape(input_channels)),
            initializer=per_expert_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_experts, self.output_channels(input_channels)),
                initializer=per_expert_initializer(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        if self.routing is not None:
            self.routing_fn = Routing(
                self.num_experts,
                activation=self.routing,
                temperature=self.temperature,
                hidden_units=self.routing_hidden_units_for(input_channels),
                kernel_initializer=self.routing_initializer,
                dtype=self.dtype_policy,
                name="routing",
            )
            self.routing_fn.build(input_shape)
        self.input_channels = input_channels

    def _check_routing_weights(self, routing_weights, inputs):
        shape = tuple(routing_weights.shape)
        batch_mismatch = (
            len(shape) == 2
            and shape[0] is not None
            and inputs.shape[0] is not None
            and shape[0] != inputs.shape[0]
        )
        if len(shape) != 2 or shape[1] != self.num_experts or batch_mismatch:
            raise ValueError(
                f"Invalid `routing_weights` for layer '{self.name}': expected shape "
                f"[batch={inputs.shape[0]}, num_experts={self.num_experts}]. "
                f"Received routing_weights with shape {shape}"
            )

    def call(self, inputs, routing_weights=None, training=None):
        self._check_input_shape(inputs.shape)
        if routing_weights is None:
            if self.routing_fn is None:
                raise ValueError(
                    f"Layer '{self.name}' was created with routing=None, so "
                    "`routing_weights` must be passed to call(). Received "
                    "routing_weights=None"
                )
            routing_weights = self.routing_fn(inputs)
        else:
            self._check_routing_weights(routing_weights, inputs)
        routing_weights = ops.cast(routing_weights, self.compute_dtype)
        if training and self.expert_dropout > 0:
            routing_weights = keras.random.dropout(
                routing_weights, self.expert_dropout, seed=self.seed_generator
            )
        experts = self.expert_kernels()
        strategy = resolve_strategy(self.strategy, self.num_experts, training)
        if strategy == "mixture":
            outputs = self.apply_mixture(inputs, experts, routing_weights)
        else:
            outputs = self.apply_per_example_experts(inputs, experts, routing_weights)
        if self.use_bias:
            bias = dynconv_ops.combine_experts(routing_weights, self.bias)
            broadcast_shape = (-1,) + (1,) * (len(outputs.shape) - 2) + (bias.shape[-1],)
            outputs = outputs + ops.reshape(bias, broadcast_shape)
        return self.activation(outputs)

    def set_routing_temperature(self, value):
        """Sets the temperature of the layer's own routing function."""
        if self.routing_fn is None:
            raise ValueError(
                f"Layer '{self.name}' has no routing function of its own "
                "(routing=None): set the temperature where its routing is computed."
            )
        self.routing_fn.set_temperature(value)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "routing": self.routing,
                "routing_hidden_units": self.routing_hidden_units,
                "temperature": self.temperature,
                "strategy": self.strategy,
                "expert_dropout": self.expert_dropout,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "routing_initializer": keras.initializers.serialize(
                    self.routing_initializer
                ),
                "seed": self.seed,
            }
        )
        return config
