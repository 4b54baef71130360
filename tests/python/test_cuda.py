"""The CUDA backend: the same ops on CUDA tensors (skipped without a device;
with MYCONV_TEST_CUDA_ON_CPU=1 on the CPU, the CUDA backend's plan replayed
there: conftest.py), and, everywhere, that a CUDA build registered every CUDA
kernel."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import (BACKWARD_GRID, FORWARD_GRID, REL_TOL, assert_rel_close, cuda_only, cuda_plan_on_cpu,
                      requires_cuda)

OPS = ["conv2d", "conv2d_backward", "conv_transpose2d", "im2col", "col2im"]


def cuda_build_expected() -> bool:
    """setup.py's rule: CUDA torch + nvcc, unless MYCONV_CPU_ONLY is set."""
    nvcc = shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc")
    return (torch.version.cuda is not None and bool(nvcc)
            and os.environ.get("MYCONV_CPU_ONLY", "0") in ("", "0"))


@pytest.mark.skipif(not cuda_build_expected(), reason="CPU-only build (no CUDA torch or no nvcc)")
@pytest.mark.parametrize("op", OPS)
def test_every_op_has_a_cuda_kernel(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"myconv::{op}", "CUDA")
    assert myconv.cuda_built()


@requires_cuda
@pytest.mark.parametrize("cfg", FORWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_forward_matches_f_conv2d(cfg, dtype, cuda_device, no_tf32):
    x, w, b = cfg.tensors(dtype, device=cuda_device)
    out = myconv.conv2d(x, w, b, **cfg.args())
    assert out.device == x.device and out.dtype == dtype
    to64 = lambda t: None if t is None else t.double()
    ref = F.conv2d(to64(x), to64(w), to64(b), **cfg.args())
    assert_rel_close(out, ref, REL_TOL[dtype], str(cfg))


@requires_cuda
@pytest.mark.parametrize("cfg", BACKWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_gradients_match_f_conv2d(cfg, dtype, cuda_device, no_tf32):
    ours = cfg.tensors(dtype, device=cuda_device, requires_grad=True)
    ref = [None if t is None else t.detach().double().requires_grad_() for t in ours]
    y = myconv.conv2d(*ours, **cfg.args())
    y_ref = F.conv2d(*ref, **cfg.args())
    gy = torch.randn(y_ref.shape, dtype=torch.float64, device=cuda_device)
    y.backward(gy.to(dtype))
    y_ref.backward(gy)
    for a, e in zip(ours, ref):
        if a is not None:
            assert_rel_close(a.grad, e.grad, REL_TOL[dtype], str(cfg))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_gradients(dtype, cuda_device):
    x = torch.randn(4, 6, 12, 12, device=cuda_device).to(dtype).requires_grad_()
    w = torch.randn(8, 3, 3, 3, device=cuda_device).to(dtype).requires_grad_()
    xr, wr = (t.detach().double().requires_grad_() for t in (x, w))
    myconv.conv2d(x, w, None, 1, 1, 1, 2).sum().backward()
    F.conv2d(xr, wr, None, 1, 1, 1, 2).sum().backward()
    assert_rel_close(x.grad, xr.grad, 3e-2)
    assert_rel_close(w.grad, wr.grad, 3e-2)


@requires_cuda
def test_gradcheck_float64(cuda_device):
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=cuda_device, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, device=cuda_device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=cuda_device, requires_grad=True)
    fn = lambda x, w, b: myconv.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@requires_cuda
@pytest.mark.parametrize("groups, channels_last", [(1, False), (16, True)], ids=["3x3", "depthwise-channels-last"])
def test_bitwise_deterministic(cuda_device, groups, channels_last):
    # (depthwise channels-last: the direct kernels, grad_weight's lanes in runs of channels)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(8, 16, 24, 24, device=cuda_device).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(32, 16 // groups, 3, 3, device=cuda_device, requires_grad=True)
    runs = []
    for _ in range(2):
        x.grad = w.grad = None
        y = myconv.conv2d(x, w, None, 1, 1, 1, groups)
        y.backward(torch.ones_like(y))
        runs.append((y.detach().clone(), x.grad.clone(), w.grad.clone()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@requires_cuda
def test_the_mapping_to_the_cpu_runs_the_cuda_backends_plan(cuda_device):
    # Under MYCONV_TEST_CUDA_ON_CPU=1 the device under test is the CPU with the
    # CUDA backend's plan: whole images' columns (64 * 3 * 3 rows, 64 * 64
    # positions, float32) where the CPU's own plan cuts them into tiles.
    if cuda_device != "cpu":
        pytest.skip("checks the mapping of the CUDA tests to the CPU")
    x, w = torch.randn(1, 64, 64, 64), torch.randn(64, 64, 3, 3)
    myconv.conv2d(x, w, padding=1)
    assert torch.ops.myconv._last_workspace_peak() == 64 * 9 * 64 * 64 * 4


# col2im to a 9x7 image with kernel 3x2, dilation (1, 2), padding 1, stride 1:
# 3 channels * 6 taps rows, and 9 * 7 = 63 blocks (columns).
COL2IM_ARGS = ((9, 7), (3, 2), (1, 2), (1, 1), (1, 1))
COL2IM_COLUMNS = (2, 3 * 6, 9 * 7)


def test_col2im_geometry_of_the_bitwise_test_is_valid():
    # Runs everywhere, so that the CUDA test below cannot hold an input that
    # both devices reject (it once passed 35 columns for 63 blocks).
    cols = torch.randn(COL2IM_COLUMNS, dtype=torch.float64)
    out = myconv.col2im(cols, *COL2IM_ARGS)
    assert out.shape == (2, 3, 9, 7)
    assert_rel_close(out, F.fold(cols, *COL2IM_ARGS), 1e-12)


@requires_cuda
def test_col2im_matches_cpu_bitwise_in_float64(cuda_device):
    cols = torch.randn(COL2IM_COLUMNS, dtype=torch.float64)
    assert torch.equal(myconv.col2im(cols.to(cuda_device), *COL2IM_ARGS).cpu(), myconv.col2im(cols, *COL2IM_ARGS))
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    assert torch.equal(myconv.im2col(x.to(cuda_device), (3, 2), (1, 2), (1, 1), (1, 1)).cpu(),
                       F.unfold(x, (3, 2), (1, 2), (1, 1), (1, 1)))


@cuda_only("streams")
def test_runs_on_the_current_stream():
    x = torch.randn(4, 8, 32, 32, device="cuda")
    w = torch.randn(16, 8, 3, 3, device="cuda")
    expected = myconv.conv2d(x, w, None, 1, 1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = myconv.conv2d(x, w, None, 1, 1)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(out, expected)


@requires_cuda
def test_small_workspace_chunks_on_cuda(cuda_device):
    saved = myconv.get_workspace_limit()
    try:
        x = torch.randn(7, 4, 9, 8, dtype=torch.float64, device=cuda_device)
        w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=cuda_device)
        myconv.set_workspace_limit(1)
        out = myconv.conv2d(x, w, None, 1, 1, 1, 2)
    finally:
        myconv.set_workspace_limit(saved)
    assert_rel_close(out, F.conv2d(x, w, None, 1, 1, 1, 2), 1e-12)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("workspace", [None, 1], ids=["chunk-of-6", "chunk-per-image"])
def test_1x1_layers_run_every_pass_on_the_tensors(dtype, workspace, cuda_device, no_tf32):
    # 1x1 / stride 1 / unpadded, 6 images of 12x12 (144 positions, planes on 16 bytes in every dtype),
    # groups 2 of 48 channels (K above the direct kernels' 32): the forward and grad_input as GEMMs
    # batched over the images (they hold no buffers: the whole batch, whatever the workspace limit),
    # grad_weight as each image's product summed (or, with no room for one image's product, a chunk per
    # image, GEMMs on the tensors alone); no columns
    g = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((6, 96, 12, 12), (40, 48, 1, 1), (40,)))
    gy = torch.randn(6, 40, 12, 12, generator=g, dtype=torch.float64)
    ours = [t.to(cuda_device, dtype).requires_grad_() for t in (x, w, b)]
    saved = myconv.get_workspace_limit()
    try:
        if workspace:
            myconv.set_workspace_limit(workspace)
        plans = myconv.explain(*ours, groups=2)
        plans = plans["forward"] + plans["backward"]
        assert [p["path"] for p in plans] == ["gemm_on_views"] * 3
        assert [p["tiles"]["images_per_tile"] for p in plans] == [6, 6, workspace or 6]
        y = myconv.conv2d(*ours, groups=2)
        grads = torch.autograd.grad(y, ours, gy.to(cuda_device, dtype))
    finally:
        myconv.set_workspace_limit(saved)
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    y_ref = F.conv2d(*(t.to(dtype).double() for t in ref), groups=2)
    ref_grads = torch.autograd.grad(y_ref, ref, gy.to(dtype).double())
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, *grads), (y_ref, *ref_grads)):
        assert_rel_close(a.double().cpu(), e, REL_TOL[dtype], name)


