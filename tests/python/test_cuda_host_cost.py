"""The host cost of a CUDA convolution, checked without a GPU.

A CUDA call's CPU time is the ATen ops it dispatches (each a kernel launch or
a view), its own kernel launches and cuBLAS calls, and nothing else: no CPU
thread pool, no thread settings, no CPU-side copies or reductions. On an
H200 the seed layer's forward+backward took 1.17 ms of wall time with 16
CPU threads and 0.43 ms with one (docs/gpu.md), so these tests pin down
what a call does on the host:

* the ATen ops other than views that one forward and one backward dispatch
  under the CUDA backend's plan, replayed on the CPU (the replay runs the
  very composition the CUDA backend runs; only the column kernels and the
  GEMM are the CPU's), counted by the profiler, op by op, for the paths the
  CUDA plan takes (bias or not, channels-last input, bfloat16, transposed,
  3-D, chunks of a small workspace, depthwise through the direct kernels):
  no count may grow and no new op appear (docs/gpu.md, "Host cost of a
  call", lists them);
* the composition and the CUDA backend name no CPU thread API (only the CPU
  backend and the autotuner's CPU timing key may);
* the device memory a call asks for: the workspace a chunk at a time, and one
  forward+backward of the profile's three layers within 1.3x cuDNN's peak.
"""
import collections
import pathlib
import re

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import myconv

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Ops that only make views (no launch, no copy): not counted.
VIEWS = {"aten::as_strided", "aten::narrow", "aten::slice", "aten::view", "aten::permute", "aten::transpose",
         "aten::reshape", "aten::_reshape_alias", "aten::unsqueeze", "aten::squeeze", "aten::expand",
         "aten::expand_as", "aten::select", "aten::alias", "aten::t", "aten::detach", "aten::unflatten",
         "aten::flatten", "aten::view_as"}

# Every other ATen op one call dispatches, at most, measured 2026-12-04. Lower
# a budget when a change removes an op; never raise one without a reason in
# docs/gpu.md. (The profiler counts nested ops too: contiguous -> clone ->
# empty_like -> empty, copy_; to -> _to_copy -> empty_strided, copy_.)
FORWARD_BIAS = {"aten::empty": 2, "aten::copy_": 2}  # output + columns; bias into the result, result into NCHW
BACKWARD = {"aten::empty": 4, "aten::copy_": 2, "aten::sum": 1, "aten::fill_": 1, "aten::to": 1}
BUDGETS = {
    "seed": (FORWARD_BIAS, BACKWARD),
    # 1x1: every pass as GEMMs on the tensors (the output / grad_input alone); grad_weight writes each
    # image's product and sums them (a sum, which fills its result on the CPU replay: the fill_), where it
    # built the chunk's columns and gathered its grad_output (a copy_) before 2026-12-05
    "1x1, no bias": ({"aten::empty": 1}, {"aten::empty": 3, "aten::sum": 1, "aten::fill_": 1, "aten::to": 1}),
    # channels-last columns: no copy of the input, grad_output or results (there were 4 forward, 5 backward
    # before the GPU had channels-last columns); the weight's rows in (kd, kh, kw, c) order (a permuted copy
    # of the weight, forward and grad_input) and grad_weight back in the weight's order, weight-sized each
    "channels_last": ({"aten::contiguous": 1, "aten::clone": 1, "aten::empty_like": 1, "aten::empty": 3,
                       "aten::copy_": 2},
                      {"aten::sum": 1, "aten::fill_": 1, "aten::empty": 6, "aten::contiguous": 2, "aten::clone": 2,
                       "aten::empty_like": 2, "aten::copy_": 2, "aten::to": 1}),
    # ... and with the weight channels-last too (what Module.to(memory_format=torch.channels_last) makes):
    # its rows are already in (kh, kw, c) order, so no weight-sized copy either; the bias into the result
    "channels_last weight": ({"aten::empty": 2, "aten::copy_": 1},
                             {"aten::sum": 1, "aten::fill_": 1, "aten::empty": 4, "aten::to": 1}),
    # grad_weight's GEMMs write float32 straight into its float32 result, rounded once at the end
    "bfloat16": (FORWARD_BIAS, {"aten::sum": 2, "aten::empty": 5, "aten::to": 2, "aten::_to_copy": 2,
                                "aten::empty_strided": 2, "aten::copy_": 5, "aten::fill_": 1}),
    "transposed": ({"aten::empty": 2, "aten::copy_": 1, "aten::add_": 1}, None),
    "3-D": (FORWARD_BIAS, BACKWARD),
    # a 300 kB workspace: 16 chunks of 2 images, two copies each
    "chunked": ({"aten::empty": 2, "aten::copy_": 32}, {"aten::sum": 1, "aten::fill_": 1, "aten::empty": 4,
                                                        "aten::to": 1}),
    # images of 2048 positions or more (48x48): the forward's GEMMs write each image's output in place
    # (the bias copied into the output, no result to copy out of a scratch); grad_input's read grad_output
    # in place, grad_weight sums the images' products (a sum, and its fill_ on the replay): no gathered
    # grad_output (two copy_ for the seed layer)
    "large images": ({"aten::empty": 2, "aten::copy_": 1},
                     {"aten::sum": 2, "aten::fill_": 2, "aten::empty": 5, "aten::to": 1}),
    # depthwise: the direct grouped kernels, no columns, no GEMM, no copies (the output; the two gradients
    # and the bias sum)
    "depthwise": ({"aten::empty": 1}, {"aten::empty": 2, "aten::sum": 1, "aten::fill_": 1}),
}


