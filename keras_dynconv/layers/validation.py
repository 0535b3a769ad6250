"""Argument checks with messages in Keras' own form: name the argument and the value."""

import math
import numbers


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a strictly positive "
            f"integer. Received {name}={value!r}"
        )
    return int(value)


def int_pair(name, value):
    """An int or a pair of ints, each >= 1, returned as a tuple of two."""
    pair = (value, value) if isinstance(value, int) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a strictly positive "
            f"integer or a tuple of two. Received {name}={value!r}"
        )
    return pair


def one_of(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of "
            f"{sorted(choices, key=str)}. Received {name}={value!r}"
        )
    return value


def padding(value):
    normalized = value.lower() if isinstance(value, str) else value
    return one_of("padding", normalized, ("valid", "same"))


def fraction(name, value, allow_one=False):
    """A float in [0, 1) (or [0, 1] with `allow_one`)."""
    upper_ok = value <= 1 if allow_one else value < 1
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
        or not upper_ok
    ):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a float in {interval}. "
            f"Received {name}={value!r}"
        )
    return float(value)


def density(name, value):
    """A fraction of weights kept: a float in (0, 1]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 < value <= 1
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a float in (0, 1]. "
            f"Received {name}={value!r}"
        )
    return float(value)


def positive_float(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or math.isinf(value)
    ):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a strictly positive "
            f"finite number. Received {name}={value!r}"
        )
    return float(value)


def channels_last(data_format):
    if data_format not in (None, "channels_last"):
        if data_format == "channels_first":
            raise NotImplementedError(
                "keras_dynconv layers support only data_format='channels_last'. "
                "Received data_format='channels_first'."
            )
        one_of("data_format", data_format, ("channels_last", "channels_first"))
    return "channels_last"


def input_shape(layer_name, shape, rank=None, min_rank=2, built_channels=None):
    """Checks a layer's `inputs`: its rank, a known channel axis, the built channels."""
    rank_ok = len(shape) == rank if rank else len(shape) >= min_rank
    if not rank_ok or shape[-1] is None:
        expected = f"rank {rank}" if rank else f"rank >= {min_rank}"
        raise ValueError(
            f"Invalid `inputs` for layer '{layer_name}': expected a tensor of "
            f"{expected} (channels last) with a known channel axis. Received inputs "
            f"with shape {tuple(shape)}"
        )
    if built_channels is not None and shape[-1] != built_channels:
        raise ValueError(
            f"Invalid `inputs` for layer '{layer_name}': the layer was built for "
            f"{built_channels} input channels. Received inputs with shape {tuple(shape)}"
        )
