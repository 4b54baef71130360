"""Results are bitwise independent of the thread count, checked from fresh
processes: each thread count gets a new interpreter (fresh MKL, OpenMP and
oneDNN state, the thread pool made once at that size), and the runs are
compared bit for bit. Every op (1-D, 2-D, 3-D, transposed), layout
(contiguous, channels-last), dtype (float32, float64, bfloat16) and CPU GEMM
engine is reached, with layers large enough for long GEMM reductions
(grad_weight sums hundreds of positions), partial-sum chunks and channel
blocks.

MKL's conditional numerical reproducibility mode (MKL_CBWR) would hide a
thread-count dependence in MKL's GEMMs (it did on an Intel CPU with AVX-512 /
AMX): conftest.py removes it from the environment before MKL starts, the
subprocesses here run without it, and a test checks that MKL runs with it off.
"""
import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
import torch

# One process's work: every case at the given thread count, saved in order.
SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import myconv

    threads, path = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads

    def tensors(seed, x_shape, w_shape, dtype, channels_last, transposed=False):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(*x_shape, generator=g).to(dtype)
        w = torch.randn(*w_shape, generator=g).to(dtype)
        b = torch.randn(w_shape[1] if transposed else w_shape[0], generator=g).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        return x, w, b

    results = []

    def step(fn, x, w, b, **kw):
        x = x.detach().clone().requires_grad_()
        w = w.detach().clone().requires_grad_()
        b = b.detach().clone().requires_grad_() if b is not None else None
        y = fn(x, w, b, **kw)
        g = torch.Generator().manual_seed(99)
        gy = torch.randn(y.shape, generator=g).to(y.dtype)
        y.backward(gy)
        results.extend(t.detach() for t in (y, x.grad, w.grad) + ((b.grad,) if b is not None else ()))

    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for cl in (False, True):
            # a ResNet layer: several tiles per image, chunks of grad_weight's long sums
            step(myconv.conv2d, *tensors(1, (3, 64, 28, 28), (96, 64, 3, 3), dtype, cl), padding=1)
            # odd sizes, stride and dilation
            step(myconv.conv2d, *tensors(2, (2, 6, 23, 19), (5, 6, 3, 2), dtype, cl),
                 stride=(2, 1), padding=(2, 1), dilation=(2, 3))
            # 1x1 on the input itself, grouped, depthwise
            step(myconv.conv2d, *tensors(3, (4, 48, 20, 21), (40, 48, 1, 1), dtype, cl))
            step(myconv.conv2d, *tensors(4, (2, 32, 17, 15), (24, 8, 3, 3), dtype, cl), padding=1, groups=4)
            step(myconv.conv2d, *tensors(5, (2, 32, 17, 15), (32, 1, 3, 3), dtype, cl), padding=1, groups=32)
            # 3-D and its transpose
            step(myconv.conv3d, *tensors(6, (2, 8, 9, 14, 13), (16, 8, 3, 3, 3), dtype, cl), padding=1)
            step(myconv.conv_transpose3d, *tensors(7, (2, 8, 5, 7, 6), (8, 6, 3, 3, 3), dtype, cl, transposed=True),
                 stride=2, padding=1, output_padding=1)
            step(myconv.conv_transpose2d, *tensors(8, (3, 32, 14, 14), (32, 16, 4, 4), dtype, cl, transposed=True),
                 stride=2, padding=1)
        # 1-D (no channels-last) and its transpose
        step(myconv.conv1d, *tensors(9, (4, 16, 1500), (32, 16, 5), dtype, False), stride=2, padding=2)
        step(myconv.conv_transpose1d, *tensors(10, (4, 16, 300), (16, 8, 4), dtype, False, transposed=True), stride=2)
        # one output channel: the bias gradient is a single sum over 70,000+ elements (ATen splits such a
        # reduction across threads)
        step(myconv.conv2d, *tensors(13, (4, 4, 192, 192), (1, 4, 3, 3), dtype, False), padding=1)
        step(myconv.conv_transpose2d, *tensors(14, (2, 4, 100, 100), (4, 1, 4, 4), dtype, False, transposed=True),
             stride=2, padding=1)
        step(myconv.conv1d, *tensors(15, (1, 2, 70000), (1, 2, 3), dtype, False), padding=1)

    # every CPU GEMM engine, float32
    for engine in ("onednn", "blas", "aten"):
        myconv.set_cpu_gemm_engine(engine)
        for cl in (False, True):
            step(myconv.conv2d, *tensors(11, (3, 64, 28, 28), (96, 64, 3, 3), torch.float32, cl), padding=1)
        step(myconv.conv1d, *tensors(12, (4, 16, 1500), (32, 16, 5), torch.float32, False), padding=2)
    myconv.set_cpu_gemm_engine("auto")
    torch.save(results, path)
    """
)


def clean_environment():
    """This environment without anything that fixes MKL's or OpenMP's behaviour from outside."""
    return {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def test_every_op_dtype_layout_and_engine_is_bitwise_the_same_for_1_2_3_threads_in_fresh_processes(tmp_path):
    runs = {}
    for threads in (1, 2, 3):
        path = tmp_path / f"threads-{threads}.pt"
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(path)], env=clean_environment(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[threads] = torch.load(path)
    assert len(runs[1]) > 100
    for threads in (2, 3):
        assert len(runs[threads]) == len(runs[1])
        differing = [i for i, (a, e) in enumerate(zip(runs[threads], runs[1])) if not torch.equal(a, e)]
        assert not differing, f"{threads} threads: results {differing} differ from 1 thread's"


def mkl_library():
    """torch's CPU library, where MKL is linked in; None where torch's BLAS is not MKL."""
    if not torch.backends.mkl.is_available():
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    return lib if hasattr(lib, "mkl_serv_cbwr_get") else None


def test_mkl_runs_without_conditional_numerical_reproducibility():
    # so that the bitwise tests of this suite check MKL as users run it (conftest.py removes MKL_CBWR from the
    # environment before MKL starts; this asks MKL itself)
    lib = mkl_library()
    if lib is None:
        pytest.skip("torch's BLAS is not MKL (or does not export its CBWR query)")
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # MKL initialised
    mkl_cbwr_branch, mkl_cbwr_branch_off = 1, 1  # mkl_cbwr.h
    assert lib.mkl_serv_cbwr_get(mkl_cbwr_branch) == mkl_cbwr_branch_off
