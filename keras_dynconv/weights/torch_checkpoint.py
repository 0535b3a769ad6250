"""Reads PyTorch `state_dict` files into NumPy arrays without importing torch.

The TensorFlow and JAX installs of keras-dynconv do not need PyTorch, yet published
weights often come as `torch.save` files. This reader understands both formats
`torch.save` writes (torch/serialization.py):

* the zip format (default since torch 1.6): `<archive>/data.pkl` is a pickle whose
  tensors point, through persistent ids `("storage", storage_type, key, location,
  numel)`, at raw little-endian storages `<archive>/data/<key>`;
* the legacy format (before 1.6, `_use_new_zipfile_serialization=False`): five
  consecutive pickles (magic number, protocol version 1001, system info, the object
  with persistent ids `("storage", storage_type, key, location, numel, view_metadata)`,
  the list of storage keys), then each storage as an int64 element count followed by
  its raw bytes, in the order of that list.

Tensors are rebuilt as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)` does: a strided view of the storage. Unpickling is restricted to the few globals a
`state_dict` needs (OrderedDict, the tensor rebuild functions and typed storages), as
`torch.load(weights_only=True)` is: a file asking for anything else is refused, so a
malicious checkpoint cannot run code.
"""

import collections
import os
import pickle
import zipfile

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch's typed storage classes and the NumPy dtype of their elements.
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for `torch.FloatStorage` & co.: only its element dtype matters."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """`torch._utils._rebuild_tensor_v2`: a strided view of a flat storage."""
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[storage_offset])  # a 0-d array, as tensor.numpy() gives
    needed = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if needed > storage.size:
        raise ValueError(
            f"Tensor of size {size} and stride {stride} at offset {storage_offset} "
            f"overruns its storage of {storage.size} elements: the file is corrupt."
        )
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.array(view, order="C")  # a C-ordered copy, detached from the storage


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    """`torch._utils._rebuild_parameter`: a Parameter is its data here."""
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state_dict; storages come from `load_storage(key, dtype, numel)`.

    `rebuild_tensor(storage, offset, size, stride, ...)` turns a storage into a
    tensor (the legacy format defers it until the storages are read).
    """

    def __init__(self, file, load_storage, rebuild_tensor=_rebuild_tensor):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages = {}
        self._allowed_globals = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        }

    def find_class(self, module, name):
        if (module, name) in self._allowed_globals:
            return self._allowed_globals[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"Refusing to load '{module}.{name}' from a PyTorch checkpoint: only "
            "state_dicts of tensors can be read without torch (a file that needs other "
            "objects may run arbitrary code when unpickled)."
        )

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"Unsupported persistent id {saved_id!r}")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"Unsupported storage type {storage_type!r}")
        if len(saved_id) > 5 and saved_id[5] is not None:
            raise pickle.UnpicklingError(
                "Storage views (torch < 0.4 checkpoints) are not supported."
            )
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        return self._storages[key]


def _check_storage(array, key, numel):
    if array.size != numel:
        raise ValueError(
            f"Storage '{key}' holds {array.size} elements, the checkpoint says {numel}: "
            "the file is truncated or corrupt."
        )
    return array


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path} is a zip file but not a PyTorch checkpoint.")
        root = pickles[0][: -len("data.pkl")]
        byteorder = f"{root}byteorder"
        if byteorder in names and archive.read(byteorder).decode() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported.")

        def load_storage(key, dtype, numel):
            raw = archive.read(f"{root}data/{key}")
            return _check_storage(np.frombuffer(raw, dtype.newbyteorder("<")), key, numel)

        with archive.open(pickles[0]) as data:
            return _RestrictedUnpickler(data, load_storage).load()


