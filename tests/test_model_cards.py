"""keras_dynconv/zoo/models.csv and the model cards are the profiler's output, kept in sync."""

import csv
import importlib.util
import os
import re

import pytest

from keras_dynconv import zoo
from keras_dynconv.utils import count_madds
from keras_dynconv.utils import count_params


def _load_table_script(repo_root):
    path = os.path.join(repo_root, "scripts", "make_model_table.py")
    spec = importlib.util.spec_from_file_location("make_model_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rows(repo_root):
    with open(os.path.join(repo_root, "keras_dynconv", "zoo", "models.csv"), newline="") as file:
        return list(csv.DictReader(file))


def test_every_model_has_a_row(rows):
    assert {row["model"] for row in rows} == set(zoo.list_models())


@pytest.mark.parametrize("name", ["mobilenet_v1", "condconv_mobilenet_v1"])
def test_rows_are_what_the_profiler_counts(rows, name):
    row = next(r for r in rows if r["model"] == name and r["configuration"] == "default")
    model = zoo.get_model(name)
    assert int(row["trainable_params"]) == count_params(model).trainable
    assert float(row["madds_millions"]) == round(count_madds(model) / 1e6, 1)


def test_cards_show_the_csv(rows, repo_root):
    script = _load_table_script(repo_root)
    for family, card in script.CARDS.items():
        with open(os.path.join(repo_root, "zoo", card)) as file:
            text = file.read()
        generated = re.search(
            re.escape(script.BEGIN) + "\n(.*?)" + re.escape(script.END), text, flags=re.S
        ).group(1)
        family_rows = [
            {**r, "trainable_params": int(r["trainable_params"])}
            for r in rows if r["family"] == family
        ]
        assert generated == script.markdown_table(family_rows), card


def test_weights_columns_and_table_follow_the_registry(rows, repo_root):
    script = _load_table_script(repo_root)
    for row in rows:
        entry = zoo.model_entry(row["model"])
        overrides = {}
        if row["configuration"] != "default":
            figure = next(
                f for f in entry.paper
                if " ".join(f"{k}={v}" for k, v in f.overrides) == row["configuration"]
            )
            overrides = figure.builder_arguments()
        assert row["weights"] == script._weights_cell(row["model"], entry, overrides), row
    with open(os.path.join(repo_root, "weights", "README.md")) as file:
        text = file.read()
    generated = re.search(
        re.escape(script.WEIGHTS_BEGIN) + "\n(.*?)" + re.escape(script.WEIGHTS_END), text,
        flags=re.S,
    ).group(1)
    assert generated == script.weights_table()
    imagenet_models = {row["model"] for row in rows if "imagenet" in row["weights"]}
    assert {"efficientnet_lite0", "condconv_efficientnet_b0", "resnet50"} <= imagenet_models