@cuda_only("mixing devices needs a second device type")
def test_mixed_devices_raise():
    with pytest.raises(RuntimeError, match="to be on the same device"):
        myconv.conv2d(torch.randn(1, 2, 5, 5, device="cuda"), torch.randn(3, 2, 3, 3))


@cuda_only("a second device")
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="CUDA-only: a second device (needs two CUDA devices)")
def test_second_device():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device="cuda:1", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device="cuda:1", requires_grad=True)
    out = myconv.conv2d(x, w, None, 1, 1)
    assert out.device == torch.device("cuda:1")
    out.sum().backward()
    assert x.grad.device == torch.device("cuda:1")
    assert_rel_close(out, F.conv2d(x, w, None, 1, 1), 1e-12)
    with pytest.raises(RuntimeError, match="to be on the same device"):
        myconv.conv2d(x.detach(), w.detach().to("cuda:0"))


# ---- the CUDA backend's GEMM decisions (csrc/blas_plan.h), tested without a GPU ----

# How a user sets TF32 for float32 matmuls -> the compute type our CUDA GEMMs
# must take (as torch.matmul does). Each in a fresh process: PyTorch's
# precision settings are process-wide and the legacy getter raises once the
# current API was used.
TF32_SETTINGS = {
    "default": ("", "32F"),
    "legacy-allow_tf32": ("torch.backends.cuda.matmul.allow_tf32 = True", "32F_FAST_TF32"),
    "legacy-allow_tf32-off": ("torch.backends.cuda.matmul.allow_tf32 = False", "32F"),
    "matmul.fp32_precision": ("torch.backends.cuda.matmul.fp32_precision = 'tf32'", "32F_FAST_TF32"),
    "matmul.fp32_precision-ieee": ("torch.backends.cuda.matmul.fp32_precision = 'ieee'", "32F"),
    "backends.fp32_precision": ("torch.backends.fp32_precision = 'tf32'", "32F_FAST_TF32"),
    "backends-tf32-but-matmul-ieee": (
        "torch.backends.fp32_precision = 'tf32'; torch.backends.cuda.matmul.fp32_precision = 'ieee'", "32F"),
    "set_float32_matmul_precision-high": ("torch.set_float32_matmul_precision('high')", "32F_FAST_TF32"),
    "set_float32_matmul_precision-medium": ("torch.set_float32_matmul_precision('medium')", "32F_FAST_TF32"),
    "set_float32_matmul_precision-highest": ("torch.set_float32_matmul_precision('highest')", "32F"),
}


