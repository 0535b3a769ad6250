"""Training recipes as data: the published hyperparameters of each model family.

A `Recipe` holds what a paper or its reference code trains with: optimizer, peak
learning rate at a reference batch size (scaled linearly with the global batch, as
Goyal et al. 2017 and the official EfficientNet code do), warmup, decay schedule,
weight decay, label smoothing, dropout / drop-connect, EMA of weights, augmentation,
and the dynamic layers' schedules (softmax temperature, SD-Conv sparsity).
`keras_dynconv.training.compile_with_recipe` turns one into a compiled model.
"""

import dataclasses

OPTIMIZERS = ("rmsprop", "sgd", "adam", "adamw")
SCHEDULES = ("cosine", "exponential", "constant")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one model family.

    Attributes:
        name: the key in `RECIPES`.
        optimizer: one of `"rmsprop"`, `"sgd"` (Nesterov momentum), `"adam"`,
            `"adamw"`.
        learning_rate: peak learning rate for a global batch of `base_batch_size`.
        base_batch_size: the batch `learning_rate` is stated for; the learning rate
            scales linearly with `global_batch_size / base_batch_size`.
        batch_size: the global batch size the source trains with.
        epochs: training length in the source.
        warmup_epochs: linear warmup from 0 to the peak learning rate.
        schedule: `"cosine"` (to `min_learning_rate_ratio * peak` at the end),
            `"exponential"` (`decay_rate` every `decay_epochs`, the official
            EfficientNet / CondConv schedule) or `"constant"`.
        weight_decay: decoupled weight decay per step, `w -= lr * weight_decay * w`
            (for SGD the same step as an L2 loss of `weight_decay / 2 * |w|^2`);
            BatchNorm parameters and biases are left out.
        label_smoothing: of the cross-entropy (needs one-hot labels).
        ema_momentum: momentum of the exponential moving average of the weights,
            or `None` for none. The EMA weights are evaluated and saved.
        dropout_rate, drop_connect_rate: builder arguments (`None`: the builder's).
        augment, mixup_alpha: input pipeline (`keras_dynconv.data`).
        routing_learning_rate_multiplier: learning rate of the routing functions
            relative to the rest (`1.0`: the same optimizer for everything).
        temperature_annealing: `(initial, final, epochs)` of the softmax
            temperature of dynamic convolutions, or `None`.
        final_density, pruning_phases: SD-Conv's target density schedule, or `None`.
        source: where the numbers come from.

    Example:
    >>> recipe = get_recipe("condconv_efficientnet_b0")
    >>> recipe.name, recipe.scaled_learning_rate(4096) > recipe.scaled_learning_rate(256)
    ('condconv_efficientnet', True)
    """

    name: str
    optimizer: str
    learning_rate: float
    base_batch_size: int
    batch_size: int
    epochs: int
    warmup_epochs: float = 5.0
    schedule: str = "cosine"
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    min_learning_rate_ratio: float = 0.0
    momentum: float = 0.9
    epsilon: float = 1e-7
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    ema_momentum: float = None
    dropout_rate: float = None
    drop_connect_rate: float = None
    augment: str = "standard"
    mixup_alpha: float = 0.0
    routing_learning_rate_multiplier: float = 1.0
    temperature_annealing: tuple = None
    final_density: float = None
    pruning_phases: int = 3
    source: str = ""

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Invalid value for argument `optimizer`. Expected one of {OPTIMIZERS}. "
                f"Received optimizer={self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"Invalid value for argument `schedule`. Expected one of {SCHEDULES}. "
                f"Received schedule={self.schedule!r}"
            )
        for field in ("learning_rate", "base_batch_size", "batch_size", "epochs",
                      "routing_learning_rate_multiplier"):
            value = getattr(self, field)
            if isinstance(value, bool) or not value > 0:
                raise ValueError(
                    f"Invalid value for argument `{field}`. Expected a number > 0. "
                    f"Received {field}={value!r}"
                )

    def scaled_learning_rate(self, global_batch_size):
        """Peak learning rate for `global_batch_size` (the linear scaling rule)."""
        return self.learning_rate * global_batch_size / self.base_batch_size

    def builder_arguments(self):
        """The regularisation the model builder takes (`dropout_rate`, ...)."""
        arguments = {}
        if self.dropout_rate is not None:
            arguments["dropout_rate"] = self.dropout_rate
        if self.drop_connect_rate is not None:
            arguments["drop_connect_rate"] = self.drop_connect_rate
        return arguments

    def replace(self, **changes):
        """A copy with some fields changed, e.g. `recipe.replace(epochs=10)`."""
        return dataclasses.replace(self, **changes)


_EFFICIENTNET = dict(
    optimizer="rmsprop", learning_rate=0.016, base_batch_size=256, batch_size=4096,
    epochs=350, warmup_epochs=5, schedule="exponential", decay_rate=0.97,
    decay_epochs=2.4, epsilon=1e-3, weight_decay=1e-5, label_smoothing=0.1,
    ema_momentum=0.9999, dropout_rate=0.2, drop_connect_rate=0.2, augment="autoaugment",
)

RECIPES = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            name="efficientnet",
            source="tensorflow/tpu models/official/efficientnet (main.py flags: "
            "RMSProp 0.9/0.9/1e-3, 0.016 per 256, 5 warmup epochs, 0.97 every 2.4 "
            "epochs, L2 1e-5, label smoothing 0.1, EMA 0.9999, 350 epochs)",
            **_EFFICIENTNET,
        ),
        Recipe(
            name="condconv_efficientnet",
            source="CondConv paper Sec. 4 (EfficientNet hyperparameters, AutoAugment, "
            "Mixup 0.2) and tensorflow/tpu condconv (dropout 0.25)",
            **{**_EFFICIENTNET, "dropout_rate": 0.25, "mixup_alpha": 0.2},
        ),
        Recipe(
            name="mobilenet",
            optimizer="rmsprop", learning_rate=0.016, base_batch_size=256,
            batch_size=4096, epochs=350, warmup_epochs=5, schedule="exponential",
            epsilon=1e-3, weight_decay=4e-5, label_smoothing=0.1,
            source="CondConv paper Sec. 4: MobileNetV1/V2 and ResNet-50 trained as "
            "Kornblith et al. (2019), no EMA, BatchNorm momentum 0.9",
        ),
        Recipe(
            name="resnet",
            optimizer="sgd", learning_rate=0.1, base_batch_size=256, batch_size=1024,
            epochs=90, warmup_epochs=5, schedule="cosine", weight_decay=1e-4,
            label_smoothing=0.1,
            source="Goyal et al. (2017) linear scaling and warmup, cosine decay "
            "(Loshchilov & Hutter), torchvision's ResNet-50 baseline",
        ),
        Recipe(
            name="dynamic",
            optimizer="sgd", learning_rate=0.1, base_batch_size=256, batch_size=256,
            epochs=100, warmup_epochs=10, schedule="cosine", weight_decay=4e-5,
            temperature_annealing=(30.0, 1.0, 10),
            source="SD-Conv Sec. 4.1 (SGD 0.9, 10 warmup epochs, one cosine cycle, "
            "weight decay 4e-5; ResNet max lr 0.1 for 100 epochs, MobileNetV2 0.05 "
            "for 300) and Dynamic Convolution's temperature 30 -> 1",
        ),
        Recipe(
            name="sparse_dynamic",
            optimizer="sgd", learning_rate=0.1, base_batch_size=256, batch_size=256,
            epochs=100, warmup_epochs=10, schedule="cosine", weight_decay=4e-5,
            temperature_annealing=(30.0, 1.0, 10), final_density=0.5, pruning_phases=3,
            source="SD-Conv Sec. 4.1 (as `dynamic`, sparsity s = 50%, lambda_s 0.01)",
        ),
        Recipe(
            name="mod",
            optimizer="sgd", learning_rate=0.1, base_batch_size=256, batch_size=256,
            epochs=90, warmup_epochs=5, schedule="cosine", weight_decay=1e-4,
            source="CNN Mixture-of-Depths trains against torchvision's ResNet "
            "recipe; the paper states no other hyperparameters",
        ),
        Recipe(
            name="ssd",
            optimizer="sgd", learning_rate=0.9, base_batch_size=1024, batch_size=1024,
            epochs=175, warmup_epochs=8.7, schedule="cosine", weight_decay=8e-5,
            augment="ssd_random_crop",
            source="CondConv paper Sec. 4.2 and the TF Object Detection API's "
            "ssd_mobilenet_v1_300x300_coco14_sync: momentum 0.9, batch 1024 for "
            "20,000 steps (~175 epochs of COCO trainval35k), 1,000 warmup steps "
            "(~8.7 epochs; the reference warms up from 0.3, this from 0) to 0.9, "
            "cosine decay, L2 4e-5 (= weight decay 8e-5), SSD random crop + flip",
        ),
        Recipe(
            name="fine_tune",
            optimizer="adamw", learning_rate=1e-3, base_batch_size=64, batch_size=64,
            epochs=10, warmup_epochs=0.25, schedule="cosine", weight_decay=1e-4,
            label_smoothing=0.1, routing_learning_rate_multiplier=0.1,
            augment="standard",
            source="transfer from ImageNet weights: AdamW with a short warmup and "
            "cosine decay; routing at a tenth of the learning rate so upcycled "
            "experts specialise before the routing saturates (measured in the demo)",
        ),
    ]
}

# Zoo model name prefix -> recipe name; the first match wins.
_FAMILY_OF_MODEL = (
    ("ssd", "ssd"),
    ("condconv_ssd", "ssd"),
    ("sparse_dynamic_", "sparse_dynamic"),
    ("dynamic_", "dynamic"),
    ("condconv_efficientnet", "condconv_efficientnet"),
    ("condconv_mnasnet", "condconv_efficientnet"),
    ("condconv_resnet", "resnet"),
    ("condconv_mobilenet", "mobilenet"),
    ("efficientnet", "efficientnet"),
    ("mnasnet", "efficientnet"),
    ("resnet75_mod", "mod"),
    ("resnet86_mod", "mod"),
    ("mobilenet_v2_mod", "mod"),
    ("resnet", "resnet"),
    ("mobilenet", "mobilenet"),
)


def get_recipe(name):
    """The recipe named `name`, or the one for the zoo model named `name`.

    Example:
    >>> get_recipe("condconv_efficientnet_b0").name
    'condconv_efficientnet'
    >>> get_recipe("resnet").optimizer
    'sgd'
    """
    if isinstance(name, Recipe):
        return name
    if name in RECIPES:
        return RECIPES[name]
    for prefix, recipe_name in _FAMILY_OF_MODEL:
        if str(name).startswith(prefix):
            return RECIPES[recipe_name]
    raise ValueError(
        f"Invalid value for argument `name`. Expected a recipe name (one of "
        f"{sorted(RECIPES)}) or a zoo model name. Received name={name!r}"
    )
