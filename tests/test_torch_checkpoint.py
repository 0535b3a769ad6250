"""The torch-free reader of `torch.save` files equals `torch.load` on the same files."""

import os
import pickle
import zipfile

import numpy as np
import pytest

from keras_dynconv.weights.torch_checkpoint import read_torch_state_dict

torch = pytest.importorskip("torch")


def tensors():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=generator)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=generator),
        "transposed": base.t(),  # non-contiguous view: strides (1, 6)
        "slice": torch.arange(20)[3:11:2],  # storage offset and stride 2
        "half": torch.randn(5, generator=generator).half(),
        "double": torch.randn(2, 2, generator=generator).double(),
        "int32": torch.tensor([1, -2, 3], dtype=torch.int32),
        "flags": torch.tensor([True, False, True]),
        "bn.num_batches_tracked": torch.tensor(7),  # 0-d
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
        "shares_storage": base[1],  # same storage as "transposed"
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_equals_torch_load(tmp_path, zip_format):
    path = tmp_path / "weights.pth"
    state = tensors()
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = read_torch_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(reference)
    for name, tensor in reference.items():
        expected = tensor.detach().numpy()
        assert ours[name].dtype == expected.dtype, name
        assert ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
        assert ours[name].flags.c_contiguous


def test_state_dict_under_a_key(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert list(read_torch_state_dict(path)) == ["w"]


def test_module_state_dict_keeps_module_order(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "module.pth"
    torch.save(module.state_dict(), path)
    assert list(read_torch_state_dict(path)) == list(module.state_dict())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_file_is_an_error(tmp_path, zip_format):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.randn(1000)}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1500])
    with pytest.raises((ValueError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError)):
        read_torch_state_dict(path)


def test_code_in_the_pickle_is_refused(tmp_path):
    """A checkpoint that asks for `os.system` is refused before anything runs."""

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > should_not_exist",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": Exploit()}, protocol=2))
        archive.writestr("evil/byteorder", "little")
    with pytest.raises(pickle.UnpicklingError, match="system"):
        read_torch_state_dict(path)
    assert not (tmp_path / "should_not_exist").exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(pickle.dumps(12345))
    with pytest.raises((ValueError, EOFError)):
        read_torch_state_dict(path)


def test_read_state_dict_tells_the_format_by_content(tmp_path):
    from safetensors.numpy import save_file

    from keras_dynconv.weights import read_state_dict

    arrays = {"b": np.arange(3, dtype="float32"), "a": np.ones((2, 2), "float16")}
    safetensors_path = tmp_path / "weights.bin"  # a misleading name on purpose
    save_file(arrays, str(safetensors_path))
    torch_path = tmp_path / "weights.safetensors"
    torch.save({name: torch.from_numpy(value) for name, value in arrays.items()}, torch_path)
    for path in (safetensors_path, torch_path):
        state_dict = read_state_dict(path)
        assert sorted(state_dict) == ["a", "b"], path
        for name, value in arrays.items():
            np.testing.assert_array_equal(state_dict[name], value)
            assert state_dict[name].dtype == value.dtype
    assert list(read_state_dict(torch_path)) == ["b", "a"]  # torch.save keeps the order
