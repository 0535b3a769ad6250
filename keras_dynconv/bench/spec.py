"""What to measure: model specs (`name:key=value,...`) and the `BenchmarkPlan`.

A model spec is a zoo name, optionally followed by `:` and comma-separated
`key=value` builder arguments; a list of specs is separated by `;`:

    efficientnet_b0;condconv_efficientnet_b0:num_experts=8
    mobilenet_v1:alpha=0.25;condconv_mobilenet_v1:alpha=0.25,num_experts=2

Values are read as int, float, bool (`true`/`false`), None (`none`) or else kept as
strings. A value cannot contain `,` or `;` (no builder argument needs one).
"""

import dataclasses
import functools
import inspect
import json

BACKENDS = ("tensorflow", "jax", "torch")
MODES = ("inference", "train")
DTYPES = ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
MIN_IMAGE_SIZE = 32
# TensorFlow and XLA. "auto" (the default): inference in `tf.function(jit_compile=True)`,
# training as Keras compiles it by default (XLA only where there is a GPU: on CPUs the
# XLA gradients of depthwise convolutions are several times slower). "on": XLA for
# both; "off": neither (a plain `tf.function` for inference).
TF_XLA_CHOICES = ("auto", "on", "off")
# Set by the plan itself (`image_size`), never by a spec.
RESERVED_ARGUMENTS = ("input_shape", "input_tensor")
_WORDS = {"true": True, "false": False, "none": None, "null": None}

# One row per (backend, model, mode, dtype, batch). Times are seconds per batch;
# `ratio` is this row's median over the baseline's (same backend, batch, mode, dtype);
# `execution` says how the callable was compiled; `note` what fell back; `error` why a
# row has no figures.
COLUMNS = (
    "backend", "framework", "model", "mode", "dtype", "batch", "image_size", "execution",
    "parameters", "warmup", "repeats", "first_call_s", "median_s", "min_s", "max_s",
    "q1_s", "q3_s", "iqr_s", "images_per_s", "ratio", "peak_memory_bytes",
    "memory_source", "note", "error",
)


def new_row(**fields):
    """A row with every column of `COLUMNS` (None where `fields` has no value)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"Unknown benchmark columns {sorted(unknown)}")
    return {**dict.fromkeys(COLUMNS), **fields}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A zoo model name and its builder arguments; `str(spec)` is the canonical spec.

    >>> spec = parse_model_spec("condconv_mobilenet_v1:alpha=0.25,num_experts=2")
    >>> spec.name, spec.arguments
    ('condconv_mobilenet_v1', {'alpha': 0.25, 'num_experts': 2})
    >>> str(spec)
    'condconv_mobilenet_v1:alpha=0.25,num_experts=2'
    """

    name: str
    argument_items: tuple = ()  # ((key, value, text as typed), ...) in spec order

    @property
    def arguments(self):
        return {key: value for key, value, _ in self.argument_items}

    def __str__(self):
        if not self.argument_items:
            return self.name
        return self.name + ":" + ",".join(f"{key}={text}" for key, _, text in self.argument_items)


