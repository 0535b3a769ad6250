"""Writes keras_dynconv/zoo/models.csv (read by `keras-dynconv list`) and the
tables of the model cards from the profiler.

Every number in zoo/ comes from here (never typed by hand):

    KERAS_BACKEND=torch .venv/bin/python scripts/make_model_table.py

One row per registered model at its default configuration and input size, plus one
per paper figure measured at another configuration (e.g. MobileNetV1 0.25x).
"""

import csv
import inspect
import os
import re
import sys
import time

import keras

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.utils import count_madds
from keras_dynconv.utils import count_params
from keras_dynconv.weights import registry as weights_registry
from keras_dynconv.zoo.registry import model_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO_DIR = os.path.join(ROOT, "zoo")
MODEL_TABLE = os.path.join(ROOT, "keras_dynconv", "zoo", "models.csv")
CARDS = {
    "efficientnet": "efficientnet.md",
    "mobilenet_v1": "mobilenet_v1.md",
    "mobilenet_v2": "mobilenet_v2.md",
    "mnasnet": "mnasnet.md",
    "resnet": "resnet.md",
    "ssd_mobilenet_v1": "ssd_mobilenet_v1.md",
}
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"
COLUMNS = [
    "model", "family", "configuration", "input_size", "dynamic_layers",
    "trainable_params", "non_trainable_params", "madds_millions",
    "paper_madds_millions", "paper_source", "madds_vs_paper_percent", "weights",
]
WEIGHTS_BEGIN, WEIGHTS_END = "<!-- BEGIN WEIGHTS TABLE -->", "<!-- END WEIGHTS TABLE -->"


def _dynamic_summary(model):
    kinds = {}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (layers.ExpertLayer, layers.MoDBlock)):
            kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    return " ".join(f"{count}x{kind}" for kind, count in sorted(kinds.items())) or "none"


def _builder_defaults(builder):
    return {
        key: parameter.default
        for key, parameter in inspect.signature(builder).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _weights_cell(name, entry, overrides):
    """Weights names available at this configuration, with published top-1."""
    arguments = {**_builder_defaults(entry.builder), **overrides}
    cells = []
    for weights in weights_registry.list_weights(name):
        if weights.accepts(arguments):
            top1 = f" ({weights.top1:g})" if weights.top1 is not None else ""
            cells.append(f"{'/'.join(weights.names)}{top1}")
    return "; ".join(cells)


def _row(name, entry, size, overrides, figure):
    model = zoo.get_model(name, input_shape=(size, size, 3), **overrides)
    params = count_params(model)
    madds = count_madds(model)
    row = {
        "model": name,
        "family": entry.family,
        "configuration": " ".join(f"{k}={v}" for k, v in overrides.items()) or "default",
        "input_size": size,
        "dynamic_layers": _dynamic_summary(model),
        "trainable_params": params.trainable,
        "non_trainable_params": params.non_trainable,
        "madds_millions": f"{madds / 1e6:.1f}",
        "paper_madds_millions": f"{figure.madds / 1e6:.1f}" if figure else "",
        "paper_source": figure.source if figure else "",
        "madds_vs_paper_percent": f"{100 * (madds / figure.madds - 1):+.1f}" if figure else "",
        "weights": _weights_cell(name, entry, overrides),
    }
    keras.backend.clear_session()
    return row


def collect_rows():
    rows = []
    names = zoo.list_models()
    for index, name in enumerate(names, 1):
        entry = model_entry(name)
        start = time.time()
        default_figures = [f for f in entry.paper if not f.overrides] or [None]
        for figure in default_figures:
            rows.append(_row(name, entry, entry.default_size, {}, figure))
        for figure in (f for f in entry.paper if f.overrides):
            rows.append(_row(name, entry, figure.size, figure.builder_arguments(), figure))
        print(f"[{index}/{len(names)}] {name} ({time.time() - start:.1f} s)", file=sys.stderr)
    return rows


def markdown_table(rows):
    header = ("| model | configuration | input | trainable params | MADDs (M) | paper (M) | "
              "source | diff | weights (published top-1 %) |\n"
              "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | --- |\n")
    lines = [
        f"| `{r['model']}` | {r['configuration']} | {r['input_size']} | "
        f"{r['trainable_params']:,} | {r['madds_millions']} | {r['paper_madds_millions']} | "
        f"{r['paper_source']} | {r['madds_vs_paper_percent']}{'%' if r['paper_source'] else ''} | "
        f"{r['weights'] or '-'} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def weights_table():
    """Every registered weights set (weights/README.md)."""
    lines = [
        "| model | `weights=` | needs | converter | source | normalization | top-1 % (source) "
        "| licence |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in weights_registry.list_weights():
        needs = ", ".join(f"{k}={v}" for k, v in w.arguments) or "-"
        if w.converter == "upcycle":
            source, normalization = f"upcycled from `{w.upcycle_from}`", "as the static twin"
        else:
            first = w.sources[0]
            source = f"[{first.file_name}]({first.url})" + (
                f" (+{len(w.sources) - 1} mirror)" if len(w.sources) > 1 else "")
            normalization = w.normalization
        top1 = f"{w.top1:g} ({w.top1_source})" if w.top1 is not None else "not published"
        if w.converter == "upcycle":
            top1 = "- (fine-tune first)"
        lines.append(
            f"| `{w.model}` | {' / '.join(f'`{n}`' for n in w.names)} | {needs} | "
            f"{w.converter} | {source} | {normalization} | {top1} | {w.license or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _replace_between(path, begin, end, content):
    with open(path) as file:
        text = file.read()
    generated = f"{begin}\n{content}{end}"
    text, replaced = re.subn(
        re.escape(begin) + ".*?" + re.escape(end), lambda _: generated, text, flags=re.S
    )
    if not replaced:
        raise SystemExit(f"{path} lacks the {begin} ... {end} markers")
    with open(path, "w") as file:
        file.write(text)


def write(rows):
    with open(MODEL_TABLE, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for family, card in CARDS.items():
        table = markdown_table([r for r in rows if r["family"] == family])
        _replace_between(os.path.join(ZOO_DIR, card), BEGIN, END, table)
    _replace_between(
        os.path.join(ROOT, "weights", "README.md"), WEIGHTS_BEGIN, WEIGHTS_END, weights_table()
    )


if __name__ == "__main__":
    write(collect_rows())
