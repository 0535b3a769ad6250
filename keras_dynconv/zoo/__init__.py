"""Model zoo: static, CondConv, dynamic, sparse dynamic and Mixture-of-Depths networks,
and SSD detectors on (CondConv-)MobileNetV1.

Every builder follows `keras.applications`' signature and takes raw [0, 255] RGB.
`list_models()` names them all; `get_model(name, **kwargs)` builds one. Models are
`ZooModel`s: functional Keras models that skip Keras' per-layer call machinery for eager
inference on torch.
"""

from keras_dynconv.zoo.efficientnet import condconv_efficientnet_b0
from keras_dynconv.zoo.efficientnet import condconv_efficientnet_b0_depth
from keras_dynconv.zoo.efficientnet import condconv_efficientnet_b1
from keras_dynconv.zoo.efficientnet import condconv_efficientnet_lite0
from keras_dynconv.zoo.efficientnet import efficientnet_b0
from keras_dynconv.zoo.efficientnet import efficientnet_b1
from keras_dynconv.zoo.efficientnet import efficientnet_lite0
from keras_dynconv.zoo.mnasnet import condconv_mnasnet_a1
from keras_dynconv.zoo.mnasnet import mnasnet_a1
from keras_dynconv.zoo.mobilenet_v1 import condconv_mobilenet_v1
from keras_dynconv.zoo.mobilenet_v1 import mobilenet_v1
from keras_dynconv.zoo.mobilenet_v2 import condconv_mobilenet_v2
from keras_dynconv.zoo.mobilenet_v2 import dynamic_mobilenet_v2
from keras_dynconv.zoo.mobilenet_v2 import mobilenet_v2
from keras_dynconv.zoo.mobilenet_v2 import mobilenet_v2_mod
from keras_dynconv.zoo.mobilenet_v2 import sparse_dynamic_mobilenet_v2
from keras_dynconv.zoo.model import ZooModel
from keras_dynconv.zoo.registry import get_model
from keras_dynconv.zoo.registry import list_models
from keras_dynconv.zoo.registry import model_entry
from keras_dynconv.zoo.resnet import condconv_resnet50
from keras_dynconv.zoo.resnet import dynamic_resnet50
from keras_dynconv.zoo.resnet import resnet50
from keras_dynconv.zoo.resnet import resnet75_mod
from keras_dynconv.zoo.resnet import resnet86_mod
from keras_dynconv.zoo.resnet import sparse_dynamic_resnet50
from keras_dynconv.zoo.ssd import condconv_ssd300_mobilenet_v1
from keras_dynconv.zoo.ssd import ssd300_mobilenet_v1
from keras_dynconv.zoo.features import feature_extractor
from keras_dynconv.zoo.features import pyramid_outputs
