"""A compiled depthwise convolution with per-example kernels, for torch inference on CPUs.

CondConv's depthwise layers convolve every example with a kernel of its own. torch has
no such kernel: the folded path (`torch_conv.per_example_depthwise_conv`) runs oneDNN's
depthwise kernel on a chunk of examples folded into channels, which costs 2-4x the
static layer's convolution at batch 32 (oneDNN is slow on many channels of one image,
and the fold copies the activations twice). Those 8 layers were most of
CondConv-EfficientNet-B0's excess over EfficientNet-B0 on eager torch (1.16 at batch 32
against the 1.10 the paper's multiply-adds promise; with a depthwise convolution as fast
as the static layer's, 1.08). `native/per_example_depthwise.c` is that convolution:
plain C with vector types and OpenMP, 0.9-1.16x oneDNN's static layer on the zoo's
shapes at batch 32 (`scripts/bench_native_depthwise.py`).

The same kernel with one shared kernel serves static depthwise layers where it beats
oneDNN (`static_applies`): up to `STATIC_MAX_BATCH` examples, where oneDNN's fixed cost
per call is most of the time (0.3-0.6x at batch 1); kernels 3 or 5 wide with a column
stride of 1 or 2, which it runs in sliding blocks (0.7-1.1x at batch 32 where the
padding is even); and uneven "same" padding (a stride of 2 on an even side), which
torch can only apply by copying the padded input (0.2-0.5x at any batch).

The library it is built into also holds the 1x1 convolution of combined experts
(`keras_dynconv.ops.native_pointwise`); what follows holds for both kernels.

It is built on first use with the machine's C compiler (`$CC`, else `cc` or `gcc`) for
the machine's own instruction set (`-march=native`), in about a second, and kept in
`$KERAS_DYNCONV_CACHE` (default `~/.cache/keras_dynconv`) under a name that hashes the
source, the compiler, the flags and the CPU's features. Without a compiler, on other
systems than Linux, or with `KERAS_DYNCONV_NATIVE=0` (read on every call), oneDNN's paths
run instead: same results, slower. Linux only because the kernel's OpenMP threads must
be torch's own: a library that needs `libgomp.so.1` binds to the copy torch has already
loaded. Should loading it map an OpenMP runtime of its own instead (a torch built with
another one), two thread pools would fight for the cores, so the kernel is not used.

Used only where `torch_conv.inference_available` holds (torch, a CPU, no gradient
wanted, not exporting or compiling), for float32 and a depth multiplier of 1. Equal to
per-example NumPy loops, the folded path and Keras' `DepthwiseConv2D`
(tests/test_native_depthwise.py).
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

from keras_dynconv.ops.taps import output_size_and_padding
from keras_dynconv.ops.taps import pair

# Every kernel in native/, built into one library (`library`): this module's depthwise
# convolution and `native_pointwise`'s 1x1 convolution of experts.
SOURCES = tuple(
    pathlib.Path(__file__).with_name("native") / name
    for name in ("per_example_depthwise.c", "pointwise_of_experts.c")
)
# What the sources include: part of what a built library is kept under.
HEADERS = (pathlib.Path(__file__).with_name("native") / "vectors.h",)
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
# Names of OpenMP runtimes as they appear in /proc/self/maps.
OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")

# Up to this many examples a static depthwise convolution is faster here than oneDNN's,
# whose fixed cost per call (0.15-0.3 ms) exceeds the arithmetic
# (`scripts/bench_native_depthwise.py --static`).
STATIC_MAX_BATCH = 4

_build_lock = threading.Lock()


def enabled():
    """Whether the compiled kernel may be used at all (`KERAS_DYNCONV_NATIVE`)."""
    return os.environ.get("KERAS_DYNCONV_NATIVE", "1").strip().lower() not in ("0", "false", "no")


def applies(inputs, kernels):
    """Whether `per_example_depthwise_conv` takes these torch tensors (the caller has
    checked `torch_conv.inference_available`): float32, depth multiplier 1, and the
    kernel built and loaded."""
    import torch

    return (
        inputs.dtype == torch.float32
        and kernels.dtype == torch.float32
        and kernels.shape[-1] == 1
        and enabled()
        and kernel_function() is not None
    )


def static_applies(inputs, kernel, strides, padding, dilation_rate, bias=None):
    """Whether a static depthwise convolution (`kernel` `[kh, kw, C, M]`) of these torch
    tensors is faster here than oneDNN's (the caller has checked
    `torch_conv.inference_available`): at most `STATIC_MAX_BATCH` examples, where
    oneDNN's fixed cost per call dominates; a kernel the C code runs in sliding blocks
    (3 or 5 wide, column stride 1 or 2, no column dilation); or a padding torch cannot
    express (uneven "same" padding, which torch's path copies the input to apply:
    `torch_conv.padding_plan`)."""
    if not (
        applies(inputs, kernel[None])
        and (bias is None or bias.dtype == inputs.dtype)
    ):
        return False
    if inputs.shape[0] <= STATIC_MAX_BATCH:
        return True
    if library().depthwise_slides(kernel.shape[1], pair(strides)[1], pair(dilation_rate)[1]):
        return True
    # torch_conv imports this module: imported here, when both are loaded.
    from keras_dynconv.ops import torch_conv

    input_pad, _ = torch_conv.padding_plan(
        tuple(inputs.shape[1:3]), tuple(kernel.shape[:2]), strides, dilation_rate, padding
    )
    return input_pad is not None


def per_example_depthwise_conv(inputs, kernels, strides, padding, dilation_rate, bias=None):
    """`[B, H', W', C]`: example b of `inputs` `[B, H, W, C]` convolved with `kernels[b]`
    (`kernels` `[B, kh, kw, C, 1]`), plus `bias` `[C]` when given, as
    `torch_conv.per_example_depthwise_conv`."""
    kernels = kernels.contiguous()
    if bias is not None:
        bias = bias.detach().contiguous()
    return _convolve(
        inputs, kernels, kernels[0].numel(), bias, strides, padding, dilation_rate
    )


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, bias=None):
    """`[B, H', W', C]`: `inputs` `[B, H, W, C]` convolved with one `kernel`
    `[kh, kw, C, 1]`, plus `bias` `[C]` when given, as `torch_conv.depthwise_conv`."""
    if bias is not None:
        bias = bias.detach().contiguous()
    return _convolve(
        inputs, kernel.detach().contiguous()[None], 0, bias, strides, padding, dilation_rate
    )


def _convolve(inputs, kernels, kernel_stride, bias, strides, padding, dilation_rate):
    import torch

    inputs = inputs.contiguous()
    batch, height, width, channels = inputs.shape
    kernel_h, kernel_w = kernels.shape[1:3]
    g = geometry((height, width), (kernel_h, kernel_w), strides, padding, dilation_rate)
    outputs = torch.empty(
        (batch, g["out_h"], g["out_w"], channels), dtype=inputs.dtype, device=inputs.device
    )
    if outputs.numel() == 0:
        return outputs
    failed = kernel_function()(
        inputs.data_ptr(), kernels.data_ptr(), kernel_stride,
        None if bias is None else bias.data_ptr(), outputs.data_ptr(),
        batch, height, width, channels, kernel_h, kernel_w, g["stride_h"], g["stride_w"],
        g["pad_top"], g["pad_left"], g["dilation_h"], g["dilation_w"], g["out_h"], g["out_w"],
        torch.get_num_threads(),
    )
    if failed:
        raise MemoryError("the native depthwise convolution could not allocate its tables")
    return outputs


def geometry(input_size, kernel_size, strides, padding, dilation_rate):
    """What the depthwise kernel takes besides tensors, for a convolution of an input of
    `input_size` `(H, W)` with a kernel of `kernel_size` `(kh, kw)`: `stride_h`,
    `stride_w`, `dilation_h`, `dilation_w`, the padding before the first row and column
    (`pad_top`, `pad_left`: TensorFlow's "same" or "valid" amounts) and the output's
    size (`out_h`, `out_w`, at least 0)."""
    padding = padding.lower()
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid'. Received padding={padding!r}")
    (stride_h, stride_w), (dilation_h, dilation_w) = pair(strides), pair(dilation_rate)
    out_h, (pad_top, _) = output_size_and_padding(
        input_size[0], kernel_size[0], stride_h, dilation_h, padding
    )
    out_w, (pad_left, _) = output_size_and_padding(
        input_size[1], kernel_size[1], stride_w, dilation_w, padding
    )
    return dict(
        stride_h=stride_h, stride_w=stride_w, dilation_h=dilation_h, dilation_w=dilation_w,
        pad_top=pad_top, pad_left=pad_left, out_h=max(out_h, 0), out_w=max(out_w, 0),
    )


def kernel_function():
    """The loaded depthwise C function, or None where it cannot be built or must not run."""
    loaded = library()
    return None if loaded is None else loaded.per_example_depthwise


@functools.cache
def library():
    """The loaded library of the native kernels (`SOURCES`), or None where it cannot be
    built or must not run."""
    compiler = compiler_path()
    if not compiler:
        return None
    runtimes_before = openmp_runtimes(_read_maps())
    try:
        library = ctypes.CDLL(str(_built_library(compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(
            f"keras_dynconv: the native kernels (per-example depthwise and 1x1 "
            f"convolutions) could not be built with {compiler} ({detail.strip()[-500:]}); "
            "dynamic layers take torch's slower paths. Set KERAS_DYNCONV_NATIVE=0 to skip "
            "the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    added = openmp_runtimes(_read_maps()) - runtimes_before
    if added:
        warnings.warn(
            "keras_dynconv: the native kernels loaded an OpenMP "
            f"runtime of its own ({', '.join(sorted(added))}) instead of torch's; they stay "
            "off so that their threads do not compete with torch's.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    depthwise = library.per_example_depthwise
    depthwise.restype = ctypes.c_int
    depthwise.argtypes = (
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        + [ctypes.c_long] * 14
        + [ctypes.c_int]
    )
    pointwise = library.pointwise_of_experts
    pointwise.restype = ctypes.c_int
    pointwise.argtypes = (
        [ctypes.c_void_p] * 2 + [ctypes.c_long] * 3 + [ctypes.c_void_p] * 3
        + [ctypes.c_long] * 5 + [ctypes.c_int]
    )
    library.pointwise_block_columns.restype = ctypes.c_int
    library.depthwise_slides.restype = ctypes.c_int
    library.depthwise_slides.argtypes = [ctypes.c_long] * 3
    return library


def compiler_path():
    """The C compiler the kernels are built with (`$CC`, else `cc` or `gcc`), or None
    where there is none or the system is not Linux."""
    if not sys.platform.startswith("linux"):
        return None
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def openmp_runtimes(maps_text):
    """The distinct OpenMP runtime files among the mappings of `/proc/<pid>/maps` text."""
    paths = set()
    for line in maps_text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and any(name in os.path.basename(fields[-1]) for name in OPENMP_RUNTIMES):
            paths.add(os.path.realpath(fields[-1]))
    return paths


def cache_dir():
    """Where built kernels are kept: `$KERAS_DYNCONV_CACHE`, else `$XDG_CACHE_HOME` or
    `~/.cache`, then `keras_dynconv`."""
    if os.environ.get("KERAS_DYNCONV_CACHE"):
        return pathlib.Path(os.environ["KERAS_DYNCONV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "keras_dynconv"


def _read_maps():
    try:
        return pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return ""


def _cpu_features():
    """The CPU's feature flags: `-march=native` code is only valid where they match."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _built_library(compiler):
    """The path of the torch kernels' library, compiled first unless the cache holds it."""
    return built_library(compiler, "native_kernels", SOURCES, FLAGS)


def built_library(compiler, stem, sources, flags, link_flags=(), key_parts=()):
    """The path of a shared library built from `sources` (and `HEADERS`) with `flags`
    and `link_flags`, compiled first unless the cache holds it: kept as
    `{stem}-{key}.so`, the key a hash of the sources, the compiler and its version, the
    flags, `key_parts` and the CPU's features."""
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    contents = [source.read_bytes() for source in tuple(sources) + HEADERS]
    key = hashlib.sha256(
        b"\0".join(
            [*contents, compiler.encode(), version.encode(),
             " ".join((*flags, *link_flags)).encode(), *(part.encode() for part in key_parts),
             _cpu_features().encode()]
        )
    ).hexdigest()[:20]
    path = cache_dir() / f"{stem}-{key}.so"
    with _build_lock:
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Built under a temporary name and renamed: processes building at once each
        # finish a whole file, and the rename is atomic.
        descriptor, scratch = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(descriptor)
        try:
            subprocess.run(
                [compiler, *flags, "-o", scratch, *map(str, sources), *link_flags],
                capture_output=True, text=True, check=True, timeout=300,
            )
            os.replace(scratch, path)
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
    return path
