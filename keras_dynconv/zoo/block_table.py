"""Architectures as tables of block strings, decoded in one place (timm's notation).

A string such as `"ir_r2_k3_s2_e6_c24_se0.25"` is one group of blocks: type `ir`
(inverted residual) or `ds` (depthwise separable), repeated `r` times, kernel `k`,
stride `s` of the first block, expansion `e`, output channels `c`, squeeze-excite
ratio `se` (relative to the block's input channels) and `noskip` to drop the residual.
"""

import dataclasses
import math
import re

_OPTION = re.compile(r"^(r|k|s|e|c|se)([0-9.]+)$")


@dataclasses.dataclass(frozen=True)
class BlockGroup:
    kind: str
    repeats: int
    kernel_size: int
    stride: int
    expansion: float
    filters: int
    se_ratio: float = 0.0
    skip: bool = True


def parse_block_string(text):
    """Decodes one block string into a `BlockGroup`."""
    kind, *options = text.split("_")
    if kind not in ("ir", "ds"):
        raise ValueError(f"Unknown block type {kind!r} in block string {text!r}")
    values = {"e": "1", "se": "0"}
    skip = True
    for option in options:
        if option == "noskip":
            skip = False
            continue
        match = _OPTION.match(option)
        if not match:
            raise ValueError(f"Unknown option {option!r} in block string {text!r}")
        values[match.group(1)] = match.group(2)
    missing = {"r", "k", "s", "c"} - set(values)
    if missing:
        raise ValueError(f"Block string {text!r} lacks {sorted(missing)}")
    return BlockGroup(
        kind=kind,
        repeats=int(values["r"]),
        kernel_size=int(values["k"]),
        stride=int(values["s"]),
        expansion=float(values["e"]),
        filters=int(values["c"]),
        se_ratio=float(values["se"]),
        skip=skip,
    )


def make_divisible(value, divisor=8):
    """Rounds channels to a multiple of `divisor`, never more than 10% down.

    The rule of keras.applications' MobileNetV2 / EfficientNet and timm.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def scale_filters(filters, width):
    """Channels of a block group at width multiplier `width` (keras' MobileNetV2 rule)."""
    return make_divisible(int(filters * width))


def scale_repeats(repeats, depth):
    """Blocks of a group at depth multiplier `depth` (EfficientNet's rule)."""
    return int(math.ceil(depth * repeats))
