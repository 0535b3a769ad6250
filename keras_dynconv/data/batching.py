"""The end of every pipeline: per-example seeds, batching, mixup, options, prefetch.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import tensorflow as tf

from keras_dynconv.data.mixup import mixup

# Offsets the mixup stream from the per-example stream drawn from the same seed.
_MIXUP_SEED_OFFSET = 1_000_003


def seed_stream(seed):
    """Endless dataset of `[2]` int64 seeds for stateless random ops.

    A fixed `seed` gives the same sequence for every pipeline built with it, and a
    new sequence each epoch; `None` draws a fresh sequence.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def with_seeds(dataset, seed):
    """`dataset` of `x` -> dataset of `(x, seed)`."""
    return tf.data.Dataset.zip((dataset, seed_stream(seed)))


def batch_and_finish(dataset, *, batch_size, drop_remainder, mixup_alpha, seed, deterministic):
    """Batches, mixes up (when `mixup_alpha > 0`), sets options and prefetches."""
    dataset = dataset.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
    )
    if mixup_alpha > 0:
        mixup_seed = None if seed is None else seed + _MIXUP_SEED_OFFSET
        dataset = with_seeds(dataset, mixup_seed).map(
            lambda batch, batch_seed: mixup(batch[0], batch[1], mixup_alpha, batch_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