def _read_legacy(path):
    with open(path, "rb") as file:
        # A fresh unpickler per pickle, as torch reads them: the pickles follow each
        # other in one stream.
        def plain():
            return _HeaderUnpickler(file).load()

        if plain() != LEGACY_MAGIC_NUMBER:
            raise ValueError(f"{path} is not a PyTorch checkpoint (wrong magic number).")
        if plain() != LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported legacy PyTorch protocol version.")
        system = plain()
        if not system.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported.")
        wanted = {}  # key -> (dtype, numel), filled while unpickling

        def defer_storage(key, dtype, numel):
            wanted[key] = (dtype, numel)
            return _DeferredStorage(key)

        result = _RestrictedUnpickler(file, defer_storage, _defer_tensor).load()
        keys = plain()
        storages = {}
        for key in keys:
            count = int.from_bytes(_read_exactly(file, 8, path), "little", signed=True)
            dtype, numel = wanted.get(key, (np.dtype(np.uint8), count))
            raw = _read_exactly(file, count * dtype.itemsize, path)
            storages[key] = _check_storage(np.frombuffer(raw, dtype.newbyteorder("<")), key, numel)
    return _resolve_deferred(result, storages)


class _HeaderUnpickler(pickle.Unpickler):
    """The legacy format's plain pickles (numbers, dicts, lists of keys)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"Unexpected global '{module}.{name}' in a header.")


def _read_exactly(file, count, path):
    data = file.read(count)
    if len(data) != count:
        raise ValueError(f"{path} ends early: the file is truncated.")
    return data


class _DeferredStorage:
    """A legacy storage whose bytes come after the pickle that references it."""

    def __init__(self, key):
        self.key = key


class _DeferredTensor:
    def __init__(self, storage, args):
        self.storage, self.args = storage, args


def _resolve_deferred(obj, storages):
    if isinstance(obj, _DeferredTensor):
        if obj.storage.key not in storages:
            raise ValueError(f"Storage '{obj.storage.key}' is missing from the file.")
        return _rebuild_tensor(storages[obj.storage.key], *obj.args)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve_deferred(v, storages)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve_deferred(v, storages) for v in obj)
    return obj


def _defer_tensor(storage, *args):
    return _DeferredTensor(storage, args)


def read_torch_state_dict(path):
    """Reads a `torch.save`d state_dict (zip or legacy format) without torch.

    Args:
        path: a `.pth` / `.pt` / `.bin` file written by `torch.save(state_dict)`,
            possibly a dict holding the state_dict under "state_dict" or "model".

    Returns:
        An ordered `{name: numpy.ndarray}` in the file's order (a state_dict's module
        order), arrays in their stored dtype and shape, C-contiguous.

    Raises:
        ValueError: the file is not a PyTorch checkpoint, or is truncated/corrupt.
        pickle.UnpicklingError: the file needs objects other than tensors.

    Example:
    >>> state_dict = read_torch_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
    >>> state_dict["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        result = _read_zip(path)
    else:
        result = _read_legacy(path)
    return _as_state_dict(result, path)


def read_state_dict(path):
    """Reads a state_dict from a `.safetensors` or `torch.save` file, without torch.

    The format is told by the file's content, not its name.

    Returns:
        `{name: numpy.ndarray}`; safetensors files store names sorted, `torch.save`
        files in the state_dict's (module) order.

    Example:
    >>> state_dict = read_state_dict("model.safetensors")  # doctest: +SKIP
    >>> state_dict["conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    from keras_dynconv.weights.download import is_safetensors

    path = os.fspath(path)
    if is_safetensors(path):
        from safetensors.numpy import load_file

        return load_file(path)
    return read_torch_state_dict(path)


def _as_state_dict(result, path):
    if isinstance(result, dict):
        for key in ("state_dict", "model"):
            if key in result and isinstance(result[key], dict):
                result = result[key]
                break
    if not isinstance(result, dict) or not all(
        isinstance(value, np.ndarray) for value in result.values()
    ):
        raise ValueError(f"{path} does not hold a state_dict of tensors.")
    return collections.OrderedDict(result)
