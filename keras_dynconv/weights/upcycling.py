"""Upcycling: a dynamic model initialised from its static twin's (pretrained) weights.

Why. Training CondConv, dynamic or sparse dynamic networks from scratch costs a full
ImageNet schedule, while static checkpoints of the same architectures are everywhere.
"Sparse Upcycling" (Komatsuzaki et al., ICLR 2023) showed for mixture-of-experts
Transformers that initialising every expert from a dense checkpoint and training on
reaches a better model for much less compute than training the sparse model from
scratch. Dynamic convolutions are mixtures of kernels, so the idea carries over:
`upcycle(static_model, dynamic_model)` fills the dynamic model so that it computes
the static model's function at start, and fine-tuning then specialises the experts.

Every expert layer (`CondConv2D`, `CondDepthwiseConv2D`, `CondDense`, `DynamicConv2D`,
`DynamicDepthwiseConv2D`, `SparseDynamicConv2D`, `SparseDynamicDepthwiseConv2D`)
computes the per-example kernel `sum_e r_e W_e` and bias `sum_e r_e b_e` (E experts,
routing weights r). With W and b the static layer's kernel and bias, the start must
satisfy `sum_e r_e W_e = W` for every input, and must not be a point from which the
experts can never become different (below). The initialisation:

* Every expert bias is a copy: `b_e = b`.
* Layers with their own softmax attention (dynamic convolution and SD-Conv:
  `softmax(FC(ReLU(FC(GAP(x)))) / T)`): the experts are exact copies, `W_e = W`, and
  the attention keeps its random initialisation. Softmax weights sum to one for any
  logits, so `sum_e r_e W = W` whatever the attention and the temperature T.
  (`uniform_attention=True` instead zeroes the last FC's kernel and bias, so the
  attention is exactly 1/K for any T, and perturbs the experts as below.)
* Every other expert layer (CondConv: sigmoid routing, shared by a block's
  convolutions in `blockN_routing` layers or owned by the layer): the routing is made
  uniform, `r_e = 1/E` for every input, by zeroing its (last) kernel and setting its
  bias to `T * logit(1/E) = -T * log(E - 1)` (sigmoid; `T * atanh(1/E)` for tanh,
  `T / E` for relu, 0 for softmax); a hidden routing layer keeps its random weights.
  The experts are `W_e = W + eps_e` with `eps_e = expert_noise * std(W) * (n_e -
  mean_e' n_e')`, `n_e ~ N(0, 1)`: the perturbations sum to zero over the experts, so
  `sum_e (1/E) W_e = W` (up to float32 rounding). With `expert_noise=0` every
  expert is an exact copy of W. Sigmoid and tanh routing need E >= 2.
* SD-Conv's masks (`SparseDynamicConv2D`, `SparseDynamicDepthwiseConv2D`): the
  threshold becomes `tau = -THRESHOLD_MARGIN`, so that every mask entry is 1 (see
  `_sparse_threshold` for what makes it 1). `target_density` is left to the scheduler.
* Every other layer with weights (stem, batch norms with their moving statistics,
  squeeze-excite, head, static convolutions, classifier) is copied as is.

Why the experts must be told apart. With `G_b = dL/dW_b` the gradient of example b's
combined kernel, expert e receives `sum_b r_be G_b` and routing weight r_be receives
`g_be = <G_b, W_e>`. Identical experts under uniform routing are a fixed point: `g_be`
is the same for every e, which a softmax turns into a zero logit gradient
(`r_e (g_e - sum_k r_k g_k) = 0`) and a sigmoid into a non-zero but identical
gradient for every routing column. `r_be` then stays equal across experts, every
expert keeps receiving the same update, and the model trains as its static twin
(with an input-dependent gain at most) for ever; the tests check this. The two rules
above break the tie without changing the function: a random softmax attention weights
identical experts differently, so their updates differ from the first step (the role
the randomly initialised router plays in Sparse Upcycling); under uniform routing the
zero-sum perturbation makes `<G_b, W_e>` differ between experts, so the routing learns
expert-specific columns from the first step and the experts diverge from the second
(slowly: the effect is proportional to `expert_noise`).

Matching. Layers are matched by name (the zoo names a static model's layers and its
dynamic twin's identically; a CondConv twin only adds `blockN_routing` layers). The
static layer's type decides the copy: `Conv2D` -> `CondConv2D` and its subclasses (or
`Conv2D`), `DepthwiseConv2D` -> `CondDepthwiseConv2D` and its subclasses (or
`DepthwiseConv2D`), `Dense` -> `CondDense` (or `Dense`), anything else -> the same
type. Matching is strict: every layer with weights of the dynamic model is filled
(its `Routing` layers by the rule above), every static layer with weights is used,
weight shapes and the settings that change the function (kernel size, strides,
padding, dilation, bias, activation, batch-norm epsilon) agree, and both models
normalise their inputs alike (the `ImageNormalization` layer named "normalization");
otherwise a `ValueError` names the layer, and nothing has been assigned.
Mixture-of-Depths models (`MoDBlock`) have no static twin.

Example:
>>> from keras_dynconv import zoo
>>> static = zoo.mobilenet_v2(input_shape=(32, 32, 3), classes=10, alpha=0.35)
>>> dynamic = zoo.condconv_mobilenet_v2(input_shape=(32, 32, 3), classes=10, alpha=0.35)
>>> report = upcycle(static, dynamic)
>>> name, action = report[-1]
>>> name
'predictions'
>>> experts, routing = action.split("; ")
>>> experts
'8 experts <- kernel + zero-sum noise (0.01 std), bias per expert'
>>> routing
'own routing: sigmoid routing: kernel 0, bias -1.946 -> every weight 0.125'
"""

