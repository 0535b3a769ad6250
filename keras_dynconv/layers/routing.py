"""Per-example routing: global context -> one weight per expert."""

import keras
from keras import ops

from keras_dynconv.layers import validation
from keras_dynconv.ops.torch_prepared import prepared_routing

ROUTING_ACTIVATIONS = ("sigmoid", "softmax", "tanh", "relu")


@keras.saving.register_keras_serializable(package="keras_dynconv")
class Routing(keras.layers.Layer):
    """Routing function `r(x) = activation(FC(GlobalAveragePool(x)) / temperature)`.

    The CondConv routing (paper eq. 3) is one fully-connected layer and a sigmoid;
    dynamic convolution (Chen et al., 2020) adds a ReLU hidden layer and uses a softmax
    with a temperature. Both are this layer with different arguments.

    Args:
        num_experts: number of routing weights per example (E).
        activation: `"sigmoid"` (CondConv's default: several experts may be on at
            once), `"softmax"` (weights sum to one, dynamic convolution), `"tanh"` or
            `"relu"` (the rebuttal's ablation).
        temperature: the logits are divided by it before the activation. Kept in a
            non-trainable variable so a callback can anneal it during training.
        hidden_units: size of an optional ReLU hidden layer; `None` for none.
        kernel_initializer, bias_initializer, kernel_regularizer: for the
            fully-connected layers.

    Input: `[B, ..., C]`; every axis between the first and the last is averaged.
    Output: `[B, num_experts]`.

    Example:
    >>> routing = Routing(num_experts=4)
    >>> tuple(routing(keras.ops.ones((2, 8, 8, 16))).shape)
    (2, 4)
    """

    def __init__(
        self,
        num_experts,
        activation="sigmoid",
        temperature=1.0,
        hidden_units=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = validation.positive_int("num_experts", num_experts)
        self.activation = validation.one_of(
            "activation", activation, ROUTING_ACTIVATIONS
        )
        self.initial_temperature = validation.positive_float("temperature", temperature)
        if hidden_units is not None:
            validation.positive_int("hidden_units", hidden_units)
        self.hidden_units = hidden_units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' expects inputs of rank >= 2 [batch, ..., "
                f"channels]. Received inputs with shape {input_shape}"
            )
        fan_in = input_shape[-1]
        if self.hidden_units is not None:
            self.hidden_kernel = self._dense_weight("hidden_kernel", fan_in, self.hidden_units)
            self.hidden_bias = self.add_weight(
                name="hidden_bias", shape=(self.hidden_units,),
                initializer=self.bias_initializer,
            )
            fan_in = self.hidden_units
        self.kernel = self._dense_weight("kernel", fan_in, self.num_experts)
        self.bias = self.add_weight(
            name="bias", shape=(self.num_experts,), initializer=self.bias_initializer
        )
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
        )

    def _dense_weight(self, name, fan_in, fan_out):
        return self.add_weight(
            name=name,
            shape=(fan_in, fan_out),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def call(self, inputs):
        pooled = inputs
        if len(inputs.shape) > 2:
            pooled = ops.mean(inputs, axis=tuple(range(1, len(inputs.shape) - 1)))
        if self.hidden_units is not None:
            pooled = ops.relu(ops.matmul(pooled, self.hidden_kernel) + self.hidden_bias)
        logits = (ops.matmul(pooled, self.kernel) + self.bias) / self.temperature
        return getattr(keras.activations, self.activation)(logits)

    def prepared_variables(self):
        """The variables `prepared_inference` reads (`layers.prepared_calls`)."""
        return self.weights

    def prepared_inference(self, inputs):
        """`call` for inference on torch inputs like `inputs`, prepared once: at batch 1
        its Keras ops cost more than their arithmetic."""
        hidden = (self.hidden_kernel, self.hidden_bias) if self.hidden_units is not None else None
        return prepared_routing(
            inputs, self.kernel, self.bias, self.temperature, self.activation, hidden=hidden
        )

    def set_temperature(self, value):
        """Sets the routing temperature (used by the annealing callback)."""
        self.temperature.assign(validation.positive_float("temperature", value))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "activation": self.activation,
                "temperature": self.initial_temperature,
                "hidden_units": self.hidden_units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
