"""`keras-dynconv predict` on real photos and real weights, and the ImageNet labels."""

import json

import numpy as np
import pytest

from keras_dynconv.cli import main
from keras_dynconv.data import decode_predictions
from keras_dynconv.data import imagenet_class_names
from keras_dynconv.data.imagenet_labels import synsets

# The offline notes' figures for timm's efficientnet_lite0 on these photos.
CHELSEA_TOP3 = [(285, "Egyptian cat"), (282, "tiger cat"), (281, "tabby")]
CHELSEA_PROBABILITIES = [0.51, 0.23, 0.17]
PROBABILITY_ATOL = 0.01  # the notes give two decimals
COFFEE_TOP1 = (967, "espresso")


@pytest.fixture
def photos(tmp_path):
    """The cat as PNG (lossless) and the coffee as JPEG files."""
    image_module = pytest.importorskip("PIL.Image")
    skimage_data = pytest.importorskip("skimage.data")
    cat, coffee = tmp_path / "cat.png", tmp_path / "coffee.jpg"
    image_module.fromarray(skimage_data.chelsea()).save(cat)
    image_module.fromarray(skimage_data.coffee()).save(coffee, quality=95)
    return str(cat), str(coffee)


def test_labels_are_imagenets_in_label_order():
    names = imagenet_class_names()
    # Names repeat (two cranes: the bird and the machine); synsets do not.
    assert len(names) == 1000 and len(set(synsets())) == 1000
    assert names.count("crane") == 2
    assert (names[0], names[285], names[967]) == ("tench", "Egyptian cat", "espresso")
    probabilities = np.full((2, 1000), 1e-4)
    probabilities[0, [3, 7]] = [0.2, 0.7]
    probabilities[1, 999] = 0.9
    decoded = decode_predictions(probabilities, top=2)
    assert [(i, n) for i, n, _ in decoded[0]] == [(7, names[7]), (3, names[3])]
    assert decoded[1][0][:2] == (999, names[999]) and decoded[1][0][2] == pytest.approx(0.9)
    with pytest.raises(ValueError, match=r"shape \(batch, 1000\)"):
        decode_predictions(np.zeros((1, 10)))


@pytest.mark.orchestration
def test_predict_names_the_classes_of_real_photos(photos, lite0_keras_home, monkeypatch,
                                                  capsys):
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    cat, coffee = photos
    assert main(["predict", "efficientnet_lite0", cat, coffee, "--top", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    cat_top = results[cat]
    assert [(c["class"], c["name"]) for c in cat_top] == CHELSEA_TOP3
    np.testing.assert_allclose([c["probability"] for c in cat_top], CHELSEA_PROBABILITIES,
                               atol=PROBABILITY_ATOL)
    assert (results[coffee][0]["class"], results[coffee][0]["name"]) == COFFEE_TOP1
    # The table form says the same.
    assert main(["predict", "efficientnet_lite0", cat, "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == cat and "Egyptian cat" in out and "(class 285)" in out


@pytest.mark.parametrize("arguments, message", [
    (["predict", "efficientnet_lite0", "/no/such/cat.png"], "No such image file"),
    (["predict", "ssd300_mobilenet_v1", "{cat}"], "needs an ImageNet classifier"),
    (["predict", "resnet75_mod", "{cat}"], "weights"),
    (["predict", "efficientnet_lite0", "{text}"], "Cannot read"),
    (["predict", "efficientnet_lite0", "{cat}", "--top", "0"], "positive"),
])
def test_predict_user_mistakes_exit_2_without_traceback(photos, tmp_path, capsys, arguments,
                                                         message, lite0_keras_home,
                                                         monkeypatch):
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    arguments = [a.format(cat=photos[0], text=text) for a in arguments]
    assert main(arguments) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
