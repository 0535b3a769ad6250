"""`weights="imagenet"` for zoo builders: resolve, fetch, convert once, cache, load.

The first use of a registered weights set downloads its source (`download.py`),
converts it into the full reference model (include_top, its published classes) and
saves that as `.weights.h5` in `$KERAS_HOME/models/keras_dynconv/converted/`, with a
sidecar JSON holding the file's sha256 and the model's layer signature. Later uses
verify the sha256 and load the cached file; a damaged file is deleted and converted
again, never loaded.

A model with the reference's layers takes the file directly. A model without the
classifier (`include_top=False`) or with another number of classes gets every layer
but the classifier, copied by name from the reference model; the new classifier keeps
its initialisation (logged once). Upcycled weights ("imagenet-upcycled") are made
at load time from the static twin's cached weights.
"""

import inspect
import json
import logging
import os

from keras_dynconv.weights import download
from keras_dynconv.weights.registry import find_weights
from keras_dynconv.weights.registry import list_weights
from keras_dynconv.weights.registry import weights_names

logger = logging.getLogger("keras_dynconv")
_already_said = set()


def _say_once(message):
    if message not in _already_said:
        _already_said.add(message)
        logger.warning(message)


# --- converters: source file -> weights of the reference model --------------------
def _convert_timm(model, path, source, entry):
    from keras_dynconv.weights.timm_state_dict import load_timm_state_dict
    from keras_dynconv.weights.torch_checkpoint import read_state_dict

    load_timm_state_dict(model, read_state_dict(path))


def _convert_tf_checkpoint(model, path, source, entry):
    from keras_dynconv.weights.tf_checkpoint import load_tf_checkpoint

    directory = f"{path}_extracted"
    if not os.path.isdir(directory):
        import tarfile

        partial = f"{directory}.partial"
        with tarfile.open(path) as archive:
            archive.extractall(partial, filter="data")
        os.replace(partial, directory)
    load_tf_checkpoint(model, _checkpoint_dir(directory))


def _checkpoint_dir(directory):
    """The folder inside an extracted tarball that holds the checkpoint files."""
    for root, _, files in os.walk(directory):
        if any(name.endswith(".index") for name in files):
            return root
    raise ValueError(f"No TF checkpoint (*.index) found under {directory}")


def _convert_keras_applications(model, path, source, entry):
    from keras_dynconv.weights.keras_applications import build_keras_applications_model
    from keras_dynconv.weights.keras_applications import copy_keras_applications_weights

    reference = build_keras_applications_model(entry.model, path, **entry.required_arguments)
    copy_keras_applications_weights(reference, model)


CONVERTERS = {
    "timm-state-dict": _convert_timm,
    "tf-checkpoint": _convert_tf_checkpoint,
    "keras-applications": _convert_keras_applications,
}


# --- the converted-weights cache -------------------------------------------------------
def layer_signature(model):
    """[(layer name, [variable shapes])] of the layers that hold weights."""
    return [
        [layer.name, [list(variable.shape) for variable in layer.weights]]
        for layer in model.layers
        if layer.weights
    ]


def converted_path(entry):
    arguments = "".join(f"-{key}{value}" for key, value in entry.arguments)
    return os.path.join(
        download.cache_root(), "converted", f"{entry.model}-{entry.name}{arguments}.weights.h5"
    )


def _read_sidecar(path):
    """The cache entry's metadata if the file is intact, else None (and delete it)."""
    sidecar = f"{path}.json"
    if not os.path.exists(path):
        return None
    try:
        with open(sidecar) as file:
            metadata = json.load(file)
        if download.sha256_of(path) == metadata["sha256"]:
            return metadata
        reason = "its sha256 does not match the one recorded at conversion"
    except (OSError, ValueError, KeyError) as error:
        reason = f"its metadata is unreadable ({error})"
    logger.warning("Deleting the damaged converted weights %s: %s", path, reason)
    for stale in (path, sidecar):
        if os.path.exists(stale):
            os.remove(stale)
    return None


def _convert(entry, fetched, build_reference):
    """Converts the fetched source into the reference model and caches the result."""
    path = converted_path(entry)
    source_path, source = fetched
    reference = build_reference()
    CONVERTERS[entry.converter](reference, source_path, source, entry)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path[: -len('.weights.h5')]}.partial.weights.h5"
    reference.save_weights(partial)
    metadata = {
        "sha256": download.sha256_of(partial),
        "weights": entry.key,
        "source": source.url,
        "layers": layer_signature(reference),
    }
    with open(f"{path}.json", "w") as file:
        json.dump(metadata, file)
    os.replace(partial, path)
    return reference, metadata


# --- loading into the user's model -----------------------------------------------------
def _classifier_layers(model):
    """Layers producing the model's outputs: the ones `classes` may resize."""
    return {tensor._keras_history.operation.name for tensor in model.outputs}


def copy_layers_by_name(source, model):
    """Copies every weighted layer of `model` from `source`'s layer of the same name.

    Output layers (the classifier) whose shapes differ keep their initialisation.

    Returns:
        Names of the layers that kept their initialisation.

    Raises:
        ValueError: a layer is missing from `source` or has other shapes.
    """
    classifiers = _classifier_layers(model)
    kept = []
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            donor = source.get_layer(layer.name)
        except ValueError:
            raise ValueError(
                f"Layer '{layer.name}' of model '{model.name}' has no counterpart in the "
                f"pretrained model '{source.name}'."
            ) from None
        shapes = [tuple(v.shape) for v in layer.weights]
        donor_shapes = [tuple(v.shape) for v in donor.weights]
        if shapes == donor_shapes:
            layer.set_weights(donor.get_weights())
        elif layer.name in classifiers:
            kept.append(layer.name)
        else:
            raise ValueError(
                f"Layer '{layer.name}' has weights of shapes {shapes}, the pretrained "
                f"layer {donor_shapes}: the model's architecture differs."
            )
    return kept


