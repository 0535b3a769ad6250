"""Writes zoo/models.csv and the tables of the model cards from the profiler.

Every number in zoo/ comes from here (never typed by hand):

    KERAS_BACKEND=torch .venv/bin/python scripts/make_model_table.py

One row per registered model at its default configuration and input size, plus one
per paper figure measured at another configuration (e.g. MobileNetV1 0.25x).
"""

import csv
import os
import re
import sys
import time

import keras

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.utils import count_madds
from keras_dynconv.utils import count_params
from keras_dynconv.zoo.registry import model_entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO_DIR = os.path.join(ROOT, "zoo")
CARDS = {
    "efficientnet": "efficientnet.md",
    "mobilenet_v1": "mobilenet_v1.md",
    "mobilenet_v2": "mobilenet_v2.md",
    "mnasnet": "mnasnet.md",
    "resnet": "resnet.md",
}
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"
COLUMNS = [
    "model", "family", "configuration", "input_size", "dynamic_layers",
    "trainable_params", "non_trainable_params", "madds_millions",
    "paper_madds_millions", "paper_source", "madds_vs_paper_percent",
]


def _dynamic_summary(model):
    kinds = {}
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (layers.ExpertLayer, layers.MoDBlock)):
            kinds[type(layer).__name__] = kinds.get(type(layer).__name__, 0) + 1
    return " ".join(f"{count}x{kind}" for kind, count in sorted(kinds.items())) or "none"


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
              "source | diff |\n| --- | --- | --- | ---: | ---: | ---: | --- | ---: |\n")
    lines = [
        f"| `{r['model']}` | {r['configuration']} | {r['input_size']} | "
        f"{r['trainable_params']:,} | {r['madds_millions']} | {r['paper_madds_millions']} | "
        f"{r['paper_source']} | {r['madds_vs_paper_percent']}{'%' if r['paper_source'] else ''} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def write(rows):
    with open(os.path.join(ZOO_DIR, "models.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for family, card in CARDS.items():
        path = os.path.join(ZOO_DIR, card)
        with open(path) as file:
            text = file.read()
        table = markdown_table([r for r in rows if r["family"] == family])
        generated = f"{BEGIN}\n{table}{END}"
        text, replaced = re.subn(
            re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: generated, text, flags=re.S
        )
        if not replaced:
            raise SystemExit(f"{path} lacks the {BEGIN} ... {END} markers")
        with open(path, "w") as file:
            file.write(text)


if __name__ == "__main__":
    write(collect_rows())
