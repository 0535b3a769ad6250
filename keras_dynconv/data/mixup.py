"""Mixup (Zhang et al. 2018) on batches, as the EfficientNet / CondConv TPU input.

Each example is mixed with the example at the mirrored position of its batch,
`x_i' = w_i x_i + (1 - w_i) x_{B-1-i}` and the same for the one-hot labels, with
`w_i ~ Beta(alpha, alpha)` folded to `max(w, 1 - w)` so that the example keeps
its own label as the larger part (tensorflow/tpu `imagenet_input.py`).

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf


def sample_beta(shape, alpha, seed):
    """Stateless Beta(alpha, alpha) samples: `g1 / (g1 + g2)` of Gamma(alpha) draws."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    g1 = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha)
    g2 = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def mixup(images, labels, alpha, seed):
    """Mixes a batch of images `[B, ...]` and one-hot labels `[B, C]`.

    Args:
        images: float tensor `[B, H, W, C]`.
        labels: float one-hot (or smoothed) labels `[B, num_classes]`.
        alpha: Beta concentration (0.2 in the CondConv paper).
        seed: int tensor of shape `[2]`.

    Returns:
        `(images, labels)` mixed; each label row still sums to 1.

    Example:

    >>> import tensorflow as tf
    >>> images = tf.random.uniform([4, 8, 8, 3], maxval=255.0)
    >>> labels = tf.one_hot([0, 1, 2, 3], 10)
    >>> mixed_images, mixed_labels = mixup(images, labels, alpha=0.2, seed=[0, 1])
    >>> mixed_labels.shape
    TensorShape([4, 10])
    """
    batch_size = tf.shape(images)[0]
    weight = sample_beta([batch_size], alpha, seed)
    weight = tf.maximum(weight, 1.0 - weight)
    image_weight = tf.cast(tf.reshape(weight, [-1, 1, 1, 1]), images.dtype)
    label_weight = tf.cast(tf.reshape(weight, [-1, 1]), labels.dtype)
    images = images * image_weight + tf.reverse(images, [0]) * (1.0 - image_weight)
    labels = labels * label_weight + tf.reverse(labels, [0]) * (1.0 - label_weight)
    return images, labels