def _load_into(model, entry, cached, fetched, build_reference):
    """Loads the cached conversion (`cached`: its metadata) or converts `fetched`."""
    path, metadata, reference = converted_path(entry), cached, None
    if metadata is None:
        reference, metadata = _convert(entry, fetched, build_reference)
    if layer_signature(model) == metadata["layers"]:
        model.load_weights(path)
        return
    if reference is None:
        reference = build_reference()
        reference.load_weights(path)
    kept = copy_layers_by_name(reference, model)
    if kept:
        _say_once(
            f"{model.name}: loaded the {entry.name!r} weights of `{entry.model}` into every "
            f"layer but {kept} ({entry.classes} classes there): "
            "the new classifier is freshly initialised."
        )


# --- the builder side ------------------------------------------------------------------
def _is_registered_name(weights):
    return isinstance(weights, str) and not os.path.exists(weights)


def _static_arguments(static_name, user_arguments, model_arguments):
    """Arguments for the static twin: the user's that its builder takes, plus the head."""
    from keras_dynconv.zoo.registry import model_entry

    builder = model_entry(static_name).builder
    parameters = inspect.signature(builder).parameters
    shared = {
        key: value
        for key, value in user_arguments.items()
        if key in parameters and key not in ("name", "weights", "input_tensor", "normalization")
    }
    for key in ("include_top", "classes", "pooling", "classifier_activation", "input_shape",
                "include_preprocessing"):
        if key in parameters and key in model_arguments:
            shared[key] = model_arguments[key]
    return builder, shared


def _resolve(model_name, weights, arguments, user_arguments):
    """(entry, normalization, static builder and arguments or None) for `weights`."""
    entry = _find_with_defaults(model_name, weights, arguments, user_arguments)
    if entry is None:
        choices = [None, "a path to a .weights.h5 file"] + weights_names(model_name)
        raise ValueError(
            f"Invalid value for argument `weights` of `{model_name}`. Expected one of "
            f"{choices}. Received weights={weights!r}"
        )
    if entry.converter != "upcycle":
        return entry, entry.normalization, None
    static_name, static_weights = entry.static_twin
    builder, static_arguments = _static_arguments(static_name, user_arguments, arguments)
    static_effective = {**_defaults(builder), **static_arguments}
    static_entry = find_weights(static_name, static_weights, static_effective)
    if static_entry is None:
        raise ValueError(f"{entry.key}: the static twin has no {static_weights!r} weights")
    return entry, static_entry.normalization, (builder, static_arguments)


def _find_with_defaults(model_name, weights, arguments, user_arguments):
    """`find_weights`, letting an entry's `defaults` fill what the user left out."""
    for entry in list_weights(model_name):
        if weights in entry.names and entry.accepts(
            entry.with_defaults(arguments, user_arguments)
        ):
            return entry
    return find_weights(model_name, weights, arguments)


def _defaults(builder):
    return {
        key: parameter.default
        for key, parameter in inspect.signature(builder).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def build_pretrained(model_name, builder, arguments, user_arguments):
    """Builds `model_name` with `arguments`, loading registered weights if asked.

    Args:
        model_name: the zoo name (the registry key).
        builder: the generic builder, called with keyword arguments.
        arguments: every builder argument (the variant's fixed ones and defaults
            merged with the user's).
        user_arguments: the arguments the user passed.
    """
    weights = arguments.get("weights")
    if not _is_registered_name(weights):
        return builder(**arguments)
    entry, normalization, static = _resolve(model_name, weights, arguments, user_arguments)
    asked = user_arguments.get("normalization")
    if asked is not None and normalization is not None and asked != normalization:
        raise ValueError(
            f"The {weights!r} weights of `{model_name}` expect inputs normalised with "
            f"{normalization!r}. Received normalization={asked!r}"
        )
    arguments = {**entry.with_defaults(arguments, user_arguments), "weights": None}
    if normalization is not None:
        arguments["normalization"] = normalization
    if static is not None:
        return _build_upcycled(entry, builder, arguments, *static)
    # Fetch before building anything: offline, the error comes within seconds.
    cached = _read_sidecar(converted_path(entry))
    fetched = download.fetch(entry) if cached is None else None
    model = builder(**arguments)

    def build_reference():
        return builder(**{
            **arguments, "include_top": True, "classes": entry.classes, "pooling": None,
            "input_tensor": None, "input_shape": None, "classifier_activation": None,
        })

    _load_into(model, entry, cached, fetched, build_reference)
    return model


def _build_upcycled(entry, builder, arguments, static_builder, static_arguments):
    """The static twin with its weights first (it fetches), then the dynamic model."""
    from keras_dynconv.weights.upcycling import upcycle

    _, static_weights = entry.static_twin
    if arguments.get("input_tensor") is not None:
        static_arguments = {**static_arguments, "input_shape": arguments["input_tensor"].shape[1:]}
    static = static_builder(**{**static_arguments, "weights": static_weights})
    model = builder(**arguments)
    upcycle(static, model)
    return model