def _value(text):
    lowered = text.lower()
    if lowered in _WORDS:
        return _WORDS[lowered]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_spec(text, check_registry=True):
    """`"name:key=value,..."` -> `ModelSpec`; ValueError naming the mistake.

    With `check_registry` the name must be a zoo classification model and every key
    one of its builder's arguments (then a typo fails before anything is built).

    >>> parse_model_spec("mobilenet_v1:alpha=0.5,dropout_rate=0").arguments
    {'alpha': 0.5, 'dropout_rate': 0}
    >>> parse_model_spec("mobilenet_v1:alpha")
    Traceback (most recent call last):
    ...
    ValueError: Invalid model spec 'mobilenet_v1:alpha': expected KEY=VALUE after the model name, got 'alpha'
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"Invalid model spec {text!r}: expected NAME or NAME:KEY=VALUE,...")
    text = text.strip()
    name, _, argument_text = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"Invalid model spec {text!r}: the model name is empty")
    if ":" in text and not argument_text.strip():
        raise ValueError(f"Invalid model spec {text!r}: nothing after ':' (expected KEY=VALUE,...)")
    items = []
    for part in argument_text.split(",") if argument_text.strip() else ():
        key, equals, value_text = (piece.strip() for piece in part.partition("="))
        if not equals or not key or not value_text:
            raise ValueError(
                f"Invalid model spec {text!r}: expected KEY=VALUE after the model name, "
                f"got {part.strip()!r}"
            )
        if not key.isidentifier():
            raise ValueError(f"Invalid model spec {text!r}: {key!r} is not an argument name")
        if key in (k for k, _, _ in items):
            raise ValueError(f"Invalid model spec {text!r}: argument {key!r} is given twice")
        if key in RESERVED_ARGUMENTS:
            raise ValueError(
                f"Invalid model spec {text!r}: {key!r} is set by the benchmark's image size"
            )
        items.append((key, _value(value_text), value_text))
    spec = ModelSpec(name, tuple(items))
    if check_registry:
        _check_against_registry(spec)
    return spec


def _check_against_registry(spec):
    from keras_dynconv import zoo

    entry = zoo.model_entry(spec.name)  # ValueError listing the names
    if entry.task != "classification":
        raise ValueError(
            f"`{spec.name}` is a {entry.task} model; the benchmark measures classifiers"
        )
    accepted = inspect.signature(entry.builder).parameters
    unknown = [key for key in spec.arguments if key not in accepted]
    if unknown:
        raise ValueError(
            f"Invalid model spec {str(spec)!r}: `{spec.name}` has no argument "
            f"{', '.join(map(repr, unknown))}. Valid arguments: {sorted(accepted)}"
        )


def parse_model_list(texts, check_registry=True):
    """`;`-separated specs (one string or several) -> tuple of `ModelSpec`, no repeats.

    >>> [str(s) for s in parse_model_list("efficientnet_b0; condconv_efficientnet_b0:num_experts=8")]
    ['efficientnet_b0', 'condconv_efficientnet_b0:num_experts=8']
    """
    if isinstance(texts, str):
        texts = [texts]
    specs = []
    for text in texts:
        for piece in text.split(";"):
            if not piece.strip():
                continue
            spec = parse_model_spec(piece, check_registry=check_registry)
            if any(str(spec) == str(other) for other in specs):
                raise ValueError(f"Invalid value for argument `models`: {str(spec)!r} is listed twice")
            specs.append(spec)
    if not specs:
        raise ValueError("Invalid value for argument `models`: no model spec given")
    return tuple(specs)


def check_choices(name, values, allowed):
    """`values` without repeats, in order; ValueError naming `name` unless all `allowed`."""
    values = tuple(dict.fromkeys(values))  # keeps the order, drops repeats
    if not values:
        raise ValueError(f"Invalid value for argument `{name}`: empty")
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise ValueError(
            f"Invalid value for argument `{name}`: {wrong}. Expected some of {list(allowed)}"
        )
    return values


def _count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`: expected an integer >= {minimum}, "
            f"received {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class BenchmarkPlan:
    """Everything a backend worker needs to measure, validated; JSON round-trips.

    `models` are specs (strings or `ModelSpec`); `baseline` is one of them (default
    the first). Rows are measured dtype by dtype, mode by mode, batch by batch, all
    models in turn, so the models compared in a ratio run close together in time.

    >>> plan = BenchmarkPlan(models="mobilenet_v1:alpha=0.25;condconv_mobilenet_v1:alpha=0.25",
    ...                      batch_sizes=(2,), image_size=32, repeats=2)
    >>> plan.baseline
    'mobilenet_v1:alpha=0.25'
    >>> BenchmarkPlan.from_json(plan.to_json()) == plan
    True
    """

    models: tuple
    baseline: str = None
    batch_sizes: tuple = (1, 32)
    modes: tuple = ("inference", "train")
    dtypes: tuple = ("float32",)
    image_size: int = 224
    warmup: int = 3
    repeats: int = 10
    torch_compile: bool = False
    tf_xla: str = "auto"
    threads: int = None
    timm: str = None
    check_registry: bool = dataclasses.field(default=True, compare=False)

    def __post_init__(self):
        models = self.models
        if isinstance(models, str) or all(isinstance(m, str) for m in models):
            models = parse_model_list(models, check_registry=self.check_registry)
        elif not all(isinstance(m, ModelSpec) for m in models):
            raise ValueError(f"Invalid value for argument `models`: {models!r}")
        set_field = functools.partial(object.__setattr__, self)  # frozen: normalise here
        set_field("models", tuple(models))
        names = [str(m) for m in self.models]
        baseline = names[0] if self.baseline is None else str(
            parse_model_spec(self.baseline, check_registry=False)
        )
        if baseline not in names:
            raise ValueError(
                f"Invalid value for argument `baseline`: {self.baseline!r} is not one of "
                f"the models {names}"
            )
        set_field("baseline", baseline)
        batch_sizes = tuple(dict.fromkeys(self.batch_sizes))
        if not batch_sizes:
            raise ValueError("Invalid value for argument `batch_sizes`: empty")
        for batch in batch_sizes:
            _count("batch_sizes", batch, 1)
        set_field("batch_sizes", batch_sizes)
        set_field("modes", check_choices("modes", self.modes, MODES))
        set_field("dtypes", check_choices("dtypes", self.dtypes, DTYPES))
        set_field("tf_xla", check_choices("tf_xla", (self.tf_xla,), TF_XLA_CHOICES)[0])
        _count("image_size", self.image_size, MIN_IMAGE_SIZE)
        _count("warmup", self.warmup, 0)
        _count("repeats", self.repeats, 1)
        if self.threads is not None:
            _count("threads", self.threads, 1)
        if self.timm is not None:
            parse_model_spec(self.timm, check_registry=False)

    def to_json(self):
        fields = dataclasses.asdict(self)
        fields["models"] = [str(m) for m in self.models]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        # The parent checked the names against its registry already.
        fields["check_registry"] = False
        for key in ("batch_sizes", "modes", "dtypes"):
            fields[key] = tuple(fields[key])
        return cls(**fields)
