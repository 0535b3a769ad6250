"""The image operations of AutoAugment and RandAugment, on uint8 `[H, W, 3]` tensors.

Semantics and magnitudes follow tensorflow/tpu `models/official/efficientnet/
autoaugment.py` (the policy search's PIL operations, in TF ops so they run inside
`tf.data`). Random choices (sign of a rotation, cutout position) are stateless:
each op takes a `[2]` int seed.

This module imports TensorFlow: the pipeline functions import it lazily.
"""

import math

import tensorflow as tf

MAX_LEVEL = 10.0
# Geometric ops fill uncovered pixels with mid grey, as the reference.
FILL_VALUE = 128


def blend(image1, image2, factor):
    """`image1 + factor * (image2 - image1)`: interpolates for factor in [0, 1],
    extrapolates above (PIL ImageEnhance)."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def invert(image):
    return 255 - image


def solarize(image, threshold=128):
    # int32 comparison: the reference's threshold reaches 256 at magnitude 10.
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition=0, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def posterize(image, bits):
    """Keeps the `bits` high bits of each value (PIL; 0 bits gives black)."""
    mask = tf.bitwise.left_shift(255, 8 - tf.cast(bits, tf.int32)) % 256
    return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def color(image, factor):
    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(grey, image, factor)


def contrast(image, factor):
    # PIL blends with the mean grey level. (The TPU reference divides the pixel
    # count by 256 instead, a known slip; the magnitudes do not depend on it.)
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blends with PIL's SMOOTH filter of the image; the 1-pixel border is kept."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], padding="VALID"
    )[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    smooth = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(smooth, image, factor)


def autocontrast(image):
    """Stretches each channel to [0, 255] (PIL ImageOps.autocontrast)."""
    image = tf.cast(image, tf.float32)
    low = tf.reduce_min(image, axis=[0, 1])
    high = tf.reduce_max(image, axis=[0, 1])
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1.0), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return tf.cast(tf.clip_by_value((image - offset) * scale, 0.0, 255.0), tf.uint8)


def equalize(image):
    """Histogram equalisation of each channel (PIL ImageOps.equalize)."""

    def channel(values):
        values = tf.cast(values, tf.int32)
        histogram = tf.histogram_fixed_width(values, [0, 255], nbins=256)
        nonzero = tf.boolean_mask(histogram, histogram > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        # A select, not a tf.cond: branches make tf.data tracing slow.
        return tf.cast(tf.where(step > 0, tf.gather(lut, values), values), tf.uint8)

    return tf.stack([channel(image[:, :, c]) for c in range(3)], axis=-1)


def _transform(image, transform):
    """Projective transform (output pixel -> input pixel), nearest, grey fill."""
    transform = tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=float(FILL_VALUE),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )[0]


def rotate(image, degrees):
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    width = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def translate_x(image, pixels):
    return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, pixels):
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def shear_x(image, level):
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def cutout(image, pad_size, seed):
    """Greys a `2 * pad_size` square (clipped at the borders) at a random centre."""
    shape = tf.shape(image)
    pad_size = tf.cast(pad_size, tf.int32)
    center = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    center_y, center_x = center[0] % shape[0], center[1] % shape[1]
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = (
        (rows >= center_y - pad_size) & (rows < center_y + pad_size)
        & (cols >= center_x - pad_size) & (cols < center_x + pad_size)
    )
    return tf.where(inside[:, :, None], tf.constant(FILL_VALUE, tf.uint8), image)


def _random_sign(value, seed):
    return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -value, value)


# fn(image, argument, seed) per operation. `argument` is what `level_to_argument`
# gives, as a float32 scalar tensor, so that one graph serves every magnitude.
OPS = {
    "Identity": lambda image, arg, seed: image,
    "AutoContrast": lambda image, arg, seed: autocontrast(image),
    "Equalize": lambda image, arg, seed: equalize(image),
    "Invert": lambda image, arg, seed: invert(image),
    "Rotate": lambda image, arg, seed: rotate(image, _random_sign(arg, seed)),
    "Posterize": lambda image, arg, seed: posterize(image, arg),
    "Solarize": lambda image, arg, seed: solarize(image, tf.cast(arg, tf.int32)),
    "SolarizeAdd": lambda image, arg, seed: solarize_add(image, tf.cast(arg, tf.int32)),
    "Color": lambda image, arg, seed: color(image, arg),
    "Contrast": lambda image, arg, seed: contrast(image, arg),
    "Brightness": lambda image, arg, seed: brightness(image, arg),
    "Sharpness": lambda image, arg, seed: sharpness(image, arg),
    "ShearX": lambda image, arg, seed: shear_x(image, _random_sign(arg, seed)),
    "ShearY": lambda image, arg, seed: shear_y(image, _random_sign(arg, seed)),
    "TranslateX": lambda image, arg, seed: translate_x(image, _random_sign(arg, seed)),
    "TranslateY": lambda image, arg, seed: translate_y(image, _random_sign(arg, seed)),
    "Cutout": lambda image, arg, seed: cutout(image, arg, seed),
}


def level_to_argument(name, level, *, translate_const, cutout_const):
    """The reference's argument of op `name` at `level` in [0, 10] (before the
    random sign): degrees up to 30, shears up to 0.3, translations up to
    `translate_const` pixels, enhancement factors 0.1-1.9, ... Computed in Python
    float64 like the reference, so integer arguments truncate the same way."""
    magnitude = level / MAX_LEVEL
    if name in ("Identity", "AutoContrast", "Equalize", "Invert"):
        return 0.0
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return magnitude * 1.8 + 0.1
    arguments = {
        "Rotate": magnitude * 30.0,
        "Posterize": int(magnitude * 4),
        "Solarize": int(magnitude * 256),
        "SolarizeAdd": int(magnitude * 110),
        "ShearX": magnitude * 0.3,
        "ShearY": magnitude * 0.3,
        "TranslateX": magnitude * float(translate_const),
        "TranslateY": magnitude * float(translate_const),
        "Cutout": int(magnitude * cutout_const),
    }
    if name not in arguments:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of {sorted(OPS)}. "
            f"Received name={name!r}"
        )
    return float(arguments[name])


def apply_op(image, names, index, argument, seed):
    """Applies `OPS[names[index]]` with `argument`: one graph branch per name."""
    image = tf.convert_to_tensor(image)
    branches = [
        lambda op=OPS[name]: tf.ensure_shape(op(image, argument, seed), image.shape)
        for name in names
    ]
    return tf.switch_case(index, branches)
