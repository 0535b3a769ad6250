"""The main job and its offline data loaders."""

import gzip

import numpy as np
import pytest

from keras_dynconv import demo, offline_data


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_dir(tmp_path, num=20):
    rng = np.random.default_rng(0)
    for key, name in offline_data.FASHION_MNIST_FILES.items():
        shape = (num, 28, 28) if "images" in key else (num,)
        _write_idx(str(tmp_path / name), rng.integers(0, 10 if "labels" in key else 256, shape))
    return str(tmp_path)


def test_idx_reader_and_fashion_mnist_layout(tmp_path):
    directory = _fake_fashion_dir(tmp_path)
    assert offline_data.find_fashion_mnist([str(tmp_path / "missing"), directory]) == directory
    (x_train, y_train), (x_test, y_test) = offline_data.load_fashion_mnist(directory)
    assert x_train.shape == (20, 28, 28) and x_train.dtype == np.uint8
    assert y_test.shape == (20,) and y_test.max() < 10


def test_truncated_idx_file_is_refused(tmp_path):
    path = str(tmp_path / "bad.gz")
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        offline_data._read_idx(path)


def test_digits_are_real_and_split():
    (x_train, y_train), (x_test, y_test) = offline_data.load_digits()
    assert x_train.shape[1:] == (8, 8) and len(x_train) + len(x_test) == 1797
    assert x_train.max() == 255 and set(np.unique(y_train)) == set(range(10))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="name='mnist'"):
        offline_data.load_offline_dataset("mnist")


# The main job runs on torch by default (scripts/demo.sh); its parts (real weights,
# upcycling, fine_tune, routing analysis) are tested on every backend elsewhere.
@pytest.mark.orchestration
def test_demo_fine_tunes_real_weights_on_digits_and_plots_routing(
    lite0_keras_home, monkeypatch, tmp_path
):
    monkeypatch.setenv("KERAS_HOME", lite0_keras_home)
    results = demo.run("digits", epochs=1, max_train=64, image_size=32,
                       output_dir=str(tmp_path), verbose=0)
    assert len(results) == 2
    for model, history, accuracy in results.values():
        assert history.stages == ["full"]
        assert np.isfinite(history.history["loss"]).all()
        assert 0.0 <= accuracy <= 1.0
    (static, _, _), (condconv, _, _) = results.values()
    assert not any(type(layer).__name__ == "CondConv2D" for layer in static.layers)
    assert any(type(layer).__name__ == "CondConv2D" for layer in condconv.layers)
    import matplotlib.image

    image = matplotlib.image.imread(str(tmp_path / "routing.png"))
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two panels side by side

