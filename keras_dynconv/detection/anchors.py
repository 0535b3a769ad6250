"""SSD anchors, made exactly as the TF Object Detection API's `ssd_anchor_generator`.

Source: tensorflow/models research/object_detection/anchor_generators/
multiple_grid_anchor_generator.py (`create_ssd_anchors`) and grid_anchor_generator.py
(`tile_anchors`), with the `ssd_mobilenet_v1_300x300_coco14_sync` configuration.

Anchors are normalised `[y_center, x_center, height, width]` of the image, ordered as
the box predictors' outputs are flattened: feature map by feature map, then row,
column and the box spec of the position.
"""

import dataclasses
import math

import numpy as np

from keras_dynconv.layers import validation


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """The `ssd_anchor_generator` settings.

    Attributes:
        min_scale, max_scale: anchor scales of the first and last feature map, as a
            fraction of the image's shorter side; the maps in between are spaced
            linearly.
        aspect_ratios: width / height of the boxes at each position.
        interpolated_scale_aspect_ratio: aspect ratio of one more box per position,
            at the geometric mean of the map's scale and the next one's (0: none).
        reduce_boxes_in_lowest_layer: the first map gets only 3 boxes, (0.1, 1:1),
            (min_scale, 2:1) and (min_scale, 1:2), as MobileNet-SSD does.

    Example:
    >>> [len(specs) for specs in AnchorConfig().box_specs(6)]  # boxes per position
    [3, 6, 6, 6, 6, 6]
    """

    min_scale: float = 0.2
    max_scale: float = 0.95
    # 0.3333, not 1/3: the reference configuration's value.
    aspect_ratios: tuple = (1.0, 2.0, 0.5, 3.0, 0.3333)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True

    def __post_init__(self):
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                "Expected 0 < min_scale <= max_scale. Received "
                f"min_scale={self.min_scale}, max_scale={self.max_scale}"
            )
        if not self.aspect_ratios or any(ratio <= 0 for ratio in self.aspect_ratios):
            raise ValueError(
                "`aspect_ratios` must be positive numbers. Received "
                f"aspect_ratios={self.aspect_ratios}"
            )
        object.__setattr__(self, "aspect_ratios", tuple(float(r) for r in self.aspect_ratios))

    def get_config(self):
        return {**dataclasses.asdict(self), "aspect_ratios": list(self.aspect_ratios)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "aspect_ratios": tuple(config["aspect_ratios"])})

    def box_specs(self, num_layers):
        """`[(scale, aspect_ratio), ...]` for each of `num_layers` feature maps."""
        num_layers = validation.positive_int("num_layers", num_layers)
        if num_layers == 1:
            scales = [self.min_scale]
        else:
            step = (self.max_scale - self.min_scale) / (num_layers - 1)
            scales = [self.min_scale + step * layer for layer in range(num_layers)]
        scales.append(1.0)
        specs = []
        for layer in range(num_layers):
            scale, next_scale = scales[layer], scales[layer + 1]
            if layer == 0 and self.reduce_boxes_in_lowest_layer:
                specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
                continue
            layer_specs = [(scale, ratio) for ratio in self.aspect_ratios]
            if self.interpolated_scale_aspect_ratio > 0:
                layer_specs.append(
                    (math.sqrt(scale * next_scale), self.interpolated_scale_aspect_ratio)
                )
            specs.append(layer_specs)
        return specs

    def boxes_per_position(self, num_layers):
        return [len(specs) for specs in self.box_specs(num_layers)]


def generate_anchors(feature_map_sizes, image_size, config=AnchorConfig()):
    """All anchors of an SSD, float32 `[N, 4]` normalised `[yc, xc, h, w]`.

    Args:
        feature_map_sizes: `[(height, width), ...]` of the predictor feature maps,
            highest resolution first.
        image_size: `(height, width)` of the input image. On a non-square image the
            boxes are scaled so that a box of scale s is s times the shorter side on
            both axes, as the reference does.
        config: an `AnchorConfig`.

    Example:

    >>> anchors = generate_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)],
    ...                            (300, 300))
    >>> anchors.shape
    (1917, 4)
    """
    feature_map_sizes = [tuple(int(side) for side in size) for size in feature_map_sizes]
    if not feature_map_sizes or any(
        len(size) != 2 or min(size) < 1 for size in feature_map_sizes
    ):
        raise ValueError(
            "`feature_map_sizes` must be a non-empty list of positive (height, width). "
            f"Received feature_map_sizes={feature_map_sizes}"
        )
    image_height, image_width = image_size
    shorter = min(image_height, image_width)
    base_height, base_width = shorter / image_height, shorter / image_width
    levels = []
    for (height, width), specs in zip(
        feature_map_sizes, config.box_specs(len(feature_map_sizes))
    ):
        scales = np.array([scale for scale, _ in specs], dtype="float64")
        ratios = np.sqrt(np.array([ratio for _, ratio in specs], dtype="float64"))
        box_heights = scales / ratios * base_height
        box_widths = scales * ratios * base_width
        # Strides and offsets of the grid: one cell per feature, centred.
        y_centers = (np.arange(height) + 0.5) / height
        x_centers = (np.arange(width) + 0.5) / width
        y_grid, x_grid, spec = np.meshgrid(
            y_centers, x_centers, np.arange(len(specs)), indexing="ij"
        )
        levels.append(
            np.stack(
                [y_grid, x_grid, box_heights[spec], box_widths[spec]], axis=-1
            ).reshape(-1, 4)
        )
    return np.concatenate(levels).astype("float32")


def anchor_corners(anchors):
    """`[yc, xc, h, w]` anchors as `[ymin, xmin, ymax, xmax]` (NumPy)."""
    anchors = np.asarray(anchors)
    half = anchors[:, 2:] / 2
    return np.concatenate([anchors[:, :2] - half, anchors[:, :2] + half], axis=-1)
