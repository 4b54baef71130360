"""Loads the compiled myconv library and exposes its process-wide settings."""
import glob
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


def get_tile_bytes() -> int:
    """Target size, in bytes, of one CPU column tile (0: half the L2 cache of a core)."""
    return torch.ops.myconv._get_tile_bytes()


def set_tile_bytes(nbytes: int) -> None:
    """Sets the CPU column-tile size in bytes; 0 (the default) sizes tiles from
    the L2 cache. Columns are written by im2col and read by the GEMM tile by
    tile, while they are still in cache. A tuning and testing knob: results do
    not depend on the thread count, whatever its value."""
    torch.ops.myconv._set_tile_bytes(int(nbytes))
