"""AutoAugment with the ImageNet policy "v0" of the EfficientNet / CondConv TPU code.

Each image gets one of 25 sub-policies, chosen uniformly; a sub-policy applies two
operations in turn, each with its own probability and fixed magnitude
(tensorflow/tpu `models/official/efficientnet/autoaugment.py`, `policy_v0`,
`translate_const=250`, `cutout_const=100`). Stateless: a seed reproduces it.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

from keras_dynconv.data.augment_ops import apply_op
from keras_dynconv.data.augment_ops import level_to_argument

# (operation, probability, magnitude in [0, 10]) pairs.
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

# In pixels, whatever the image size: at 224 the reference's TranslateY of
# magnitude 9 (225 pixels) greys the whole image. Kept for fidelity.
TRANSLATE_CONST = 250
CUTOUT_CONST = 100


def distort_image_with_autoaugment(
    image, seed, *, policy=POLICY_V0, translate_const=TRANSLATE_CONST, cutout_const=CUTOUT_CONST
):
    """Applies a random sub-policy of `policy` to a uint8 `[H, W, 3]` image.

    Args:
        image: uint8 tensor `[H, W, 3]`.
        seed: int tensor of shape `[2]`.
        policy: sequence of sub-policies, each a sequence of
            `(operation, probability, magnitude)` of the same length.

    Returns:
        The augmented uint8 image, same shape.

    Example:

    >>> import tensorflow as tf
    >>> image = tf.zeros([32, 32, 3], tf.uint8)
    >>> distort_image_with_autoaugment(image, seed=[0, 1]).shape
    TensorShape([32, 32, 3])
    """
    # The sub-policy's ops, probabilities and arguments become table lookups so
    # that each step is one switch over the distinct ops: a switch over the 25
    # sub-policies with conditionals inside takes seconds to trace in tf.data.
    names = sorted({name for subpolicy in policy for name, _, _ in subpolicy}) + ["Identity"]
    steps = len(policy[0])
    op_index = [[names.index(name) for name, _, _ in subpolicy] for subpolicy in policy]
    probability = [[prob for _, prob, _ in subpolicy] for subpolicy in policy]
    argument = [
        [level_to_argument(name, level, translate_const=translate_const,
                           cutout_const=cutout_const) for name, _, level in subpolicy]
        for subpolicy in policy
    ]
    seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * steps)
    chosen = tf.random.stateless_uniform([], seeds[0], maxval=len(policy), dtype=tf.int32)
    for step in range(steps):
        apply = tf.random.stateless_uniform([], seeds[1 + 2 * step]) < tf.gather(
            tf.constant([row[step] for row in probability], tf.float32), chosen
        )
        index = tf.where(
            apply, tf.gather(tf.constant([row[step] for row in op_index]), chosen),
            len(names) - 1,
        )
        step_argument = tf.gather(tf.constant([row[step] for row in argument], tf.float32), chosen)
        image = apply_op(image, names, index, step_argument, seeds[2 + 2 * step])
    return image
