"""`keras-dynconv train` / `finetune`: outputs, resumption, user errors."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from conftest import BACKEND, to_numpy
from keras_dynconv.cli import build_parser, main

TINY_TRAIN = [
    "--model", "condconv_mobilenet_v1", "--model-arg", "alpha=0.25",
    "--model-arg", "num_experts=2", "--dataset", "digits", "--image-size", "32",
    "--max-train-examples", "96", "--batch-size", "32", "--verbose", "0",
]


def epochs_logged(output_dir):
    with open(os.path.join(output_dir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_help_shows_examples(capsys):
    for command in ("train", "finetune"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


@pytest.mark.orchestration
def test_train_writes_checkpoints_logs_and_a_model_that_loads(tmp_path):
    output = str(tmp_path / "run")
    assert main(["train", *TINY_TRAIN, "--epochs", "2", "--output-dir", output]) == 0
    assert epochs_logged(output) == [0, 1]
    checkpoints = sorted(os.listdir(os.path.join(output, "checkpoints")))
    assert checkpoints == ["epoch-001.weights.h5", "epoch-002.weights.h5"]
    with open(os.path.join(output, "routing.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(len(layer["mean"]) == 2 for layer in records[-1]["layers"].values())
    with open(os.path.join(output, "command.json")) as f:
        assert json.load(f)["model"] == "condconv_mobilenet_v1"
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    logits = to_numpy(model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.orchestration
def test_train_resumes_after_an_interruption(tmp_path):
    output = str(tmp_path / "run")
    arguments = ["train", *TINY_TRAIN, "--epochs", "3", "--output-dir", output]
    args = build_parser().parse_args(arguments)
    with pytest.raises(KeyboardInterrupt):
        args.run(args, extra_callbacks=[Interrupt()])
    assert epochs_logged(output) == [0, 1]
    assert not os.path.exists(os.path.join(output, "model.keras"))

    assert main(arguments) == 0
    # Epoch 2 only was trained again: every epoch is logged exactly once.
    assert epochs_logged(output) == [0, 1, 2]
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    steps_per_epoch = 96 // 32
    assert int(to_numpy(model.optimizer.iterations)) == 3 * steps_per_epoch


@pytest.mark.orchestration
def test_finetune_real_weights_two_stages(tmp_path, lite0_keras_home, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    output = str(tmp_path / "ft")
    code = main([
        "finetune", "--model", "efficientnet_lite0", "--weights", "imagenet",
        "--dataset", "digits", "--image-size", "32", "--max-train-examples", "64",
        "--batch-size", "32", "--epochs", "2", "--output-dir", output, "--verbose", "0",
    ])
    assert code == 0
    assert epochs_logged(output) == [0, 1]
    model = keras.saving.load_model(os.path.join(output, "model.keras"))
    assert model.output.shape[-1] == 10


OTHER_STRATEGY = {"torch": "mirrored", "jax": "mirrored", "tensorflow": "data_parallel"}


@pytest.mark.parametrize(
    "change, message",
    [
        (["--model", "condconv_nothing"], "condconv_nothing"),
        (["--model", "ssd300_mobilenet_v1"], "is a detection model"),
        (["--dataset", "mnist_in_a_drawer"], "mnist_in_a_drawer"),
        (["--distribution", OTHER_STRATEGY[BACKEND]], OTHER_STRATEGY[BACKEND]),
    ],
)
def test_user_mistakes_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, change, message):
    arguments = ["train", *TINY_TRAIN, "--epochs", "1", "--output-dir", str(tmp_path)]
    flag = change[0]
    index = arguments.index(flag) if flag in arguments else None
    if index is None:
        arguments += change
    else:
        arguments[index + 1] = change[1]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize("command, resumable", [("train", True), ("bench", False)])
def test_interrupt_exits_130_and_offers_resumption_only_for_training(
    monkeypatch, capsys, tmp_path, command, resumable
):
    from keras_dynconv.cli import bench as bench_command
    from keras_dynconv.cli import train as train_command

    def interrupted(args, *unused):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run_train", interrupted)
    monkeypatch.setattr(bench_command, "run", interrupted)
    arguments = {
        "train": ["train", *TINY_TRAIN, "--output-dir", str(tmp_path)],
        "bench": ["bench", "--models", "mobilenet_v1:alpha=0.25", "--output-dir", str(tmp_path)],
    }[command]
    assert main(arguments) == 130
    error = capsys.readouterr().err
    assert "interrupted" in error
    assert ("resume" in error) == resumable
