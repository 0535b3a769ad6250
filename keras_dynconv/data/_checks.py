"""Argument checks with Keras-style messages (no TensorFlow)."""

import numbers

from keras_dynconv.layers import validation


check_choice = validation.one_of


def check_positive_int(argument, value, allow_none=False):
    if value is None and allow_none:
        return
    validation.positive_int(argument, value)


def check_mixup(mixup_alpha, one_hot, training):
    if isinstance(mixup_alpha, bool) or not isinstance(mixup_alpha, numbers.Real) or mixup_alpha < 0:
        raise ValueError(
            "Invalid value for argument `mixup_alpha`. Expected a number >= 0 "
            f"(0 disables mixup). Received mixup_alpha={mixup_alpha!r}"
        )
    if mixup_alpha > 0 and not one_hot:
        raise ValueError(
            "Mixup mixes one-hot labels: `mixup_alpha > 0` needs `one_hot=True`. "
            f"Received mixup_alpha={mixup_alpha!r}, one_hot={one_hot!r}"
        )
    if mixup_alpha > 0 and not training:
        raise ValueError(
            "Mixup is a training augmentation: `mixup_alpha > 0` needs "
            f"`training=True`. Received mixup_alpha={mixup_alpha!r}, training={training!r}"
        )
