"""Every script in examples/ runs, in its fast mode, and writes what it says.

End-to-end runs: `orchestration` (torch only in the default suite, every backend with
-m large)."""

import importlib.util
import json
import os

import pytest

pytestmark = pytest.mark.orchestration


def load_example(repo_root, name):
    path = os.path.join(repo_root, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested(repo_root):
    scripts = sorted(name[:-3] for name in os.listdir(os.path.join(repo_root, "examples"))
                     if name.endswith(".py"))
    assert scripts == ["detect_shapes", "routing_analysis", "shared_routing_block"]


def test_shared_routing_block(repo_root):
    model = load_example(repo_root, "shared_routing_block").main(batch_size=2)
    routing = [layer for layer in model.layers if layer.name == "block_routing"]
    assert len(routing) == 1
    assert sum(type(layer).__name__ == "CondConv2D" for layer in model.layers) == 2


def test_detect_shapes_fast(repo_root, tmp_path):
    output = str(tmp_path / "shapes")
    load_example(repo_root, "detect_shapes").main(["--fast", "--output", output])
    assert os.listdir(output)


def test_routing_analysis_fast(repo_root, tmp_path, lite0_keras_home, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    output = str(tmp_path / "analysis")
    summary = load_example(repo_root, "routing_analysis").main(
        ["--fast", "--output-dir", output])
    for name in ("class_routing.png", "routing_distribution.png", "expert_classes.png"):
        with open(os.path.join(output, name), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(output, "routing_summary.json")) as file:
        written = json.load(file)
    assert list(written) == list(summary) and len(summary) >= 2  # one per routing function
    last = list(summary)[-1]
    assert len(summary[last]["expert_shares"]) == 4
    assert sum(summary[last]["expert_shares"]) == pytest.approx(1.0)
    assert 0.0 <= summary[last]["entropy"] <= 1.0
    assert len(written[last]["top_classes"]) == 4
