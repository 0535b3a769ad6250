"""`keras-dynconv list` / `info` and the architecture summary behind them."""

import csv
import io

import pytest

from keras_dynconv import layers
from keras_dynconv import zoo
from keras_dynconv.cli import main
from keras_dynconv.utils import count_madds
from keras_dynconv.utils.summary import dynamic_layers
from keras_dynconv.utils.summary import shared_routing_layers
from keras_dynconv.weights.registry import list_weights


def _markdown_rows(text):
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ][1:]


# --- list ------------------------------------------------------------------------------
def test_list_has_one_row_per_model_with_counts_and_weights(capsys):
    assert main(["list"]) == 0
    rows = {row[0]: row for row in _markdown_rows(capsys.readouterr().out)}
    assert set(rows) == set(zoo.list_models())
    name, task, size, params, madds, paper, weights = rows["condconv_efficientnet_b0"]
    assert (task, size, paper) == ("classification", "224", "413.0")
    assert float(params) == pytest.approx(24.06, abs=0.01)
    assert float(madds) == pytest.approx(407.2, abs=0.05)
    # Published top-1 figures come from the registry, with the arguments they need.
    assert "imagenet-official [num_experts=8] 78.3%" in weights
    assert rows["resnet75_mod"][-1] == "-"
    assert rows["ssd300_mobilenet_v1"][1] == "detection"


def test_list_filters_and_writes_csv(capsys):
    assert main(["list", "--family", "mobilenet_v1", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["model"] for row in rows] == ["condconv_mobilenet_v1", "mobilenet_v1"]
    assert {row["family"] for row in rows} == {"mobilenet_v1"}
    assert main(["list", "--task", "detection", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["model"] for row in rows} == set(zoo.list_models(task="detection"))


def test_list_refuses_an_unknown_family(capsys):
    assert main(["list", "--family", "vgg"]) == 2
    err = capsys.readouterr().err
    assert "Unknown family 'vgg'" in err and "efficientnet" in err and "Traceback" not in err


# --- info and the summary --------------------------------------------------------------
@pytest.mark.architecture
def test_info_describes_experts_routing_counts_and_weights(capsys):
    assert main(["info", "condconv_efficientnet_b0", "--model-arg", "num_experts=4"]) == 0
    out = capsys.readouterr().out
    model = zoo.condconv_efficientnet_b0(num_experts=4)
    assert f"parameters: {model.count_params():,}" in out
    assert f"multiply-adds per image: {count_madds(model) / 1e6:.1f} M" in out
    assert "16 x CondConv2D, 4 experts" in out and "8 x CondDepthwiseConv2D, 4 experts" in out
    assert "8 shared Routing layers, each feeding 3 layers of one block" in out
    for weight in list_weights("condconv_efficientnet_b0"):
        assert weight.name in out
    assert "top-1 78.3%" in out


@pytest.mark.architecture
def test_info_layers_table_and_a_static_model(capsys):
    assert main(["info", "mobilenet_v1", "--model-arg", "alpha=0.25"]) == 0
    assert "dynamic layers: none (a static model)" in capsys.readouterr().out
    assert main(["info", "dynamic_mobilenet_v2", "--layers"]) == 0
    rows = _markdown_rows(capsys.readouterr().out)
    assert rows and all(row[4] == "own" for row in rows)
    assert {row[1] for row in rows} <= {"DynamicConv2D", "DynamicDepthwiseConv2D"}


@pytest.mark.parametrize("arguments, message", [
    (["info", "condconv_nothing"], "Unknown model 'condconv_nothing'"),
    (["info", "mobilenet_v1", "--model-arg", "experts=3"], "unexpected keyword arguments"),
])
def test_info_user_mistakes_exit_2_without_traceback(capsys, arguments, message):
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.architecture
def test_summary_names_the_routing_each_layer_reads():
    model = zoo.condconv_efficientnet_b0(num_experts=4)
    rows = dynamic_layers(model)
    expert_layers = [layer for layer in model.layers if isinstance(layer, layers.ExpertLayer)]
    assert [row.name for row in rows] == [layer.name for layer in expert_layers]
    # Every layer of a block reads its block's Routing layer, found through the graph.
    for row in rows:
        assert row.routing == row.name.split("_")[0] + "_routing", row
        assert row.experts == 4 and row.strategy == "auto"
    assert rows[0].kernel == "1x1x80x480"
    shared = shared_routing_layers(model)
    assert list(shared)[0] == "block8_routing"
    assert shared["block8_routing"] == ["block8_expand", "block8_dwconv", "block8_project"]


@pytest.mark.architecture
def test_summary_of_mod_blocks():
    rows = dynamic_layers(zoo.resnet75_mod())
    assert len(rows) == 11 and {row.kind for row in rows} == {"MoDBlock"}
    assert rows[0].kernel == "top 4 of 256 channels"  # capacity 64