@pytest.mark.parametrize("setting", list(TF32_SETTINGS), ids=str)
def test_gemm_compute_type_follows_every_tf32_api(setting):
    statement, expected = TF32_SETTINGS[setting]
    code = (f"import torch, myconv; {statement}\n"
            "print(*(torch.ops.myconv._gemm_compute_type(t) for t in "
            "(torch.float32, torch.float64, torch.float16, torch.bfloat16)))")
    # the myconv this process imported, whatever a fresh interpreter would find first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected, "64F", "32F", "32F"]


def forward_backward_double(fn, ref_fn, tensors, make_grad):
    """Forward, y.sum()-style backward with the given grad_output, and double
    backward, for fn and (in float64) ref_fn; returns both lists of results."""
    results = []
    for f, ts in ((fn, tensors), (ref_fn, [t.detach().double().cpu().requires_grad_() for t in tensors])):
        y = f(*ts)
        gy = make_grad(y)
        grads = torch.autograd.grad(y, ts, gy, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in grads), ts)
        results.append([y, *grads, *second])
    return results


# The three operands review found cuBLAS could not read as planned (each GEMM
# tile holds one image): name -> (fn, reference, input/weight shapes, layout, grad_output)
def _expanded_sum_grad(y):  # what autograd passes for y.sum(): an expanded scalar
    return torch.ones((), dtype=y.dtype, device=y.device).expand(y.shape)


def _channels_last_grad(y):
    g = torch.Generator().manual_seed(2)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)
    return gy.contiguous(memory_format=torch.channels_last)


