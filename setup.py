"""Build of the myconv PyTorch extension.

One shared library, ``myconv/_C.abi3.so``, holds every kernel (CPU always; CUDA
when it can be built) and registers the ops with the dispatcher when loaded.
It has no Python bindings of its own (``torch.ops.load_library`` loads it), so
the GoogleTest binary links the very same file. The package also carries the
C++ headers (``myconv/include/myconv/``) and a CMake package config
(``myconv/share/cmake/myconv/``, found through ``myconv.cmake_prefix_path``),
so that C++ programs can ``find_package(myconv)`` and link that library.

Environment switches:
  MYCONV_CPU_ONLY=1       build without the CUDA sources even where nvcc exists
  TORCH_CUDA_ARCH_LIST    GPU architectures for the CUDA sources (default "8.0;9.0+PTX":
                          A100, H100, and PTX that newer GPUs compile at load time)
  MAX_JOBS                parallel compile jobs (ninja)
"""
import glob
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

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


def version() -> str:
    """The version, from CMakeLists.txt's project() (one source for both builds)."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(myconv VERSION ([0-9.]+)", f.read()).group(1)


def configure(template: str, out: str, values: dict) -> None:
    """CMake's configure_file(@ONLY) for the package config templates."""
    with open(os.path.join(ROOT, template)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"{template}: no value for {left}"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)


def write_cpp_package(package: str) -> None:
    """The C++ side of the Python package in the folder `package`: the public
    headers, and the CMake config whose myconv::myconv target links this
    package's _C.abi3.so (myconv.cmake_prefix_path points there)."""
    headers = os.path.join(package, "include", "myconv")
    shutil.rmtree(headers, ignore_errors=True)  # no stale headers from an earlier build
    shutil.copytree(os.path.join(ROOT, "csrc", "include", "myconv"), headers)
    cmake_dir = os.path.join(package, "share", "cmake", "myconv")
    v = version()
    major, minor = v.split(".")[:2]
    values = dict(PROJECT_VERSION=v, PROJECT_VERSION_MAJOR=major, PROJECT_VERSION_MINOR=minor,
                  MYCONV_LIBRARY_RELPATH="_C.abi3.so", MYCONV_LIBRARY_NO_SONAME="FALSE",
                  MYCONV_TORCH_VERSION=torch.__version__,
                  MYCONV_BUILT_WITH_CUDA="TRUE" if cuda_build_wanted() else "FALSE")
    configure("cmake/myconvConfig.cmake.in", os.path.join(cmake_dir, "myconvConfig.cmake"), values)
    configure("cmake/myconvConfigVersion.cmake.in", os.path.join(cmake_dir, "myconvConfigVersion.cmake"), values)
    shutil.copy(os.path.join(ROOT, "cmake", "myconvTorchHints.cmake"), cmake_dir)


class BuildPyWithCppPackage(build_py):
    """build_py, plus the C++ side of the package (write_cpp_package)."""

    def run(self):
        super().run()
        # an editable install uses the source package folder (the files are gitignored there)
        base = os.path.join(ROOT, "torch_ext") if getattr(self, "editable_mode", False) else self.build_lib
        write_cpp_package(os.path.join(base, "myconv"))


class BuildExtWithCppPackage(BuildExtension):
    """torch's BuildExtension; `build_ext --inplace` (the library built into
    torch_ext/myconv) also writes the C++ side of the package there."""

    def run(self):
        super().run()
        if self.inplace:
            write_cpp_package(os.path.join(ROOT, "torch_ext", "myconv"))


def extension():
    # -g0: the interpreter's CFLAGS carry -g, which makes every torch-header TU slower to build.
    # -fopenmp: at::parallel_for is a header template over OpenMP (torch's CPU
    # parallel backend); without it, our loops would run on one thread.
    cxx_flags = ["-O3", "-g0", "-fopenmp"]
    link_flags = ["-fopenmp"]
    srcs = sources("csrc/*.cpp") + sources("csrc/*/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    if cuda_build_wanted():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        # -idirafter: the toolkit's own headers (matching nvcc) win over pip's copies.
        cuda_cxx_flags = cxx_flags + [f"-idirafter{d}" for d in pip_cuda_include_dirs()]
        return CUDAExtension(
            "myconv._C",
            srcs + sources("cuda/*.cpp") + sources("cuda/*.cu"),
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cuda_cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
    return CppExtension("myconv._C", srcs, include_dirs=include_dirs, extra_compile_args={"cxx": cxx_flags},
                        extra_link_args=link_flags, py_limited_api=True)


setup(
    name="myconv",
    version=version(),
    description="Convolution (1-D, 2-D, 3-D) as im2col/col2im + GEMM: CPU and CUDA PyTorch operators with "
                "autograd, and a C++ (LibTorch) package",
    packages=["myconv"],
    package_dir={"": "torch_ext"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtWithCppPackage, "build_py": BuildPyWithCppPackage},
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
