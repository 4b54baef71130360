"""The CUDA backend: the same ops on CUDA tensors (skipped without a device),
and, everywhere, that a CUDA build registered every CUDA kernel."""
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import BACKWARD_GRID, FORWARD_GRID, REL_TOL, assert_rel_close, requires_cuda

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


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@requires_cuda
@pytest.mark.parametrize("cfg", FORWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_forward_matches_f_conv2d(cfg, dtype, no_tf32):
    x, w, b = cfg.tensors(dtype, device="cuda")
    out = myconv.conv2d(x, w, b, **cfg.args())
    assert out.device == x.device and out.dtype == dtype
    to64 = lambda t: None if t is None else t.double()
    ref = F.conv2d(to64(x), to64(w), to64(b), **cfg.args())
    assert_rel_close(out, ref, REL_TOL[dtype], str(cfg))


@requires_cuda
@pytest.mark.parametrize("cfg", BACKWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_gradients_match_f_conv2d(cfg, dtype, no_tf32):
    ours = cfg.tensors(dtype, device="cuda", requires_grad=True)
    ref = [None if t is None else t.detach().double().requires_grad_() for t in ours]
    y = myconv.conv2d(*ours, **cfg.args())
    y_ref = F.conv2d(*ref, **cfg.args())
    gy = torch.randn(y_ref.shape, dtype=torch.float64, device="cuda")
    y.backward(gy.to(dtype))
    y_ref.backward(gy)
    for a, e in zip(ours, ref):
        if a is not None:
            assert_rel_close(a.grad, e.grad, REL_TOL[dtype], str(cfg))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_gradients(dtype):
    x = torch.randn(4, 6, 12, 12, device="cuda").to(dtype).requires_grad_()
    w = torch.randn(8, 3, 3, 3, device="cuda").to(dtype).requires_grad_()
    xr, wr = (t.detach().double().requires_grad_() for t in (x, w))
    myconv.conv2d(x, w, None, 1, 1, 1, 2).sum().backward()
    F.conv2d(xr, wr, None, 1, 1, 1, 2).sum().backward()
    assert_rel_close(x.grad, xr.grad, 3e-2)
    assert_rel_close(w.grad, wr.grad, 3e-2)


@requires_cuda
def test_gradcheck_float64():
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device="cuda", requires_grad=True)
    fn = lambda x, w, b: myconv.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@requires_cuda
def test_bitwise_deterministic():
    x = torch.randn(8, 16, 24, 24, device="cuda", requires_grad=True)
    w = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
    runs = []
    for _ in range(2):
        x.grad = w.grad = None
        y = myconv.conv2d(x, w, None, 1, 1)
        y.backward(torch.ones_like(y))
        runs.append((y.detach().clone(), x.grad.clone(), w.grad.clone()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


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
def test_col2im_matches_cpu_bitwise_in_float64():
    cols = torch.randn(COL2IM_COLUMNS, dtype=torch.float64)
    assert torch.equal(myconv.col2im(cols.cuda(), *COL2IM_ARGS).cpu(), myconv.col2im(cols, *COL2IM_ARGS))
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    assert torch.equal(myconv.im2col(x.cuda(), (3, 2), (1, 2), (1, 1), (1, 1)).cpu(),
                       F.unfold(x, (3, 2), (1, 2), (1, 1), (1, 1)))


@requires_cuda
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
def test_small_workspace_chunks_on_cuda():
    saved = myconv.get_workspace_limit()
    try:
        x = torch.randn(7, 4, 9, 8, dtype=torch.float64, device="cuda")
        w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device="cuda")
        myconv.set_workspace_limit(1)
        out = myconv.conv2d(x, w, None, 1, 1, 1, 2)
    finally:
        myconv.set_workspace_limit(saved)
    assert_rel_close(out, F.conv2d(x, w, None, 1, 1, 1, 2), 1e-12)


@requires_cuda
def test_mixed_devices_raise():
    with pytest.raises(RuntimeError, match="to be on the same device"):
        myconv.conv2d(torch.randn(1, 2, 5, 5, device="cuda"), torch.randn(3, 2, 3, 3))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
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
