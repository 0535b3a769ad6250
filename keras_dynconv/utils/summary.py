"""Which layers of a model are dynamic, how many experts they mix, where their routing
comes from: the architecture summary behind `keras-dynconv info`."""

import dataclasses

from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.mod_block import MoDBlock
from keras_dynconv.layers.routing import Routing


@dataclasses.dataclass(frozen=True)
class DynamicLayer:
    """One dynamic layer of a model.

    Attributes:
        name: the layer's name.
        kind: its class name, e.g. `"CondConv2D"`.
        experts: E, the kernels it mixes (None for a `MoDBlock`).
        kernel: the shape of one expert kernel (for a `MoDBlock`: `"top-k of C"`).
        routing: `"own"` when the layer computes its own routing weights, else the
            name of the shared `Routing` layer that feeds it.
        strategy: `"auto"`, `"per_example"` or `"mixture"` (None for a `MoDBlock`).
    """

    name: str
    kind: str
    experts: int
    kernel: str
    routing: str
    strategy: str


def _routing_source(layer):
    """Name of the layer that produces `layer`'s `routing_weights` in the graph."""
    for node in getattr(layer, "_inbound_nodes", []):
        tensor = node.arguments.kwargs.get("routing_weights")
        if tensor is None and len(node.arguments.args) > 1:
            tensor = node.arguments.args[1]
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            return history.operation.name
    return "passed at call"


def _mod_kernel(layer):
    channels = layer.input.shape[-1] if layer._inbound_nodes else None
    if channels is None:
        return f"top-k channels (capacity {layer.capacity})"
    return f"top {channels // layer.capacity} of {channels} channels"


def dynamic_layers(model):
    """The `DynamicLayer`s of `model`, in layer order (nested models included).

    Example:
    >>> rows = dynamic_layers(zoo.condconv_efficientnet_b0(num_experts=4))
    >>> rows[0].kind, rows[0].experts, rows[0].routing
    ('CondConv2D', 4, 'block8_routing')
    """
    rows = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, ExpertLayer):
            kernel = "x".join(str(size) for size in layer.kernel.shape[1:])
            routing = "own" if layer.routing_fn is not None else _routing_source(layer)
            rows.append(DynamicLayer(layer.name, type(layer).__name__, layer.num_experts,
                                     kernel, routing, layer.strategy))
        elif isinstance(layer, MoDBlock):
            rows.append(DynamicLayer(layer.name, "MoDBlock", None, _mod_kernel(layer),
                                     "channel selector", None))
    return rows


def shared_routing_layers(model):
    """`{Routing layer name: [names of the dynamic layers it feeds]}`, in layer order."""
    shared = {
        layer.name: [] for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, Routing)
    }
    for row in dynamic_layers(model):
        if row.routing in shared:
            shared[row.routing].append(row.name)
    return shared


def is_dynamic(model):
    """True if `model` has at least one dynamic layer."""
    return bool(dynamic_layers(model))


__all__ = ["DynamicLayer", "dynamic_layers", "is_dynamic", "shared_routing_layers"]