def case_calls(name):
    """(forward, backward or None) of a case, as calls of the ops."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g)

    ops = torch.ops.myconv
    one, pad, groups = [1, 1], [1, 1], 1
    x, w, b, gy = t(32, 8, 32, 32), t(16, 8, 3, 3), t(16), t(32, 16, 32, 32)
    if name in ("seed", "chunked"):
        pass
    elif name == "large images":
        x, gy = t(8, 8, 48, 48), t(8, 16, 48, 48)
    elif name == "depthwise":
        x, w, b, gy, groups = t(32, 32, 32, 32), t(32, 1, 3, 3), t(32), t(32, 32, 32, 32), 32
    elif name == "1x1, no bias":
        x, w, b, gy, pad = t(8, 64, 14, 14), t(32, 64, 1, 1), None, t(8, 32, 14, 14), [0, 0]
    elif name in ("channels_last", "channels_last weight"):
        x, gy = (v.contiguous(memory_format=torch.channels_last) for v in (x, gy))
        if name == "channels_last weight":
            w = w.contiguous(memory_format=torch.channels_last)
    elif name == "bfloat16":
        x, w, b, gy = (v.bfloat16() for v in (x, w, b, gy))
    elif name == "transposed":
        xt, wt, bt = t(4, 16, 9, 9), t(16, 8, 4, 4), t(8)
        return (lambda: ops.conv_transpose2d(xt, wt, bt, [2, 2], [1, 1], [0, 0], 1, [1, 1])), None
    elif name == "3-D":
        x3, w3, b3, gy3 = t(2, 4, 6, 7, 8), t(8, 4, 3, 3, 3), t(8), t(2, 8, 6, 7, 8)
        three = [1, 1, 1]
        return (lambda: ops.conv3d(x3, w3, b3, three, three, three, 1),
                lambda: ops.conv3d_backward(gy3, x3, w3, three, three, three, 1, [True, True, True]))
    mask = [True, True, b is not None]
    return (lambda: ops.conv2d(x, w, b, one, pad, one, groups),
            lambda: ops.conv2d_backward(gy, x, w, one, pad, one, groups, mask))


def counted_ops(fn):
    """{op: calls} of the non-view ATen ops one call of fn dispatches (after a warm-up call)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::") and e.name not in VIEWS)


@pytest.fixture
def cuda_plan_on_the_cpu():
    saved = myconv.get_workspace_limit()
    torch.ops.myconv._set_cpu_whole_image_plan(True)
    yield
    torch.ops.myconv._set_cpu_whole_image_plan(False)
    myconv.set_workspace_limit(saved)


@pytest.mark.parametrize("name", list(BUDGETS))
def test_a_cuda_call_dispatches_no_more_ops_than_measured(name, cuda_plan_on_the_cpu):
    if name == "chunked":
        myconv.set_workspace_limit(300_000)
    for pass_name, fn, budget in zip(("forward", "backward"), case_calls(name), BUDGETS[name]):
        if fn is None:
            continue
        ops = counted_ops(fn)
        over = {op: n for op, n in ops.items() if n > budget.get(op, 0)}
        assert not over, f"{name}, {pass_name}: {over} over the budget {budget}"
        # never a host sync (a read of a device value)
        assert not {"aten::item", "aten::_local_scalar_dense"} & set(ops)


# Calls and constructs that touch CPU threads or their settings.
THREAD_APIS = re.compile(r"\b(parallel_for|parallel_reduce|get_num_threads|set_num_threads|init_num_threads|"
                         r"lazy_init_num_threads|in_parallel_region|get_thread_num|intraop_launch|launch|"
                         r"omp_\w+|MKL_\w+|mkl_\w+)\s*\(|#\s*pragma\s+omp|std::thread\b|std::async\b")


