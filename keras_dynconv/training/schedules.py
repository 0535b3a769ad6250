"""Learning-rate schedules of the recipes: linear warmup, then cosine or exponential."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_dynconv")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then `peak * decay_rate ** floor(steps / decay_steps)`.

    The official EfficientNet and CondConv training code (tensorflow/tpu
    `utils.build_learning_rate`) decays in a staircase, 0.97 every 2.4 epochs, after
    5 warmup epochs. `decay_rate=1` gives a constant rate after the warmup.

    Example:
    >>> schedule = WarmupExponentialDecay(0.1, warmup_steps=10, decay_steps=100,
    ...                                   decay_rate=0.5)
    >>> [round(float(schedule(step)), 4) for step in (0, 5, 10, 109, 110)]
    [0.0, 0.05, 0.1, 0.1, 0.05]
    """

    def __init__(self, peak, warmup_steps, decay_steps, decay_rate=0.97):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        # A float, as in the reference code: 2.4 epochs of 7 steps decay every 16.8
        # steps, not every 16.
        self.decay_steps = float(decay_steps)
        if not self.decay_steps > 0:
            raise ValueError(
                "Invalid value for argument `decay_steps`. Expected a number > 0. "
                f"Received decay_steps={decay_steps!r}"
            )
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        after_warmup = ops.maximum(step - self.warmup_steps, 0.0)
        decayed = self.peak * ops.power(
            self.decay_rate, ops.floor(after_warmup / self.decay_steps)
        )
        if self.warmup_steps == 0:
            return decayed
        warming = self.peak * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warming, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
        }


def learning_rate_schedule(recipe, steps_per_epoch, epochs, global_batch_size):
    """The recipe's schedule for a run of `epochs` x `steps_per_epoch` steps.

    The peak follows the linear scaling rule (`recipe.scaled_learning_rate`); the
    warmup is capped at half the run so that short fine-tuning runs still decay.

    Example:
    >>> schedule = learning_rate_schedule(get_recipe("fine_tune"), steps_per_epoch=100,
    ...                                   epochs=3, global_batch_size=64)
    >>> float(schedule(0)) < float(schedule(30))  # warming up
    True
    """
    peak = recipe.scaled_learning_rate(global_batch_size)
    total_steps = max(int(steps_per_epoch * epochs), 1)
    warmup_steps = min(int(recipe.warmup_epochs * steps_per_epoch), total_steps // 2)
    if recipe.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else peak,
            decay_steps=max(total_steps - warmup_steps, 1),
            alpha=recipe.min_learning_rate_ratio,
            warmup_target=peak if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    decay_rate = recipe.decay_rate if recipe.schedule == "exponential" else 1.0
    return WarmupExponentialDecay(
        peak,
        warmup_steps=warmup_steps,
        decay_steps=recipe.decay_epochs * steps_per_epoch if decay_rate != 1.0 else 1,
        decay_rate=decay_rate,
    )
