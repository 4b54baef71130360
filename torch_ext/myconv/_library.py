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


def cuda_built() -> bool:
    """True when the library was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("myconv::conv2d", "CUDA")


def get_workspace_limit() -> int:
    """Upper bound, in bytes, of the column workspace of one conv2d call."""
    return torch.ops.myconv._get_workspace_limit()


def set_workspace_limit(nbytes: int) -> None:
    """Sets the column-workspace bound, in bytes (default 256 MiB, or
    ``MYCONV_WORKSPACE_MB`` from the environment). The batch is processed in
    chunks that fit; one image at a time at least, whatever the bound."""
    torch.ops.myconv._set_workspace_limit(int(nbytes))
