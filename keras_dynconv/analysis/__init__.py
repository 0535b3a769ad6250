"""Routing analysis: routing weights over data, per-class means, entropy, plots."""

from keras_dynconv.analysis.plots import plot_class_routing
from keras_dynconv.analysis.routing import (
    collect_routing,
    per_class_mean_routing,
    routing_entropy,
    routing_model,
    routing_outputs,
    routing_statistics,
)

__all__ = [
    "collect_routing",
    "per_class_mean_routing",
    "plot_class_routing",
    "routing_entropy",
    "routing_model",
    "routing_outputs",
    "routing_statistics",
]
