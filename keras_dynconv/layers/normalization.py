"""`BatchNormalization`: Keras' layer, normalising through
`keras_dynconv.ops.batch_normalization`."""

import keras
from keras import ops

from keras_dynconv.ops.normalization import batch_normalization
from keras_dynconv.ops.normalization import torch_batch_norm_applies
from keras_dynconv.ops.torch_prepared import prepared_batch_normalization


@keras.saving.register_keras_serializable(package="keras_dynconv")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that normalises in one pass on torch.

    Same arguments, weights, configuration and results as Keras' layer (a subclass:
    weight converters, `isinstance` checks and `transfer`'s freezing treat it as one).
    Where it uses its moving statistics (inference, or frozen with `trainable=False`)
    and no mask is given, it normalises through
    `keras_dynconv.ops.batch_normalization`: one pass over a channels-last view on
    torch, where Keras' op makes three (EfficientNet-B0 at batch 32 on a 2-core CPU:
    871 -> 769 ms; zoo/benchmarks/README.md). Training steps are Keras' own. The zoo's
    batch normalisation layers are this class.

    Example:
    >>> layer = BatchNormalization()
    >>> tuple(layer(keras.ops.ones((2, 4, 4, 3))).shape)
    (2, 4, 4, 3)
    """

    def call(self, inputs, training=None, mask=None):
        if (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        inputs, (mean, variance), (offset, scale) = self._with_moving_statistics(inputs)
        outputs = batch_normalization(
            inputs, mean, variance, axis=self.axis, offset=offset, scale=scale,
            epsilon=self.epsilon,
        )
        return _cast(outputs, self.compute_dtype)

    def prepared_variables(self):
        """The variables `prepared_inference` reads (`layers.prepared_calls`)."""
        return [self.moving_mean, self.moving_variance] + [
            variable for variable, used in ((self.beta, self.center), (self.gamma, self.scale))
            if used
        ]

    def prepared_inference(self, inputs):
        """`call` with the moving statistics on inputs like `inputs`, prepared once
        (torch; None where `call` would not take torch's `batch_norm`)."""
        import torch

        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return None
        inputs, statistics, (offset, scale) = self._with_moving_statistics(inputs)
        if not torch_batch_norm_applies(inputs, statistics, [offset, scale]):
            return None
        normalise = prepared_batch_normalization(*statistics, offset, scale, epsilon=self.epsilon)
        input_dtype, output_dtype = inputs.dtype, getattr(torch, self.compute_dtype)

        def run(x):
            return normalise(x.to(input_dtype)).to(output_dtype)

        return run

    def _with_moving_statistics(self, inputs):
        """`(inputs, [mean, variance], [offset, scale])` as Keras' layer normalises:
        in at least float32 (offset and scale None where not used); the result is then
        cast to the compute dtype."""
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if dtype != "float64":
            inputs, dtype = _cast(inputs, "float32"), "float32"

        def cast(variable):
            return _cast(variable.value, dtype)

        return (
            inputs,
            [cast(self.moving_mean), cast(self.moving_variance)],
            [cast(self.beta) if self.center else None, cast(self.gamma) if self.scale else None],
        )


def _cast(tensor, dtype):
    """`ops.cast`, skipped where the dtype is right already (most calls, and the cast
    op's own cost is a fifth of a normalisation at batch 1 on torch)."""
    if keras.backend.standardize_dtype(tensor.dtype) == dtype:
        return tensor
    return ops.cast(tensor, dtype)
