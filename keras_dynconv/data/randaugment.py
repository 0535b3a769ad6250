"""RandAugment as the EfficientNet TPU code: N random operations at magnitude M.

tensorflow/tpu `models/official/efficientnet/autoaugment.py`,
`distort_image_with_randaugment` (EfficientNet defaults N=2, M=10,
`translate_const=100`, `cutout_const=40`): each layer picks one of 16 operations
uniformly and always applies it. Stateless: a seed reproduces it.

`keras.layers.RandAugment` also runs inside `tf.data` on every backend, but its
`factor` does not map to the reference magnitudes (factor 0.5 rotates up to 180
degrees) and its seed does not make a `tf.data` pipeline reproducible; hence this.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

from keras_dynconv.data.augment_ops import apply_op
from keras_dynconv.data.augment_ops import level_to_argument

RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
    "TranslateY", "Cutout", "SolarizeAdd",
)
NUM_LAYERS = 2
MAGNITUDE = 10
TRANSLATE_CONST = 100
CUTOUT_CONST = 40


def distort_image_with_randaugment(
    image, seed, *, num_layers=NUM_LAYERS, magnitude=MAGNITUDE,
    translate_const=TRANSLATE_CONST, cutout_const=CUTOUT_CONST,
):
    """Applies `num_layers` random operations at `magnitude` to a uint8 `[H, W, 3]` image.

    Args:
        image: uint8 tensor `[H, W, 3]`.
        seed: int tensor of shape `[2]`.
        num_layers: operations applied in turn (N).
        magnitude: shared magnitude in [0, 10] (M).

    Returns:
        The augmented uint8 image, same shape.

    Example:

    >>> import tensorflow as tf
    >>> image = tf.zeros([32, 32, 3], tf.uint8)
    >>> distort_image_with_randaugment(image, seed=[0, 1]).shape
    TensorShape([32, 32, 3])
    """
    arguments = tf.constant(
        [level_to_argument(name, float(magnitude), translate_const=translate_const,
                           cutout_const=cutout_const) for name in RANDAUGMENT_OPS],
        tf.float32,
    )
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        select_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
        index = tf.random.stateless_uniform(
            [], select_seed, maxval=len(RANDAUGMENT_OPS), dtype=tf.int32
        )
        image = apply_op(image, RANDAUGMENT_OPS, index, tf.gather(arguments, index), op_seed)
    return image
