"""`ZooModel`: the zoo's functional models, called without Keras' per-layer machinery
for eager inference on torch."""

import keras

from keras_dynconv.layers import direct_calls
from keras_dynconv.zoo import graph_plan

try:  # Keras' functional model's own helpers, not exported
    from keras.src.models.functional import operation_fn as functional_operation_fn
    from keras.src.models.functional import unpack_singleton
except ImportError:
    functional_operation_fn = None


@keras.saving.register_keras_serializable(package="keras_dynconv")
class ZooModel(keras.Model):
    """A functional `keras.Model` (built as `ZooModel(inputs, outputs, name=...)`) whose
    eager inference on torch calls its layers through
    `keras_dynconv.layers.direct_calls.inference_call`.

    Every builder of `keras_dynconv.zoo` returns one. Its layers, weights, configuration
    and results are the functional model's: only the dispatch differs. Where
    `direct_calls.applies` (torch; `training` falsy; no masks; not symbolic, exporting
    or compiling), each plain layer's `call` runs directly instead of through
    `Layer.__call__`, which costs 0.1-0.2 ms per layer on this project's 2-core CPU;
    training steps and every other backend go through Keras as before. The direct calls
    walk the graph from a plan made at the first call (`keras_dynconv.zoo.graph_plan`),
    and run each convolution with the batch normalisation after it folded in
    (`keras_dynconv.layers.folded_normalization`).
    EfficientNet-B0 at batch 1: 141 -> 75 ms (`python scripts/bench_direct_calls.py`).

    Example:
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = ZooModel(inputs, keras.layers.Conv2D(4, 3)(inputs))
    >>> tuple(model(keras.ops.ones((2, 8, 8, 3))).shape)
    (2, 6, 6, 4)
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        if (
            mask is not None
            or kwargs
            or training
            or keras.backend.backend() != "torch"
            or functional_operation_fn is None
        ):
            return super().call(inputs, training=training, mask=mask, **kwargs)
        # Functional.call without masks, the inputs standardised (made tensors) once.
        inputs = self._standardize_inputs(inputs)
        if direct_calls.applies(inputs, training):
            def operation_fn(operation):
                return direct_calls.inference_call(operation, training)

            if graph_plan.KERAS_INTERNALS_FOUND:
                return unpack_singleton(
                    graph_plan.run(self, inputs, operation_fn, fold=direct_calls.folded_call)
                )
        else:
            def operation_fn(operation):
                return functional_operation_fn(operation, training=training)
        return unpack_singleton(self._run_through_graph(inputs, operation_fn=operation_fn))
