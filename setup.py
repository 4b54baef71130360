"""Build of the myconv PyTorch extension.

One shared library, ``myconv/_C.abi3.so``, holds every kernel (CPU always; CUDA
when it can be built) and registers the ops with the dispatcher when loaded.
It has no Python bindings of its own (``torch.ops.load_library`` loads it), so
the GoogleTest binary links the very same file.

Environment switches:
  MYCONV_CPU_ONLY=1       build without the CUDA sources even where nvcc exists
  TORCH_CUDA_ARCH_LIST    GPU architectures for the CUDA sources (default "9.0")
  MAX_JOBS                parallel compile jobs (ninja)
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_build_wanted() -> bool:
    if os.environ.get("MYCONV_CPU_ONLY", "0") not in ("", "0"):
        return False
    # A CUDA build needs a CUDA-enabled torch and the CUDA toolkit (nvcc).
    return torch.version.cuda is not None and CUDA_HOME is not None


def sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    # -g0: the interpreter's CFLAGS carry -g, which makes every torch-header TU slower to build.
    cxx_flags = ["-O3", "-g0"]
    srcs = sources("csrc/*.cpp") + sources("csrc/*/*.cpp")
    if cuda_build_wanted():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        return CUDAExtension(
            "myconv._C",
            srcs + sources("cuda/*.cpp") + sources("cuda/*.cu"),
            define_macros=[("MYCONV_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            py_limited_api=True,
        )
    return CppExtension("myconv._C", srcs, extra_compile_args={"cxx": cxx_flags}, py_limited_api=True)


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
    install_requires=["torch"],
)