import math

import keras
import numpy as np

from keras_dynconv.layers.cond_conv import CondConv2D
from keras_dynconv.layers.cond_conv import CondDense
from keras_dynconv.layers.cond_conv import CondDepthwiseConv2D
from keras_dynconv.layers.expert_layer import ExpertLayer
from keras_dynconv.layers.mod_block import MoDBlock
from keras_dynconv.layers.routing import Routing
from keras_dynconv.layers.sparse_dynamic_conv import SparseMaskMixin
from keras_dynconv.layers.sparse_dynamic_conv import soft_magnitude_mask
from keras_dynconv.layers.sparse_dynamic_conv import straight_through_round

# tau = -THRESHOLD_MARGIN keeps every weight with float32 margin (see `_sparse_threshold`).
THRESHOLD_MARGIN = 1e-3
DEFAULT_EXPERT_NOISE = 1e-2

# Static layer type -> the expert layer type it can be upcycled into.
EXPERT_COUNTERPARTS = (
    (keras.layers.Conv2D, CondConv2D),
    (keras.layers.DepthwiseConv2D, CondDepthwiseConv2D),
    (keras.layers.Dense, CondDense),
)
# Attributes that change what a layer computes; compared when both layers have them.
FUNCTION_ATTRIBUTES = (
    "kernel_size", "strides", "padding", "dilation_rate", "depth_multiplier",
    "use_bias", "epsilon", "center", "scale", "axis",
)
NORMALIZATION_LAYER = "normalization"


