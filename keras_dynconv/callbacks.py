"""Training-time schedules of the dynamic layers, as Keras callbacks."""

import json

import keras

from keras_dynconv.analysis.routing import collect_routing, routing_model, routing_statistics
from keras_dynconv.layers import validation
from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.sparse_dynamic_conv import SparseMaskMixin


def _scalar(tensor):
    """A Python float (through NumPy: torch warns on `float()` of a tensor that
    requires grad, as the straight-through mask does)."""
    return float(keras.ops.convert_to_numpy(tensor))


def _layers_of(model, layer_type):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, layer_type)
    ]


@keras.saving.register_keras_serializable(package="keras_dynconv")
class RoutingTemperatureScheduler(keras.callbacks.Callback):
    """Anneals the softmax temperature of dynamic convolutions, epoch by epoch.

    Dynamic convolution (Chen et al., 2020) starts the attention softmax at T=30,
    close to uniform, so all kernels learn, and lowers it linearly to 1 over the first
    epochs. The callback sets the temperature of every layer in the model whose own
    routing is a softmax (`DynamicConv2D`, `DynamicDepthwiseConv2D`,
    `SparseDynamicConv2D`, or a `CondConv2D(routing="softmax")`), and logs it as
    `routing_temperature`.

    Args:
        initial: temperature at epoch 0.
        final: temperature from epoch `epochs` on.
        epochs: length of the linear ramp.

    Example:
    >>> scheduler = RoutingTemperatureScheduler(initial=30.0, final=1.0, epochs=10)
    >>> scheduler.temperature_at(5)
    15.5
    """

    def __init__(self, initial=30.0, final=1.0, epochs=10):
        super().__init__()
        self.initial = validation.positive_float("initial", initial)
        self.final = validation.positive_float("final", final)
        self.epochs = validation.positive_int("epochs", epochs)
        self._current = self.initial

    def temperature_at(self, epoch):
        progress = min(epoch / self.epochs, 1.0)
        return self.initial + (self.final - self.initial) * progress

    def on_epoch_begin(self, epoch, logs=None):
        self._current = self.temperature_at(epoch)
        for layer in _layers_of(self.model, ExpertLayer):
            if layer.routing == "softmax":
                layer.set_routing_temperature(self._current)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["routing_temperature"] = self._current

    def get_config(self):
        return {"initial": self.initial, "final": self.final, "epochs": self.epochs}


@keras.saving.register_keras_serializable(package="keras_dynconv")
class SparsityScheduler(keras.callbacks.Callback):
    """Lowers the target density of every sparse dynamic layer, in phases.

    SD-Conv (Algorithm 1) divides training into `phases + 1` equal parts: the first
    is dense, and each following part moves the target density a step closer to
    `final_density`. The callback logs the scheduled target as `target_density` and
    the mean kept fraction of the sparse layers as `density`, and the sum of their
    penalties (the part of `loss` that pushes towards the target) as
    `sparsity_penalty`.

    Args:
        final_density: fraction of expert weights to keep at the end (1 - sparsity).
        epochs: total training epochs the phases divide.
        phases: n, the number of pruning iterations.

    Example:
    >>> scheduler = SparsityScheduler(final_density=0.2, epochs=8, phases=3)
    >>> [round(scheduler.target_at(e), 3) for e in range(8)]
    [1.0, 1.0, 0.733, 0.733, 0.467, 0.467, 0.2, 0.2]
    """

    def __init__(self, final_density, epochs, phases=3):
        super().__init__()
        self.final_density = validation.density("final_density", final_density)
        self.epochs = validation.positive_int("epochs", epochs)
        self.phases = validation.positive_int("phases", phases)
        self._current = 1.0

    def target_at(self, epoch):
        phase = min(int(epoch * (self.phases + 1) / self.epochs), self.phases)
        return 1.0 - (1.0 - self.final_density) * phase / self.phases

    def on_epoch_begin(self, epoch, logs=None):
        self._current = self.target_at(epoch)
        for layer in _layers_of(self.model, SparseMaskMixin):
            layer.set_target_density(self._current)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        sparse_layers = _layers_of(self.model, SparseMaskMixin)
        logs["target_density"] = self._current
        if sparse_layers:
            densities = [_scalar(layer.density()) for layer in sparse_layers]
            logs["density"] = sum(densities) / len(densities)
            logs["sparsity_penalty"] = sum(_scalar(layer.penalty()) for layer in sparse_layers)

    def get_config(self):
        return {
            "final_density": self.final_density,
            "epochs": self.epochs,
            "phases": self.phases,
        }


class RoutingStatistics(keras.callbacks.Callback):
    """Logs how the routing functions use their experts, once per epoch.

    At the end of every epoch the callback runs the model's routing functions
    (`keras_dynconv.analysis.routing_model`) on a few batches of `data` and keeps,
    for every routing function, the mean and spread of each expert's weight and the
    normalised routing entropy (1: experts weigh the same, 0: one expert takes
    all). It logs the mean entropy over layers as `routing_entropy`, keeps every
    epoch's statistics in `self.history`, and appends them as JSON lines to
    `path` when given.

    Args:
        data: images, `(images, labels)` arrays or a dataset of batches.
        max_batches: batches of `data` to read per epoch.
        path: optional `.jsonl` file to append `{"epoch", "layers": {...}}` to.

    Example:
    >>> stats = RoutingStatistics(validation_images, max_batches=2)
    >>> model.fit(train_ds, epochs=3, callbacks=[stats])
    >>> stats.history[-1]["layers"]["block5a_routing"]["mean"]  # one per expert
    """

    def __init__(self, data, max_batches=4, path=None):
        super().__init__()
        self.data = data
        self.max_batches = validation.positive_int("max_batches", max_batches)
        self.path = path
        self.history = []
        self._probe = None

    def on_train_begin(self, logs=None):
        self._probe = routing_model(self.model)

    def on_epoch_end(self, epoch, logs=None):
        routing, _ = collect_routing(self._probe, self.data, max_batches=self.max_batches)
        statistics = routing_statistics(routing)
        record = {"epoch": epoch, "layers": statistics}
        self.history.append(record)
        if logs is not None and statistics:
            entropies = [layer["entropy"] for layer in statistics.values()]
            logs["routing_entropy"] = sum(entropies) / len(entropies)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

__all__ = ["RoutingStatistics", "RoutingTemperatureScheduler", "SparsityScheduler"]
