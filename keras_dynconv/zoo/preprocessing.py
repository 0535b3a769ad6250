"""Input normalisation inside the model, so every zoo model takes raw [0, 255] RGB."""

import keras
from keras import ops

# Mean and standard deviation of [0, 255] RGB pixels used by each reference.
NORMALIZATIONS = {
    # torchvision / timm's ImageNet statistics (EfficientNet, timm's efficientnet_lite0).
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # (x - 127.5) / 127.5: keras.applications' MobileNet/V2, timm's tf_* CondConv models
    # (mean = std = 0.5 of [0, 1] input).
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # The official CondConv EfficientNet checkpoints (tensorflow/tpu condconv
    # efficientnet_condconv_builder.py: MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3).
    "condconv": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # keras.applications.ResNet50's "caffe" mode: BGR order, mean subtraction only.
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
}
BGR_NORMALIZATIONS = ("caffe",)


@keras.saving.register_keras_serializable(package="keras_dynconv")
class ImageNormalization(keras.layers.Layer):
    """`(x[..., order] - mean) / std` on `[B, H, W, 3]` images; no weights.

    Args:
        mode: a key of `NORMALIZATIONS` ("imagenet", "inception", "condconv", "caffe").
    """

    def __init__(self, mode="imagenet", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(
                f"Invalid value for argument `mode`. Expected one of "
                f"{sorted(NORMALIZATIONS)}. Received mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        mean, std = NORMALIZATIONS[self.mode]
        if self.mode in BGR_NORMALIZATIONS:
            inputs = ops.flip(inputs, axis=-1)
        mean = ops.convert_to_tensor(mean, dtype=inputs.dtype)
        std = ops.convert_to_tensor(std, dtype=inputs.dtype)
        return (inputs - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config
