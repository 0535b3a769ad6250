"""Training with `model.fit`: recipes as data, the optimizers and schedules they name,
one function that compiles a model with a recipe, and EMA weights."""

from keras_dynconv.training.compile import (
    classification_loss_and_metrics,
    compile_with_recipe,
    ema_weights,
    recipe_callbacks,
)
from keras_dynconv.training.distribution import (
    DistributionPlan,
    distribution_plan,
    supported_strategies,
    virtual_cpu_devices,
)
from keras_dynconv.training.optimizers import (
    RoutingOptimizerSelector,
    ScaledSchedule,
    build_optimizer,
    is_routing_variable,
)
from keras_dynconv.training.recipes import RECIPES, Recipe, get_recipe
from keras_dynconv.training.schedules import WarmupExponentialDecay, learning_rate_schedule

__all__ = [
    "DistributionPlan",
    "distribution_plan",
    "supported_strategies",
    "virtual_cpu_devices",
    "RECIPES",
    "Recipe",
    "RoutingOptimizerSelector",
    "ScaledSchedule",
    "WarmupExponentialDecay",
    "build_optimizer",
    "classification_loss_and_metrics",
    "compile_with_recipe",
    "ema_weights",
    "get_recipe",
    "is_routing_variable",
    "learning_rate_schedule",
    "recipe_callbacks",
]
