"""myconv: convolution as im2col / col2im + GEMM, as PyTorch operators.

Importing the package loads the compiled library, which registers the ops
``torch.ops.myconv.{conv1d, conv2d, conv3d, conv1d_backward, conv2d_backward,
conv3d_backward, conv_transpose1d, conv_transpose2d, conv_transpose3d, im2col,
col2im}`` with kernels for CPU, CUDA (when built with it), Meta and Autograd,
and their ONNX export (myconv.onnx_export).

    >>> import torch, myconv
    >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
    >>> conv = myconv.Conv2d(3, 4, kernel_size=3, padding=1)
    >>> conv(x).sum().backward()
"""
from ._library import (
    cmake_prefix_path,
    cuda_built,
    get_autotune,
    get_cpu_gemm_engine,
    get_cuda_tuning,
    get_tile_bytes,
    get_workspace_limit,
    library_path,
    set_autotune,
    set_cpu_gemm_engine,
    set_cuda_tuning,
    set_tile_bytes,
    set_workspace_limit,
)
from .functional import (
    col2im,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    im2col,
)
from .explain import Explanation, explain, get_verbose, set_verbose
from .modules import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, convert
from . import onnx_export  # noqa: F401  (ONNX export: symbolics for the TorchScript exporter)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "cmake_prefix_path",
    "col2im",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "convert",
    "cuda_built",
    "explain",
    "Explanation",
    "get_autotune",
    "get_cpu_gemm_engine",
    "get_cuda_tuning",
    "get_tile_bytes",
    "get_verbose",
    "get_workspace_limit",
    "im2col",
    "library_path",
    "set_autotune",
    "set_cpu_gemm_engine",
    "set_cuda_tuning",
    "set_tile_bytes",
    "set_verbose",
    "set_workspace_limit",
]
__version__ = "0.1.0"
