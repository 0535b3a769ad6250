"""Optimizers of the recipes, with the routing functions at their own learning rate."""

import keras

# Left out of weight decay: BatchNorm scale and offset, biases, SD-Conv thresholds
# (decaying a threshold would keep more weights, against the sparsity schedule).
NO_WEIGHT_DECAY = ["bias", "gamma", "beta", "threshold"]


@keras.saving.register_keras_serializable(package="keras_dynconv")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`factor * schedule(step)`: a schedule for parameters that learn slower.

    Example:
    >>> ScaledSchedule(0.5, 0.1)(0)
    0.05
    """

    def __init__(self, schedule, factor):
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            return self.schedule(step) * self.factor
        return self.schedule * self.factor

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, config["factor"])


def is_routing_variable(variable):
    """Whether `variable` belongs to a routing function (`Routing` layers).

    Example:
    >>> model = zoo.condconv_mobilenet_v1(alpha=0.25, num_experts=2, input_shape=(32, 32, 3))
    >>> sum(is_routing_variable(v) for v in model.trainable_variables) > 0
    True
    """
    return any(part.endswith("routing") for part in variable.path.split("/")[:-1])


@keras.saving.register_keras_serializable(package="keras_dynconv")
class RoutingOptimizerSelector:
    """Sends routing variables to `routing_optimizer`, the rest to `optimizer`.

    The callable `keras.optimizers.MultiOptimizer` takes, made serializable so a
    model compiled with it still saves to `.keras`.

    Example:
    >>> selector = RoutingOptimizerSelector(keras.optimizers.AdamW(1e-3),
    ...                                     keras.optimizers.AdamW(1e-4))  # doctest: +SKIP
    """

    def __init__(self, optimizer, routing_optimizer):
        self.optimizer = optimizer
        self.routing_optimizer = routing_optimizer

    def __call__(self, variable):
        return self.routing_optimizer if is_routing_variable(variable) else self.optimizer

    def get_config(self):
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "routing_optimizer": keras.saving.serialize_keras_object(self.routing_optimizer),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            keras.saving.deserialize_keras_object(config["optimizer"]),
            keras.saving.deserialize_keras_object(config["routing_optimizer"]),
        )


def _backend_class(optimizer_class):
    """The class Keras instantiates for `optimizer_class` on this backend.

    On torch, `keras.optimizers.SGD(...)` returns a fused subclass (`torch._foreach`
    updates); subclassing that one keeps the fast path.
    """
    return type(optimizer_class.__new__(optimizer_class))


class _KeepsWeightDecayExclusions:
    """Weight decay exclusions that survive `get_config` and `.keras` files.

    `exclude_from_weight_decay` is not part of a Keras optimizer's config, so a model
    loaded from `.keras` (or an optimizer rebuilt from its config) would decay
    biases, BatchNorm parameters and SD-Conv thresholds when training resumes.
    """

    def __init__(self, *args, weight_decay_exclusions=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_decay_exclusions = tuple(weight_decay_exclusions or ())
        if self.weight_decay_exclusions:
            self.exclude_from_weight_decay(var_names=list(self.weight_decay_exclusions))

    def get_config(self):
        config = super().get_config()
        config["weight_decay_exclusions"] = list(self.weight_decay_exclusions)
        return config


def _recipe_optimizer_class(name, optimizer_class):
    cls = type(
        name,
        (_KeepsWeightDecayExclusions, _backend_class(optimizer_class)),
        {"__doc__": f"`keras.optimizers.{optimizer_class.__name__}` whose config "
                    "keeps its weight decay exclusions."},
    )
    return keras.saving.register_keras_serializable(package="keras_dynconv")(cls)


RecipeRMSprop = _recipe_optimizer_class("RecipeRMSprop", keras.optimizers.RMSprop)
RecipeSGD = _recipe_optimizer_class("RecipeSGD", keras.optimizers.SGD)
RecipeAdam = _recipe_optimizer_class("RecipeAdam", keras.optimizers.Adam)
RecipeAdamW = _recipe_optimizer_class("RecipeAdamW", keras.optimizers.AdamW)


def _single_optimizer(recipe, learning_rate):
    common = dict(learning_rate=learning_rate)
    if recipe.ema_momentum is not None:
        common.update(use_ema=True, ema_momentum=recipe.ema_momentum)
    if recipe.weight_decay:
        common["weight_decay"] = recipe.weight_decay
        common["weight_decay_exclusions"] = NO_WEIGHT_DECAY
    if recipe.optimizer == "rmsprop":
        # TF1's RMSProp (the official EfficientNet code) uses decay 0.9.
        return RecipeRMSprop(
            rho=0.9, momentum=recipe.momentum, epsilon=recipe.epsilon, **common
        )
    if recipe.optimizer == "sgd":
        return RecipeSGD(momentum=recipe.momentum, nesterov=True, **common)
    if recipe.optimizer == "adamw":
        common.setdefault("weight_decay", 0.0)
        return RecipeAdamW(epsilon=recipe.epsilon, **common)
    return RecipeAdam(epsilon=recipe.epsilon, **common)


def build_optimizer(recipe, learning_rate):
    """The recipe's optimizer at `learning_rate` (a float or a schedule).

    With `recipe.routing_learning_rate_multiplier != 1`, a
    `keras.optimizers.MultiOptimizer` trains the routing functions at the scaled
    rate. Why it matters: with BatchNorm after a CondConv layer the loss barely
    depends on the common scale of the routing weights, yet Adam-like optimizers
    take full-size steps on that scale; upcycled models then saturate their
    routing within a few steps (measured in `keras_dynconv.demo`).

    Example:
    >>> optimizer = build_optimizer(get_recipe("fine_tune"), learning_rate=1e-3)
    """
    multiplier = recipe.routing_learning_rate_multiplier
    optimizer = _single_optimizer(recipe, learning_rate)
    if multiplier == 1:
        return optimizer
    routing_optimizer = _single_optimizer(recipe, ScaledSchedule(learning_rate, multiplier))
    return keras.optimizers.MultiOptimizer(
        RoutingOptimizerSelector(optimizer, routing_optimizer)
    )
