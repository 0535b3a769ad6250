"""Routing analysis: routing weights over data, per-class means, entropy, the
distribution of routing weights, expert utilisation, top classes per expert, plots."""

from keras_dynconv.analysis.experts import ExpertClasses
from keras_dynconv.analysis.experts import bimodality_coefficient
from keras_dynconv.analysis.experts import expert_utilisation
from keras_dynconv.analysis.experts import routing_histogram
from keras_dynconv.analysis.experts import top_classes_per_expert
from keras_dynconv.analysis.plots import plot_class_routing
from keras_dynconv.analysis.plots import plot_expert_classes
from keras_dynconv.analysis.plots import plot_routing_distribution
from keras_dynconv.analysis.routing import (
    collect_routing,
    per_class_mean_routing,
    routing_entropy,
    routing_model,
    routing_outputs,
    routing_statistics,
)

__all__ = [
    "ExpertClasses",
    "bimodality_coefficient",
    "collect_routing",
    "expert_utilisation",
    "per_class_mean_routing",
    "plot_class_routing",
    "plot_expert_classes",
    "plot_routing_distribution",
    "routing_histogram",
    "routing_entropy",
    "routing_model",
    "routing_outputs",
    "routing_statistics",
    "top_classes_per_expert",
]