def upcycle(
    static_model,
    dynamic_model,
    expert_noise=DEFAULT_EXPERT_NOISE,
    uniform_attention=False,
    seed=0,
):
    """Fills `dynamic_model` from `static_model` so that both compute the same function.

    See the module docstring for the exact initialisation.

    Args:
        static_model: a built Keras model, e.g. `zoo.mobilenet_v2(...)` with
            pretrained weights.
        dynamic_model: its dynamic twin, e.g. `zoo.condconv_mobilenet_v2(...)` built
            with the same architecture arguments; modified in place.
        expert_noise: scale, relative to the standard deviation of each static
            kernel, of the zero-sum perturbation of the experts of layers with
            uniform routing (0: exact copies, which gradient descent cannot tell
            apart unless something else, e.g. expert dropout, does).
        uniform_attention: zero the last layer of the softmax attention of dynamic
            and SD-Conv layers (attention 1/K, experts perturbed) instead of keeping
            its random initialisation (experts exact copies).
        seed: seed of the perturbation (NumPy).

    Returns:
        A list of `(layer name, what was done)`, in the dynamic model's layer order.

    Raises:
        ValueError: when the models are not twins (a layer missing on either side,
            an incompatible type, shape or setting), normalise their inputs
            differently, contain a Mixture-of-Depths block, or a routing function
            cannot be made uniform (sigmoid or tanh routing over one expert).

    Example:
    >>> static = zoo.mobilenet_v1(alpha=0.25, input_shape=(32, 32, 3), classes=5)
    >>> dynamic = zoo.condconv_mobilenet_v1(alpha=0.25, num_experts=4, input_shape=(32, 32, 3),
    ...                                     classes=5)
    >>> report = upcycle(static, dynamic)
    >>> x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> bool(np.allclose(keras.ops.convert_to_numpy(static(x)),
    ...                  keras.ops.convert_to_numpy(dynamic(x)), atol=1e-4))
    True
    """
    if isinstance(expert_noise, bool) or not isinstance(expert_noise, (int, float)) or (
        not math.isfinite(expert_noise) or expert_noise < 0
    ):
        raise ValueError(
            "Invalid value for argument `expert_noise`. Expected a finite number >= 0. "
            f"Received expert_noise={expert_noise!r}"
        )
    if not isinstance(uniform_attention, bool):
        raise ValueError(
            "Invalid value for argument `uniform_attention`. Expected True or False. "
            f"Received uniform_attention={uniform_attention!r}"
        )
    for role, model in (("static_model", static_model), ("dynamic_model", dynamic_model)):
        if not isinstance(model, keras.Model):
            raise ValueError(f"`{role}` must be a keras.Model. Received {model!r}")
        _check_no_mixture_of_depths(role, model)
    _check_normalization(static_model, dynamic_model)

    static_layers = {layer.name: layer for layer in static_model.layers if layer.weights}
    rng = np.random.default_rng(seed)
    assignments = []  # (variable, array): all checks pass before anything is assigned
    report = []
    used = set()
    for layer in dynamic_model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, Routing):
            if layer.name in static_layers:
                raise ValueError(
                    f"Layer '{layer.name}' is a Routing layer of the dynamic model but "
                    "has weights in the static model too: the models are not twins."
                )
            report.append((layer.name, _routing_plan(layer, layer.name, assignments)))
            continue
        static = static_layers.get(layer.name)
        if static is None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) of the dynamic model "
                f"'{dynamic_model.name}' has no same-named layer with weights in the "
                f"static model '{static_model.name}'."
            )
        used.add(layer.name)
        _check_function(static, layer)
        if isinstance(layer, ExpertLayer):
            action = _expert_plan(
                static, layer, expert_noise, uniform_attention, rng, assignments
            )
        else:
            action = _copy_plan(static, layer, assignments)
        report.append((layer.name, action))
    unused = [name for name in static_layers if name not in used]
    if unused:
        raise ValueError(
            f"Layer '{unused[0]}' of the static model '{static_model.name}' has no "
            f"same-named layer with weights in the dynamic model '{dynamic_model.name}' "
            f"(unused static layers: {unused})."
        )
    for variable, value in assignments:
        variable.assign(value)
    return report


# --- checks ---------------------------------------------------------------------
def _nested_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _nested_layers(layer)


def _check_no_mixture_of_depths(role, model):
    for layer in _nested_layers(model):
        if isinstance(layer, MoDBlock):
            raise ValueError(
                f"`{role}` '{model.name}' contains the Mixture-of-Depths block "
                f"'{layer.name}': MoD models change the network's depth, not its "
                "kernels, so they have no static twin to upcycle from."
            )


def _normalization_mode(model):
    try:
        layer = model.get_layer(NORMALIZATION_LAYER)
    except ValueError:
        return None
    return getattr(layer, "mode", type(layer).__name__)


def _check_normalization(static_model, dynamic_model):
    static_mode = _normalization_mode(static_model)
    dynamic_mode = _normalization_mode(dynamic_model)
    if static_mode != dynamic_mode:
        raise ValueError(
            f"Layer '{NORMALIZATION_LAYER}': the models normalise their inputs "
            f"differently (static '{static_model.name}': {static_mode!r}, dynamic "
            f"'{dynamic_model.name}': {dynamic_mode!r}; None: no normalisation layer), so "
            "no weights make them compute the same function. Build both with the same "
            "normalisation, or both with include_preprocessing=False."
        )


def _normalised(value):
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str):
        return value.lower()
    return value


def _function_settings(layer):
    settings = {
        key: _normalised(getattr(layer, key))
        for key in FUNCTION_ATTRIBUTES
        if hasattr(layer, key)
    }
    if hasattr(layer, "activation") and not isinstance(layer, Routing):
        # By name: keras.activations.serialize imports TensorFlow on every backend.
        activation = layer.activation
        settings["activation"] = getattr(activation, "__name__", type(activation).__name__)
    return settings


