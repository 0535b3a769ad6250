"""`keras-dynconv convert`: checkpoints in, Keras files out, read back and checked."""

import os

import keras
import numpy as np
import pytest

from keras_dynconv import zoo
from keras_dynconv.cli import main
from test_timm_parity import assert_logits_match
from test_timm_parity import golden
from test_timm_parity import golden_pixels
from test_timm_parity import rebuild_state_dict

TIMM_NAME = "tf_efficientnet_cc_b0_4e"


def _model_args(spec):
    height, width, channels = spec["input_shape_nhwc"][1:]
    return ["--model-arg", "num_experts=4", "--model-arg", "classifier_activation=null",
            "--model-arg", f"input_shape=[{height},{width},{channels}]"]


@pytest.mark.orchestration
def test_timm_safetensors_become_a_keras_file_with_timms_logits(tmp_path, capsys):
    from safetensors.numpy import save_file

    spec = golden(TIMM_NAME)
    checkpoint = tmp_path / "cc_b0_4e.safetensors"
    save_file(rebuild_state_dict(spec), str(checkpoint))
    output = str(tmp_path / "out" / "cc_b0_4e.keras")
    assert main(["convert", "condconv_efficientnet_b0", output, "--from-timm", str(checkpoint),
                 *_model_args(spec)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output}" in out and "read back" in out
    model = keras.saving.load_model(output)
    assert_logits_match(model(golden_pixels(spec)), spec)
    # An existing file is kept unless --force.
    assert main(["convert", "condconv_efficientnet_b0", output, "--from-timm", str(checkpoint),
                 *_model_args(spec)]) == 2
    assert "pass --force" in capsys.readouterr().err


@pytest.mark.orchestration
def test_registered_weights_become_a_weights_file(tmp_path, lite0_keras_home, monkeypatch,
                                                  capsys):
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    output = str(tmp_path / "lite0.weights.h5")
    arguments = ["--model-arg", "input_shape=[64,64,3]"]
    assert main(["convert", "efficientnet_lite0", output, "--weights", "imagenet",
                 *arguments]) == 0
    assert "registered weights 'imagenet'" in capsys.readouterr().out
    expected = zoo.efficientnet_lite0(weights="imagenet", input_shape=(64, 64, 3))
    model = zoo.efficientnet_lite0(input_shape=(64, 64, 3))
    model.load_weights(output)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)),
                               keras.ops.convert_to_numpy(expected(images)), atol=1e-6)


@pytest.mark.parametrize("arguments, message", [
    (["efficientnet_lite0", "{tmp}/x.h5", "--weights", "imagenet"], "must end in .keras"),
    (["efficientnet_lite0", "{tmp}/x.keras", "--from-timm", "/no/such.pth"],
     "No such checkpoint"),
    (["efficientnet_lite0", "{tmp}/x.keras", "--weights", "imagenet-nothing"], "imagenet"),
])
def test_convert_user_mistakes_exit_2_without_traceback(tmp_path, capsys, arguments, message):
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    assert main(["convert", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not [name for name in os.listdir(tmp_path) if name.startswith("x.")]


def test_convert_needs_exactly_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "efficientnet_lite0", str(tmp_path / "x.keras")])
    assert exit_info.value.code == 2
    assert "one of the arguments --weights --from-timm --from-tf-checkpoint" in (
        capsys.readouterr().err)
