"""Routing weights of a model over data, read through a model with extra outputs.

`routing_model(model)` is a Keras model on the same inputs whose outputs are the
routing weights `[batch, num_experts]` of every routing function: the shared
`Routing` layers of the zoo's CondConv blocks, and the routing of every dynamic layer
that computes its own (`DynamicConv2D`, `CondDense`, ...). It reuses the model's
layers and weights, so nothing is recomputed by hand.
"""

import keras
import numpy as np

from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.routing import Routing


class _OwnRouting(keras.layers.Layer):
    """Runs the routing function a dynamic layer owns, as a node of its own.

    Every such routing function is a sublayer named `routing`; calling them directly
    in one functional model would repeat that name, which Keras refuses.
    """

    def __init__(self, routing_fn, **kwargs):
        super().__init__(**kwargs)
        self.routing_fn = routing_fn

    def call(self, inputs):
        return self.routing_fn(inputs)

    def compute_output_shape(self, input_shape):
        return self.routing_fn.compute_output_shape(input_shape)


def _unique_name(name, taken):
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate


def routing_outputs(model):
    """`{name: symbolic routing tensor}` of a functional model, in layer order.

    A shared `Routing` layer is named after itself; the routing a dynamic layer
    computes for itself is named `"<layer>/routing"`.

    Example:
    >>> outputs = routing_outputs(zoo.condconv_mobilenet_v2(num_experts=4))
    >>> list(outputs)[0], tuple(outputs[list(outputs)[0]].shape)
    ('block11_routing', (None, 4))
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "Routing weights are read from a functional Keras model (the zoo's "
            f"models are). Received {type(model).__name__}."
        )
    outputs = {}
    taken = {layer.name for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, Routing):
            outputs[layer.name] = layer.output
        elif isinstance(layer, ExpertLayer) and layer.routing_fn is not None:
            probe = _OwnRouting(
                layer.routing_fn,
                dtype=layer.routing_fn.dtype_policy,
                name=_unique_name(f"{layer.name}_own_routing", taken),
            )
            outputs[f"{layer.name}/routing"] = probe(layer.input)
    return outputs


def routing_model(model, names=None):
    """A model with the inputs of `model` and outputs `{name: [B, E] routing}`.

    Args:
        model: a functional model with dynamic layers.
        names: the routing functions to read (default: all, see `routing_outputs`).

    Example:
    >>> probe = routing_model(zoo.condconv_efficientnet_b0(num_experts=4))
    >>> sorted(probe.output_names)[:2]
    ['block10_routing', 'block11_routing']
    """
    outputs = routing_outputs(model)
    if not outputs:
        raise ValueError(f"Model '{model.name}' has no routing function.")
    if names is not None:
        unknown = [name for name in names if name not in outputs]
        if unknown:
            raise ValueError(
                f"Invalid value for argument `names`: {unknown} are not routing "
                f"functions of model '{model.name}'. Expected some of {list(outputs)}"
            )
        outputs = {name: outputs[name] for name in names}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, outputs, name=f"{model.name}_routing")
    probe.is_routing_model = True
    # Keras returns dict outputs sorted by key (block10 before block6): keep the
    # layer order for `collect_routing`.
    probe.routing_names = list(outputs)
    return probe


def _batches(data, max_batches, batch_size):
    """(inputs, labels or None) batches from arrays, (x, y) tuples or a tf.data Dataset."""
    if isinstance(data, np.ndarray):
        data = (data,)
    if isinstance(data, tuple):
        arrays = [np.asarray(a) for a in data]
        for count, start in enumerate(range(0, len(arrays[0]), batch_size)):
            if max_batches is not None and count >= max_batches:
                return
            chunk = [a[start : start + batch_size] for a in arrays]
            yield chunk[0], (chunk[1] if len(chunk) > 1 else None)
        return
    for count, batch in enumerate(data):
        if max_batches is not None and count >= max_batches:
            return
        if isinstance(batch, (tuple, list)):
            yield _host_array(batch[0]), (batch[1] if len(batch) > 1 else None)
        else:
            yield _host_array(batch), None


def _host_array(value):
    """TensorFlow tensors (tf.data batches) as NumPy: JAX and torch models take
    NumPy arrays, not `tf.Tensor`s."""
    if type(value).__module__.startswith("tensorflow"):
        return value.numpy()
    return value


def _as_class_ids(labels):
    labels = np.asarray(keras.ops.convert_to_numpy(labels))
    if labels.ndim > 1 and labels.shape[-1] > 1:
        return labels.argmax(-1)  # one-hot (or smoothed / mixed) labels
    # Integer labels, also as a column [N, 1] (e.g. keras.datasets.cifar10).
    return labels.reshape(len(labels)).astype(np.int64)


def collect_routing(model, data, names=None, max_batches=None, batch_size=64):
    """Routing weights over `data`: `({name: [N, E] array}, class ids [N] or None)`,
    the routing functions in layer order.

    Args:
        model: the model, or a `routing_model` built from it (reused as is).
        data: images `[N, H, W, C]`, an `(images, labels)` tuple, or a dataset of
            `(images, labels)` batches (labels one-hot or integer).
        max_batches: stop after this many batches.

    Example:
    >>> model = zoo.condconv_mobilenet_v1(alpha=0.25, num_experts=4, input_shape=(32, 32, 3))
    >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3))
    >>> routing, labels = collect_routing(model, (images, np.arange(8) % 2))
    >>> routing["block6_routing"].shape, labels.tolist()[:4]  # doctest: +SKIP
    ((8, 4), [0, 1, 0, 1])
    """
    if getattr(model, "is_routing_model", False):
        probe = model
    else:
        probe = routing_model(model, names)
    collected, labels = {}, []
    for inputs, batch_labels in _batches(data, max_batches, batch_size):
        outputs = probe.predict_on_batch(inputs)
        for name, value in outputs.items():
            collected.setdefault(name, []).append(np.asarray(keras.ops.convert_to_numpy(value)))
        if batch_labels is not None:
            labels.append(_as_class_ids(batch_labels))
    routing = {
        name: np.concatenate(collected[name]).astype(np.float32)
        for name in probe.routing_names
        if name in collected
    }
    return routing, (np.concatenate(labels) if labels else None)


def per_class_mean_routing(routing, labels, num_classes=None):
    """`[num_classes, E]` mean routing weight per class (paper Fig. 3); NaN rows
    for classes that do not occur.

    Example:
    >>> means = per_class_mean_routing(np.array([[0.2, 0.8], [0.4, 0.6], [1.0, 0.0]]),
    ...                                np.array([0, 0, 1]))
    >>> means.shape, [round(float(value), 2) for value in means[0]]
    ((2, 2), [0.3, 0.7])
    """
    labels = np.asarray(labels)
    num_classes = num_classes or int(labels.max()) + 1
    means = np.full((num_classes, routing.shape[1]), np.nan, dtype=np.float32)
    for class_id in range(num_classes):
        members = routing[labels == class_id]
        if len(members):
            means[class_id] = members.mean(axis=0)
    return means


def routing_entropy(routing):
    """Mean normalised entropy of each example's routing, in [0, 1].

    Routing weights are normalised to sum to one per example (sigmoid routing
    need not), and the entropy is divided by log(E): 1 means every expert weighs
    the same, 0 that one expert takes everything.

    Example:
    >>> routing_entropy(np.array([[0.5, 0.5], [0.5, 0.5]]))
    1.0
    >>> routing_entropy(np.array([[1.0, 0.0]]))
    0.0
    """
    routing = np.maximum(np.asarray(routing, dtype=np.float64), 0.0)
    num_experts = routing.shape[1]
    if num_experts < 2:
        return 0.0
    totals = routing.sum(axis=1, keepdims=True)
    shares = np.where(totals > 0, routing / np.where(totals > 0, totals, 1), 1.0 / num_experts)
    entropy = -(shares * np.log(np.where(shares > 0, shares, 1.0))).sum(axis=1)
    return float(entropy.mean() / np.log(num_experts))


def routing_statistics(routing):
    """`{name: {"mean": [E] mean weight per expert, "std": [E], "entropy": float}}`.

    Example:
    >>> stats = routing_statistics({"block8_routing": np.array([[0.2, 0.8], [0.4, 0.6]])})
    >>> np.round(stats["block8_routing"]["mean"], 2).tolist()
    [0.3, 0.7]
    """
    return {
        name: {
            "mean": weights.mean(axis=0).tolist(),
            "std": weights.std(axis=0).tolist(),
            "entropy": routing_entropy(weights),
        }
        for name, weights in routing.items()
    }