def _check_function(static, dynamic):
    static_settings = _function_settings(static)
    dynamic_settings = _function_settings(dynamic)
    for key in sorted(set(static_settings) & set(dynamic_settings)):
        if static_settings[key] != dynamic_settings[key]:
            raise ValueError(
                f"Layer '{dynamic.name}': `{key}` differs between the static "
                f"({type(static).__name__}: {static_settings[key]!r}) and the dynamic "
                f"({type(dynamic).__name__}: {dynamic_settings[key]!r}) model."
            )


def _check_shape(layer_name, what, variable, expected_shape):
    if tuple(variable.shape) != tuple(expected_shape):
        raise ValueError(
            f"Layer '{layer_name}': the dynamic model's {what} has shape "
            f"{tuple(variable.shape)}, the static weights need {tuple(expected_shape)}."
        )


def _check_mask_keeps_everything(layer, experts, threshold):
    """Runs the layer's own mask on the smallest |weight|: the mask grows with |W|."""
    smallest = keras.ops.convert_to_tensor(np.abs(experts).min(keepdims=True))
    mask = straight_through_round(
        soft_magnitude_mask(
            smallest, keras.ops.cast(threshold, smallest.dtype), layer.mask_temperature
        )
    )
    if float(keras.ops.convert_to_numpy(mask).min()) != 1.0:
        raise ValueError(
            f"Layer '{layer.name}': the mask with threshold {threshold} drops weights "
            f"of magnitude {float(np.abs(experts).min())}."
        )


# --- plans ----------------------------------------------------------------------
def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _copy_plan(static, dynamic, assignments):
    if type(static) is not type(dynamic):
        raise ValueError(
            f"Layer '{dynamic.name}': a static {type(static).__name__} cannot be "
            f"upcycled into a {type(dynamic).__name__}."
        )
    if len(static.weights) != len(dynamic.weights):
        raise ValueError(
            f"Layer '{dynamic.name}': {len(static.weights)} weights in the static "
            f"model, {len(dynamic.weights)} in the dynamic model."
        )
    for source, target in zip(static.weights, dynamic.weights):
        _check_shape(dynamic.name, f"weight '{target.name}'", target, source.shape)
        assignments.append((target, _numpy(source)))
    count = len(static.weights)
    return f"copied ({type(static).__name__}, {count} weight{'s' if count != 1 else ''})"


def _expert_plan(static, dynamic, expert_noise, uniform_attention, rng, assignments):
    counterpart = next(
        (expert for plain, expert in EXPERT_COUNTERPARTS if isinstance(static, plain)), None
    )
    if counterpart is None or not isinstance(dynamic, counterpart):
        raise ValueError(
            f"Layer '{dynamic.name}': a static {type(static).__name__} cannot be "
            f"upcycled into a {type(dynamic).__name__}."
        )
    if getattr(static, "groups", 1) != 1:
        raise ValueError(
            f"Layer '{dynamic.name}': grouped convolutions (groups={static.groups}) have "
            "no dynamic counterpart."
        )
    handled = []
    num_experts = dynamic.num_experts
    kernel = _numpy(static.kernel)
    _check_shape(dynamic.name, "expert kernel", dynamic.kernel, (num_experts,) + kernel.shape)
    routing = dynamic.routing_fn
    # Softmax weights sum to one: identical experts give W under any attention.
    keeps_attention = (
        routing is not None and routing.activation == "softmax" and not uniform_attention
    )
    experts = np.broadcast_to(kernel, (num_experts,) + kernel.shape)
    perturbed = expert_noise > 0 and num_experts > 1 and not keeps_attention
    if perturbed:
        # Zero-sum over the experts: under uniform routing their mix is exactly W.
        noise = rng.standard_normal(experts.shape, dtype="float32")
        noise -= noise.mean(axis=0, keepdims=True)
        experts = experts + np.float32(expert_noise * float(kernel.std())) * noise
    assignments.append((dynamic.kernel, experts.astype(kernel.dtype)))
    handled.append(dynamic.kernel)
    action = f"{num_experts} experts <- kernel"
    if perturbed:
        action += f" + zero-sum noise ({expert_noise:g} std)"
    if dynamic.use_bias:
        bias = _numpy(static.bias)
        _check_shape(dynamic.name, "expert bias", dynamic.bias, (num_experts,) + bias.shape)
        assignments.append((dynamic.bias, np.broadcast_to(bias, (num_experts,) + bias.shape)))
        handled.append(dynamic.bias)
        action += ", bias per expert"
    if keeps_attention:
        action += "; own softmax attention kept (random; sums to one)"
        handled.extend(routing.weights)
    elif routing is not None:
        action += "; own routing: " + _routing_plan(routing, dynamic.name, assignments)
        handled.extend(routing.weights)
    if isinstance(dynamic, SparseMaskMixin):
        threshold = _sparse_threshold()
        _check_mask_keeps_everything(dynamic, experts, threshold)
        assignments.append((dynamic.threshold, np.asarray(threshold, "float32")))
        handled.extend([dynamic.threshold, dynamic.target_density])
        action += f"; threshold {threshold:g}: masks keep every weight"
    unknown = [w.path for w in dynamic.weights if not any(w is h for h in handled)]
    if unknown:
        raise ValueError(
            f"Layer '{dynamic.name}' ({type(dynamic).__name__}) has weights upcycling "
            f"does not know how to fill: {unknown}"
        )
    return action


