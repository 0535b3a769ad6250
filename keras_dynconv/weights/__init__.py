"""Loading weights published for other frameworks into the zoo's models.

`load_timm_state_dict(model, state_dict)` copies a timm EfficientNet-family
`state_dict` (EfficientNet-B0/B1, EfficientNet-Lite0, MnasNet-A1 and the
`tf_efficientnet_cc_*` CondConv models) into the matching zoo model.
"""

from keras_dynconv.weights.timm_state_dict import load_timm_state_dict

__all__ = ["load_timm_state_dict"]
