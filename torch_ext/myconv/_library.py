"""Loads the compiled myconv library and exposes its process-wide settings."""
import glob
import operator
import os

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))


def library_path() -> str:
    """Path of the compiled library (``_C.abi3.so``) that holds every kernel.

    C++ programs and the GoogleTest suite can link this very file.
    """
    found = sorted(glob.glob(os.path.join(_HERE, "_C*.so")))
    if not found:
        raise ImportError(
            f"myconv: compiled library not found in {_HERE}; build it with "
            "`pip install --no-build-isolation .` from the repository root"
        )
    return found[0]


torch.ops.load_library(library_path())

#: The prefix to put in CMAKE_PREFIX_PATH for ``find_package(myconv)`` in a
#: C++ program (like ``torch.utils.cmake_prefix_path``): the package carries
#: the headers and a CMake config whose ``myconv::myconv`` target links the
#: very library this package loads.
cmake_prefix_path = os.path.join(_HERE, "share", "cmake")


def cuda_built() -> bool:
    """True when the library was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("myconv::conv2d", "CUDA")


def get_workspace_limit() -> int:
    """Upper bound, in bytes, of the column workspace of one conv2d call."""
    return torch.ops.myconv._get_workspace_limit()


def set_workspace_limit(nbytes: int) -> None:
    """Sets the workspace bound, in bytes, of one call (column tiles,
    per-thread buffers, partial sums; default 256 MiB, or
    ``MYCONV_WORKSPACE_MB`` from the environment). Work is cut so that it
    fits, and fewer threads share it when it is small; results stay the same."""
    torch.ops.myconv._set_workspace_limit(int(nbytes))


def get_cpu_gemm_engine() -> str:
    """The CPU backend's GEMM engine: ``"auto"`` (default) or the forced one."""
    return torch.ops.myconv._get_cpu_gemm_engine()


def set_cpu_gemm_engine(engine: str) -> None:
    """Forces the engine of the CPU backend's GEMMs: ``"onednn"`` (oneDNN's
    matmul, float32), ``"blas"`` (the BLAS's sgemm / dgemm: MKL in torch's x86
    builds), ``"aten"`` (``torch.mm``'s own path), or ``"auto"`` (default:
    oneDNN for float32 GEMMs with enough work, the BLAS for the rest). An engine
    that cannot take a GEMM (dtype, strides, missing from this torch) hands it
    to the next. oneDNN runs only while torch lets it compute float32 in
    float32 (``torch.backends.mkldnn.matmul.fp32_precision`` "ieee" or "none",
    which ``torch.set_float32_matmul_precision("medium")`` changes) and
    ``torch.backends.mkldnn.enabled``; otherwise the BLAS does: a convolution
    stays in full float32. Each engine is deterministic and independent of the
    thread count; engines may differ from each other in the last bits."""
    torch.ops.myconv._set_cpu_gemm_engine(engine)


def get_autotune() -> bool:
    """Whether the CPU work plan is autotuned (off by default)."""
    return torch.ops.myconv._get_autotune()


def set_autotune(on: bool) -> None:
    """Autotuning of the CPU work plan. With it on, the first call of a new
    problem (per pass, sizes, window, dtype, layout and thread count) times the
    candidate tile sizes (a quarter, half, once and twice the default, which is
    twice the L2 cache of a core) on the real pass and keeps the fastest for later calls of that
    problem, from any thread; the first call costs about eight passes. Each
    plan's results are deterministic, but the plan is picked by a clock: a
    tuned plan may differ from the default one, and from the plan another
    process or another thread count picked, in the last bits. Leave it off
    where runs must reproduce bit for bit. A tile size set with
    :func:`set_tile_bytes` is never tuned."""
    torch.ops.myconv._set_autotune(bool(on))


def get_cuda_tuning() -> dict:
    """The CUDA backend's plan choices in effect (defaults, with the overrides of
    :func:`set_cuda_tuning`): ``{"chunk_bytes": 33554432, ..., "direct_grouped": True}``
    (``chunk_bytes`` in float32's bytes: other dtypes take as many elements)."""
    spec = torch.ops.myconv._get_cuda_tuning()
    values = {"true": True, "false": False}
    return {k: values[v] if v in values else int(v) for k, v in (item.split("=") for item in spec.split(","))}


def set_cuda_tuning(overrides: str = "", **choices) -> None:
    """For experiments on a GPU: overrides the CUDA backend's plan choices
    (``csrc/cuda_tuning.h``), given as ``"key=value,..."`` and / or keywords,
    e.g. ``set_cuda_tuning(chunk_min_positions=8192, grad_weight_image_products=False)``.
    Each call replaces the previous overrides; ``set_cuda_tuning()`` restores
    the defaults. Keys: ``chunk_bytes`` (bytes of float32 columns: other
    dtypes take as many elements), ``chunk_min_positions``,
    ``image_gemm_min_positions`` (0: never; integers from 0 to 2**40),
    ``column_row_bytes`` (0 or a power of two up to 4096; up to
    the element size: unpadded rows), ``gemm_on_views``,
    ``image_batched_views``, ``grad_weight_image_products``, ``view_chunks``,
    ``channels_last``, ``direct_grouped`` (booleans). An unknown
    key or a bad value raises and changes nothing. Every choice computes the
    same convolution (the last bits may differ: another cut of the work);
    ``myconv.explain(..., device="cuda")`` shows the plans it gives, and the
    benchmark takes it as ``--cuda-tuning``."""
    if isinstance(overrides, dict):  # such as get_cuda_tuning()'s
        overrides, choices = "", {**overrides, **choices}
    kinds = get_cuda_tuning()
    items = [overrides] if overrides else []
    for key, value in choices.items():
        if isinstance(kinds.get(key), bool):
            if isinstance(value, str) or value not in (0, 1):  # bool, NumPy's bool_, 0 / 1
                raise TypeError(f"set_cuda_tuning: {key} expects a boolean, but got {value!r}")
            value = int(bool(value))
        elif isinstance(value, bool) or type(value).__name__ == "bool_":
            raise TypeError(f"set_cuda_tuning: {key} expects an integer, but got {value!r}")
        else:
            value = operator.index(value)  # (ints, NumPy's integers; no strings or floats)
        items.append(f"{key}={value}")
    torch.ops.myconv._set_cuda_tuning(",".join(items))


def get_tile_bytes() -> int:
    """Target size, in bytes, of one CPU column tile (0: twice the L2 cache of a core)."""
    return torch.ops.myconv._get_tile_bytes()


def set_tile_bytes(nbytes: int) -> None:
    """Sets the CPU column-tile size in bytes; 0 (the default) sizes tiles from
    the L2 cache (twice its size). Columns are written by im2col and read by the GEMM tile by
    tile, while they are still in cache. A tuning and testing knob: results do
    not depend on the thread count, whatever its value."""
    torch.ops.myconv._set_tile_bytes(int(nbytes))