def _sparse_threshold():
    """The SD-Conv threshold tau that makes every mask entry 1, whatever the kernel.

    The layer's forward mask is `round(sigmoid((2 psi - 1) / T_m))` with
    `psi = sigmoid(|W| - tau)` and `T_m = 1/1024` (straight-through: the forward
    value is exactly the rounded one). It is 1 exactly when the inner sigmoid is
    > 1/2 in floating point, i.e. when `|W| - tau > 0` by more than float32's
    resolution around `sigmoid(0) = 1/2` (about 1e-7; `round(0.5)` is 0). The
    layer's default `tau = 0` therefore drops exact zeros and weights below about 1e-7
    in magnitude; `tau = -1e-3` keeps every weight (`psi >= sigmoid(1e-3)`, soft
    mask >= 0.62) while the threshold stays close to where SD-Conv's schedule
    starts, and weights near zero keep a non-zero gradient so tau still learns.
    """
    return -THRESHOLD_MARGIN


def _uniform_logit(routing, owner):
    """Pre-temperature logit whose activation is 1/E (the same for every expert)."""
    num_experts = routing.num_experts
    if routing.activation == "softmax":
        return 0.0
    if routing.activation == "relu":
        return 1.0 / num_experts
    if num_experts < 2:
        raise ValueError(
            f"Layer '{owner}': {routing.activation} routing over a single expert "
            "cannot output exactly 1, so the dynamic layer cannot start as the static "
            "one. Use num_experts >= 2."
        )
    if routing.activation == "sigmoid":
        return -math.log(num_experts - 1)  # logit(1/E)
    return math.atanh(1.0 / num_experts)  # tanh


def _routing_plan(routing, owner, assignments):
    """Zeroes the routing's last kernel and sets its bias so that r_e = 1/E."""
    temperature = float(_numpy(routing.temperature))
    logit = _uniform_logit(routing, owner)
    # Only the last FC is zeroed. A hidden FC (dynamic convolution's attention with
    # uniform_attention=True) keeps its random weights, so its ReLU output h is
    # non-zero for most inputs: the last kernel's gradient, h^T dL/dz, is then non-zero
    # as soon as the experts differ (dL/dz_e = (1/K)(g_e - mean_k g_k) with
    # g_e = <dL/dW_combined, W_e>), and from the second step on the hidden layer learns
    # through the now non-zero last kernel. Zeroing both would make h = relu(0) = 0:
    # neither kernel would ever get a gradient (the hidden one only through the zero
    # last kernel), and only the last bias would learn, an input-independent routing.
    assignments.append((routing.kernel, np.zeros(tuple(routing.kernel.shape), "float32")))
    bias = np.full(tuple(routing.bias.shape), logit * temperature, "float32")
    assignments.append((routing.bias, bias))
    weight = 1.0 / routing.num_experts
    if routing.activation == "softmax":
        return f"softmax attention: last FC zeroed -> every weight {weight:g}"
    return (
        f"{routing.activation} routing: kernel 0, bias {bias[0]:.4g} -> every "
        f"weight {weight:g}"
    )
