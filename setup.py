"""Build of the myconv PyTorch extension.

One shared library, ``myconv/_C.abi3.so``, holds every kernel (CPU always; CUDA
when it can be built) and registers the ops with the dispatcher when loaded.
It has no Python bindings of its own (``torch.ops.load_library`` loads it), so
the GoogleTest binary links the very same file.

Environment switches:
  MYCONV_CPU_ONLY=1       build without the CUDA sources even where nvcc exists
  TORCH_CUDA_ARCH_LIST    GPU architectures for the CUDA sources (default "8.0;9.0+PTX":
                          A100, H100, and PTX that newer GPUs compile at load time)
  MAX_JOBS                parallel compile jobs (ninja)
"""
import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# torch finds the toolkit from `nvcc` on PATH; a wrapper script there (as in
# /usr/local/bin/nvcc on our development machines) points it at /usr/local.
# Prefer the standard toolkit root when nothing says otherwise.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists(
    "/usr/local/cuda/bin/nvcc"
):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def cuda_build_wanted() -> bool:
    if os.environ.get("MYCONV_CPU_ONLY", "0") not in ("", "0"):
        return False
    # A CUDA build needs a CUDA-enabled torch and the CUDA toolkit (nvcc).
    return torch.version.cuda is not None and CUDA_HOME is not None


def sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def pip_cuda_include_dirs() -> list:
    """Headers of the CUDA libraries torch links (cuBLAS, cuSPARSE, cuSOLVER):
    pip's CUDA torch ships them in site-packages/nvidia/*/include, where the
    toolkit alone may not have them."""
    try:
        import nvidia  # namespace package installed with CUDA builds of torch
    except ImportError:
        return []
    dirs = []
    for root in list(nvidia.__path__):
        dirs += glob.glob(os.path.join(root, "*", "include"))
    return sorted(d for d in dirs if os.path.exists(os.path.join(d, "cublas_v2.h")))


def extension():
    # -g0: the interpreter's CFLAGS carry -g, which makes every torch-header TU slower to build.
    # -fopenmp: at::parallel_for is a header template over OpenMP (torch's CPU
    # parallel backend); without it, our loops would run on one thread.
    cxx_flags = ["-O3", "-g0", "-fopenmp"]
    link_flags = ["-fopenmp"]
    srcs = sources("csrc/*.cpp") + sources("csrc/*/*.cpp")
    if cuda_build_wanted():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        # -idirafter: the toolkit's own headers (matching nvcc) win over pip's copies.
        cuda_cxx_flags = cxx_flags + [f"-idirafter{d}" for d in pip_cuda_include_dirs()]
        return CUDAExtension(
            "myconv._C",
            srcs + sources("cuda/*.cpp") + sources("cuda/*.cu"),
            extra_compile_args={"cxx": cuda_cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
    return CppExtension("myconv._C", srcs, extra_compile_args={"cxx": cxx_flags},
                        extra_link_args=link_flags, py_limited_api=True)


setup(
    name="myconv",
    version="0.1.0",
    description="2-D convolution as im2col/col2im + GEMM: CPU and CUDA PyTorch operators with autograd",
    packages=["myconv"],
    package_dir={"": "torch_ext"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
    python_requires=">=3.10",
    install_requires=["torch>=2.9"],
    extras_require={
        # python -m myconv.benchmark: progress bar and plot
        "benchmark": ["tqdm", "matplotlib"],
        # python -m myconv.train: the digits data set, progress bar and plots
        "train": ["scikit-learn", "tqdm", "matplotlib"],
        "all": ["tqdm", "matplotlib", "scikit-learn"],
    },
)
