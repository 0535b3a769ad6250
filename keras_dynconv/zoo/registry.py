"""The zoo's model registry: `list_models`, `get_model` and `variant` wrappers."""

import dataclasses
import inspect


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    """A published figure a model is checked against (MADDs per image at `size`)."""

    madds: float
    source: str
    size: int = 224
    overrides: tuple = ()  # builder arguments of the measured configuration

    def builder_arguments(self):
        return dict(self.overrides)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: object
    family: str
    default_size: int
    description: str
    paper: tuple = ()
    weights: tuple = ()
    task: str = "classification"


_MODELS = {}


TASKS = ("classification", "detection")


def _example(name, task):
    """The usage example every variant's docstring ends with."""
    output = "class probabilities" if task == "classification" else "predict(): boxes, scores"
    lines = ["Example:", f">>> model = zoo.{name}()  # raw [0, 255] RGB in; {output}"]
    if task == "classification":
        lines.append(f">>> backbone = zoo.{name}(include_top=False, pooling=\"avg\", "
                     "input_shape=(160, 160, 3))")
        lines.append(f">>> model = zoo.{name}(classes=10, input_shape=(64, 64, 3))")
    lines.append(f"`keras-dynconv info {name}` lists its dynamic layers and weights.")
    return "\n".join(lines) + "\n"


def variant(
    builder, name, family, description, default_size=224, paper=(), fixed=None,
    defaults=None, task="classification",
):
    """Registers `builder` as the public builder `name` for `task` (see `TASKS`).

    `fixed` arguments are hidden from the variant's signature; `defaults` only change
    defaults. The wrapper keeps the builder's remaining signature (with `name`
    defaulting to the variant's name), so `help()` and IDEs show the real arguments:
    a variant is one call, not a copied function.
    """
    fixed = dict(fixed or {})
    defaults = {**(defaults or {}), "name": name}
    signature = inspect.signature(builder)
    parameters = {
        key: parameter.replace(
            default=defaults.get(key, parameter.default),
            kind=inspect.Parameter.KEYWORD_ONLY,
        )
        for key, parameter in signature.parameters.items()
        if key not in fixed and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }

    def build(**kwargs):
        unknown = set(kwargs) - set(parameters)
        if unknown:
            raise TypeError(
                f"{name}() got unexpected keyword arguments {sorted(unknown)}. "
                f"Valid arguments: {sorted(parameters)}"
            )
        # Imported here: keras_dynconv.weights builds zoo models (upcycling).
        from keras_dynconv.weights.pretrained import build_pretrained

        return build_pretrained(name, builder, {**fixed, **defaults, **kwargs}, kwargs)

    build.__signature__ = signature.replace(parameters=list(parameters.values()))
    build.__name__ = build.__qualname__ = name
    build.__module__ = builder.__module__
    build.__doc__ = f"{description}\n\nArguments: see `{builder.__name__}`.\n\n" + _example(name, task)
    if name in _MODELS:
        raise ValueError(f"Model {name!r} is registered twice")
    _MODELS[name] = ModelEntry(
        name=name,
        builder=build,
        family=family,
        default_size=default_size,
        description=description,
        paper=tuple(paper),
        task=task,
    )
    return build


def list_models(family=None, task=None):
    """Names of the registered models (of one `family` and `task` if given), sorted.

    Example:
    >>> list_models(task="detection")
    ['condconv_ssd300_mobilenet_v1', 'ssd300_mobilenet_v1']
    """
    return sorted(
        n for n, e in _MODELS.items()
        if family in (None, e.family) and task in (None, e.task)
    )


def model_entry(name):
    """The registry's `ModelEntry` of `name` (builder, family, input size, paper figures).

    Example:
    >>> model_entry("resnet75_mod").family
    'resnet'
    """
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Expected one of {list_models()}"
        )
    return _MODELS[name]


def get_model(name, **kwargs):
    """Builds the registered model `name` with builder arguments `kwargs`.

    Example:
    >>> model = get_model("resnet75_mod", classes=10, input_shape=(64, 64, 3))
    >>> model.output_shape
    (None, 10)
    """
    return model_entry(name).builder(**kwargs)
