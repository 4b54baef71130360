"""The host cost of a CUDA convolution, checked without a GPU.

A CUDA call's CPU time is the ATen ops it dispatches (each a kernel launch or
a view), its own kernel launches and cuBLAS calls, and nothing else: no CPU
thread pool, no thread settings, no CPU-side copies or reductions. On an
H200 the seed layer's forward+backward took 1.17 ms of wall time with 16
CPU threads and 0.43 ms with one (docs/gpu.md), so these tests pin down
what a call does on the host:

* the ATen ops one conv2d forward and one backward dispatch under the CUDA
  backend's plan, replayed on the CPU (the replay runs the very composition
  the CUDA backend runs; only the column kernels and the GEMM are the CPU's),
  counted by the profiler: the count must not grow, and must not depend on
  the thread count (docs/gpu.md lists them);
* the composition and the CUDA backend name no CPU thread API (only the CPU
  backend and the autotuner's CPU timing key may).
"""
import collections
import pathlib
import re

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import myconv  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Ops that launch work on a GPU (the rest are views: no launch, a few hundred
# ns of host time each), and how many one call may dispatch at most. Measured
# 2026-12-04 (docs/gpu.md, "Host cost of a call"); lower them when a change
# removes one, never raise them without a reason written there.
LAUNCHING = {"aten::copy_", "aten::fill_", "aten::zero_", "aten::sum", "aten::add_", "aten::add", "aten::mul",
             "aten::contiguous", "aten::clone", "aten::to", "aten::_to_copy", "aten::empty", "aten::empty_strided",
             "aten::zeros", "aten::cat", "aten::index", "aten::item", "aten::_local_scalar_dense"}
CASES = {
    # name: (input, weight, conv args, ops forward, ops backward, budgets of the launching ones (fwd, bwd))
    "seed 3x3 8->16 32x32, batch 32": ((32, 8, 32, 32), (16, 8, 3, 3), dict(padding=1), 35, 69,
                                        ({"aten::empty": 2, "aten::copy_": 2},
                                         {"aten::empty": 4, "aten::copy_": 2, "aten::sum": 1, "aten::fill_": 1,
                                          "aten::to": 1})),
    "1x1 64->32 14x14, batch 8": ((8, 64, 14, 14), (32, 64, 1, 1), dict(), 35, 69,
                                  ({"aten::empty": 2, "aten::copy_": 2},
                                   {"aten::empty": 4, "aten::copy_": 2, "aten::sum": 1, "aten::fill_": 1,
                                    "aten::to": 1})),
    "grouped 3x3/2 32->32 g4 15x15, batch 3": ((3, 32, 15, 15), (32, 8, 3, 3), dict(stride=2, padding=1, groups=4),
                                               35, 69,
                                               ({"aten::empty": 2, "aten::copy_": 2},
                                                {"aten::empty": 4, "aten::copy_": 2, "aten::sum": 1,
                                                 "aten::fill_": 1, "aten::to": 1})),
}


@pytest.fixture
def cuda_plan_on_the_cpu():
    torch.ops.myconv._set_cpu_whole_image_plan(True)
    yield
    torch.ops.myconv._set_cpu_whole_image_plan(False)


def aten_ops(fn):
    """{op name: calls} of the ATen ops one call of fn dispatches (after a warm-up call)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def calls(case):
    x_shape, w_shape, args, *_ = CASES[case]
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(x_shape, generator=g), torch.randn(w_shape, generator=g)
    b = torch.randn(w_shape[0], generator=g)
    y = myconv.conv2d(x, w, b, **args)
    gy = torch.randn(y.shape, generator=g)
    stride, padding = list(torch.nn.modules.utils._pair(args.get("stride", 1))), \
        list(torch.nn.modules.utils._pair(args.get("padding", 0)))
    groups = args.get("groups", 1)
    fwd = lambda: torch.ops.myconv.conv2d(x, w, b, stride, padding, [1, 1], groups)  # noqa: E731
    bwd = lambda: torch.ops.myconv.conv2d_backward(gy, x, w, stride, padding, [1, 1], groups,  # noqa: E731
                                                   [True, True, True])
    return fwd, bwd


@pytest.mark.parametrize("case", list(CASES))
def test_a_cuda_call_dispatches_a_fixed_small_set_of_aten_ops(case, cuda_plan_on_the_cpu):
    *_, total_fwd, total_bwd, (budget_fwd, budget_bwd) = CASES[case]
    fwd, bwd = calls(case)
    for name, fn, total, budget in (("forward", fwd, total_fwd, budget_fwd), ("backward", bwd, total_bwd, budget_bwd)):
        ops = aten_ops(fn)
        launching = {op: n for op, n in ops.items() if op in LAUNCHING}
        assert sum(ops.values()) <= total, f"{name}: {sum(ops.values())} ATen ops > {total}: {dict(ops)}"
        for op, n in launching.items():
            assert n <= budget.get(op, 0), f"{name}: {op} x{n} > {budget.get(op, 0)}: {dict(ops)}"
        # never a host sync or a CPU-side reduction of device data
        assert not {"aten::item", "aten::_local_scalar_dense"} & set(ops)


def test_the_ops_a_cuda_call_dispatches_do_not_depend_on_the_thread_count(cuda_plan_on_the_cpu):
    fwd, bwd = calls("seed 3x3 8->16 32x32, batch 32")
    saved = torch.get_num_threads()
    try:
        counts = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            counts.append((aten_ops(fwd), aten_ops(bwd)))
    finally:
        torch.set_num_threads(saved)
    assert counts[0] == counts[1]


# Calls that touch CPU threads or their settings.
THREAD_APIS = re.compile(r"\b(parallel_for|parallel_reduce|get_num_threads|set_num_threads|init_num_threads|"
                         r"lazy_init_num_threads|in_parallel_region|omp_\w+|MKL_\w+|mkl_\w+)\s*\(")


def test_the_composition_and_the_cuda_backend_use_no_cpu_thread_api():
    # What a CUDA call runs: the composition (csrc/*.cpp, csrc/autograd) and
    # the CUDA backend (cuda/). The CPU backend (csrc/cpu/) and the CPU
    # autotuner's key (the thread count is part of what a CPU timing depends
    # on; the CUDA backend never autotunes: its Tuning has no tile size) may.
    allowed = {ROOT / "csrc" / "autotune.cpp": {"get_num_threads"}}
    files = sorted((ROOT / "csrc").glob("*.cpp")) + sorted((ROOT / "csrc" / "autograd").glob("*.cpp")) + \
        sorted((ROOT / "cuda").glob("*")) + sorted((ROOT / "csrc").glob("*.h"))
    assert len(files) > 20
    found = {}
    for path in files:
        code = re.sub(r"//[^\n]*", "", path.read_text())  # comments may name them
        names = {m.group(1) for m in THREAD_APIS.finditer(code)} - allowed.get(path, set())
        if names:
            found[str(path.relative_to(ROOT))] = sorted(names)
    assert not found, found