def test_the_composition_and_the_cuda_backend_use_no_cpu_thread_api():
    # What a CUDA call runs: the composition (csrc/*.cpp / *.h, csrc/autograd,
    # csrc/include) and the CUDA backend (cuda/). The CPU backend (csrc/cpu/)
    # and the CPU autotuner's key may (the thread count is part of what a CPU
    # timing depends on; the CUDA backend never autotunes: its Tuning has no
    # tile size).
    allowed = {ROOT / "csrc" / "autotune.cpp": {"get_num_threads"}}
    files = [p for pattern in ("csrc/*.cpp", "csrc/*.h", "csrc/autograd/*", "csrc/include/myconv/*", "cuda/*")
             for p in sorted(ROOT.glob(pattern))]
    assert len(files) > 20
    found = {}
    for path in files:
        code = re.sub(r"/\*.*?\*/", "", re.sub(r"//[^\n]*", "", path.read_text()), flags=re.S)  # not comments
        names = {m.group(0).split("(")[0].strip() for m in THREAD_APIS.finditer(code)} - allowed.get(path, set())
        if names:
            found[str(path.relative_to(ROOT))] = sorted(names)
    assert not found, found


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_cuda_call_takes_its_workspace_a_chunk_at_a_time(cuda_plan_on_the_cpu, dtype):
    # 1-D, 16 -> 16 channels, k3, 16,384 positions an image: 4 MiB of columns and output an image in
    # float32, so the CUDA plan's 32 MiB chunks hold 8 of the 16 images (the whole batch would take
    # 64 MiB, within the default 256 MiB workspace limit that sized chunks before). bfloat16 too: its
    # grad_weight GEMMs write float32, so it is chunked like float32: float32's images, 8 of 2 MiB, 16 MiB
    # (it used to take the whole batch, 32 MiB, whatever its size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 16, 16384, generator=g).to(dtype)
    w = torch.randn(16, 16, 3, generator=g).to(dtype)
    chunk = (32 << 20) // 4 * x.element_size()
    for name, call in (("forward", lambda: torch.ops.myconv.conv1d(x, w, None, [1], [1], [1], 1)),
                       ("backward", lambda: torch.ops.myconv.conv1d_backward(x, x, w, [1], [1], [1], 1,
                                                                             [True, True, False]))):
        call()
        peak = torch.ops.myconv._last_workspace_peak()
        assert chunk // 2 < peak <= chunk + (64 << 10), f"{name}: {peak} bytes of workspace"


# The profile's three layers (batch 32, float32; ../shared/gpu-profile-2026-12-04.md): cuDNN's peak CUDA
# memory above the inputs of one forward+backward on the H200, in MiB, as the benchmark measures it
# (`peak_cuda_bytes`: x, w, b and grad_output made beforehand). myconv then took 320, 82 and 270 MiB.
CUDNN_PEAK_MIB = {"64 56^2 k3": ((32, 64, 56, 56), (64, 64, 3, 3), 1, 125),
                  "256 14^2 k3": ((32, 256, 14, 14), (256, 256, 3, 3), 1, 42),
                  "1x1 256->64 56^2": ((32, 256, 56, 56), (64, 256, 1, 1), 0, 149)}


@pytest.mark.parametrize("name", list(CUDNN_PEAK_MIB))
def test_the_cuda_plan_keeps_a_steps_memory_within_1_3x_cudnns(name, cuda_plan_on_the_cpu):
    # What one fwd+bwd holds at most on the GPU, from the plan (meta tensors: nothing runs): its results
    # (output, grad_input, grad_weight, grad_bias, all alive at the end of the step), the largest
    # workspace a pass takes (the passes run one after another, each freeing its own; explain's total is
    # what a call asks for, `_last_workspace_peak` on a run), and one more output-sized tensor: on the
    # plan the profile measured (whole-batch columns in every pass) this model without it gives 294,
    # 75.8 and 245 MiB where the GPU took 320, 82 and 270, about an output's size more each time (a
    # review's replay of that plan; the cause is not found without a GPU). Issue 25's target: at most
    # 1.3x cuDNN's. A model, not the measurement: scripts/gpu_memory.py measures both on a GPU.
    x_shape, w_shape, padding, cudnn_mib = CUDNN_PEAK_MIB[name]
    x, w, b = (torch.empty(s, device="meta") for s in (x_shape, w_shape, w_shape[:1]))
    e = myconv.explain(x, w, b, padding=padding)
    assert all(plan["engine"] == "cublas-replay" for plan in e["forward"] + e["backward"])
    y = torch.nn.functional.conv2d(x, w, b, padding=padding)
    # y, grad_input, grad_weight, grad_bias, and the output-sized allocation the measurement shows
    results = sum(t.numel() * t.element_size() for t in (y, x, w, b, y))
    workspace = max(plan["workspace"]["total"] for plan in e["forward"] + e["backward"])
    peak = (results + workspace) / 2**20
    assert peak <= 1.3 * cudnn_mib, f"{name}: {peak:.1f} MiB ({workspace / 2**20:.1f} of workspace) " \
                                    f"against cuDNN's {cudnn_mib}"