OPERAND_SCENARIOS = {
    # a GAN discriminator's last layer: C_out = 1, a 1x1 output, y.sum().backward()
    "cout1-1x1-output-sum": (lambda x, w: myconv.conv2d(x, w), lambda x, w: F.conv2d(x, w),
                             (1, 3, 4, 4), (1, 3, 4, 4), False, _expanded_sum_grad),
    "cout1-unbatched": (lambda x, w: myconv.conv2d(x, w), lambda x, w: F.conv2d(x, w),
                        (3, 5, 5), (1, 3, 5, 5), False, _expanded_sum_grad),
    # groups == C_out, a 1x1 output, channels_last grad_output
    "depthwise-1x1-output-channels-last": (lambda x, w: myconv.conv2d(x, w, groups=6),
                                           lambda x, w: F.conv2d(x, w, groups=6),
                                           (1, 6, 3, 3), (6, 1, 3, 3), True, _channels_last_grad),
    # conv_transpose2d, channels_last (N, C, 1, 1) input, C_in / groups = 1
    "transpose-channels-last-1x1-input": (lambda x, w: myconv.conv_transpose2d(x, w, groups=4),
                                          lambda x, w: F.conv_transpose2d(x, w, groups=4),
                                          (1, 4, 1, 1), (4, 3, 3, 3), True, _channels_last_grad),
}


def _run_operand_scenario(name, device):
    fn, ref, xs, ws, channels_last, make_grad = OPERAND_SCENARIOS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=g, dtype=torch.float64)
    w = torch.randn(ws, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x, w = x.to(device).requires_grad_(), w.to(device).requires_grad_()
    ours, expected = forward_backward_double(fn, ref, [x, w], make_grad)
    for i, (a, e) in enumerate(zip(ours, expected)):
        assert_rel_close(a, e, 1e-10, f"{name}: result {i}")


@pytest.mark.parametrize("workspace", [None, 1], ids=["one-chunk", "image-chunks"])
@pytest.mark.parametrize("name", list(OPERAND_SCENARIOS), ids=str)
def test_operands_cublas_reads_on_the_cpu(name, workspace):
    with cuda_plan_on_cpu(workspace):
        _run_operand_scenario(name, "cpu")


@requires_cuda
@pytest.mark.parametrize("name", list(OPERAND_SCENARIOS), ids=str)
def test_operands_cublas_reads_on_cuda(name, cuda_device, no_tf32):
    _run_operand_scenario(name, cuda_device)


@pytest.mark.parametrize("kernel", [3, 1], ids=["3x3-chunk-per-image", "1x1-image-products"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision_grad_weight_is_rounded_once_over_many_chunks_on_the_cuda_plan(dtype, kernel):
    # The CUDA plan's float16 / bfloat16 GEMMs write float32: grad_weight sums every chunk (here one
    # per image, 16) into its float32 result and rounds once at the end, so it is the exact weight
    # gradient rounded to the dtype but for the rare element a float32 sum puts across a rounding
    # boundary. (Products rounded to the dtype chunk by chunk missed on ~8 % of the elements.) A 1x1
    # layer over a chunk of the 16 images: each image's float32 product, summed in float32.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, 12, 12, generator=g).to(dtype)
    w = torch.randn(8, 6, kernel, kernel, generator=g).to(dtype)
    gy = torch.randn(16, 8, 12, 12, generator=g).to(dtype)
    pad = kernel // 2
    with cuda_plan_on_cpu(1 if kernel == 3 else None):  # 3x3: the smallest workspace, a chunk per image
        (plan,) = [p for p in myconv.explain(x, w, padding=pad)["backward"] if p["computes"] == "grad_weight"]
        if kernel == 3:
            assert plan["tiles"]["count"] == 16 and plan["into_result"]
        else:
            assert plan["path"] == "gemm_on_views" and plan["tiles"]["images_per_tile"] == 16
        gw = torch.ops.myconv.conv2d_backward(gy, x, w, [1, 1], [pad, pad], [1, 1], 1, [False, True, False])[1]
    exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, gy.double(), padding=pad)
    rounded = exact.to(dtype)
    missed = gw != rounded
    assert missed.float().mean().item() <= 0.01, f"{int(missed.sum())} of {gw.numel()} not rounded once"
    # and those by one step of the dtype at most
    step = (rounded.double().abs() * (2.0 ** -10 if dtype == torch.float16 else 2.0 ** -7)).clamp_min(1e-30)
    assert ((gw.double() - rounded.double()).abs() <= step * 1.01).all()
