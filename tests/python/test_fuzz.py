"""Property-based tests (hypothesis): random valid configurations, forward and
all three gradients against F.conv2d (and, read as transposed convolutions,
against F.conv_transpose2d), against F.conv1d / F.conv3d and their
transposes; im2col / col2im against F.unfold / fold.

CI runs a bounded, derandomized set (MYCONV_FUZZ_EXAMPLES, default 500 per
test, half that for the transposed and the N-d ones). The long run (its last result is in
docs/reliability.md):

    MYCONV_FUZZ_EXAMPLES=12000 .venv/bin/python -m pytest tests/python/test_fuzz.py -q
"""
import os

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import myconv  # noqa: E402
from conftest import assert_rel_close, cuda_device_under_test, float32_ieee, requires_cuda  # noqa: E402

EXAMPLES = int(os.environ.get("MYCONV_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def fitting_size(draw, kernel, padding, dilation, slack):
    """An image size the dilated kernel fits once padded: from the smallest
    such size (the kernel then exactly as large as the padded input) up."""
    need = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    return draw(st.integers(need, need + slack))


@st.composite
def conv_configs(draw):
    groups_kind = draw(st.sampled_from(["one", "few", "depthwise"]))
    if groups_kind == "depthwise":
        groups = c_in = draw(st.integers(1, 64))
        c_out = c_in * draw(st.integers(1, 2))
    else:
        groups = 1 if groups_kind == "one" else draw(st.integers(2, 4))
        c_in = groups * draw(st.integers(1, max(1, 64 // groups // (4 if groups > 1 else 2))))
        c_out = groups * draw(st.integers(1, 4))
    kernel = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    # 1x1 images and kernels as large as the padded input included
    h, w = (fitting_size(draw, kernel[i], padding[i], dilation[i], draw(st.sampled_from([0, 2, 9])))
            for i in range(2))
    # keep the work per example small: shrink the batch for large images
    n = draw(st.integers(0, 3 if h * w * c_in <= 2000 else 1))
    return dict(n=n, c_in=c_in, c_out=c_out, h=h, w=w, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, groups=groups, bias=draw(st.booleans()),
                layout=draw(st.sampled_from(["contiguous", "channels_last", "strided"])),
                dtype=draw(st.sampled_from([torch.float64, torch.float32])))


def make_input(cfg, gen):
    n, c, h, w, dtype = cfg["n"], cfg["c_in"], cfg["h"], cfg["w"], cfg["dtype"]
    if cfg["layout"] == "strided":  # a non-contiguous view: every other column
        return torch.randn(n, c, h, 2 * w, generator=gen, dtype=torch.float64)[..., ::2].to(dtype)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    return x.to(memory_format=torch.channels_last) if cfg["layout"] == "channels_last" else x


def compare(ours, ref, x, w, b, args, gen, what):
    """Forward and the three gradients of ours(x, w, b, **args) against ref in float64."""
    dtype = x.dtype
    y = ours(x, w, b, **args)
    ref_in = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    y_ref = ref(*ref_in, **args)
    assert_rel_close(y, y_ref, TOL[dtype], f"forward {what}")
    gy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64).to(y.device)
    y.backward(gy.to(dtype))
    y_ref.backward(gy)
    for name, t, r in zip(("input", "weight", "bias"), (x, w, b), ref_in):
        if t is not None:
            assert_rel_close(t.grad, r.grad, TOL[dtype], f"grad_{name} {what}")


def make_tensors(cfg, weight_shape, gen, device):
    dtype = cfg["dtype"]
    x = make_input(cfg, gen).to(device).requires_grad_()
    w = torch.randn(weight_shape, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
    b = (torch.randn(cfg["c_out"], generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
         if cfg["bias"] else None)
    return x, w, b


def check_conv2d(cfg, seed, device):
    gen = torch.Generator().manual_seed(seed)
    x, w, b = make_tensors(cfg, (cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"]), gen, device)
    args = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    compare(myconv.conv2d, F.conv2d, x, w, b, args, gen, cfg)


@FUZZ
@given(cfg=conv_configs(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_forward_and_gradients(cfg, seed):
    check_conv2d(cfg, seed, "cpu")


# The same cases on CUDA (the reference F.conv2d runs in float64; our GEMMs
# without TF32), or with MYCONV_TEST_CUDA_ON_CPU=1 on the CPU with the CUDA
# backend's plan (conftest.py). Also the run compute-sanitizer watches
# (scripts/gpu_check.sh).
@requires_cuda
@settings(FUZZ, max_examples=int(os.environ.get("MYCONV_FUZZ_EXAMPLES_CUDA", "300")))
@given(cfg=conv_configs(), seed=st.integers(0, 2**31 - 1))
def test_conv2d_forward_and_gradients_cuda(cfg, seed):
    with cuda_device_under_test() as device, float32_ieee():
        check_conv2d(cfg, seed, device)


def check_conv_transpose2d(cfg, op_fraction, seed, device):
    """The configuration read as a transposed convolution: c_in input channels,
    weight (c_in, c_out/groups, kH, kW), and an output padding smaller than the
    stride or the dilation (op_fraction of the largest allowed)."""
    from hypothesis import assume

    output_padding = tuple(int(op_fraction * (max(s, d) - 1) + 0.5) for s, d in zip(cfg["stride"], cfg["dilation"]))
    sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
             zip((cfg["h"], cfg["w"]), cfg["stride"], cfg["padding"], cfg["dilation"], cfg["kernel"], output_padding)]
    assume(min(sizes) > 0)
    gen = torch.Generator().manual_seed(seed)
    x, w, b = make_tensors(cfg, (cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"]), gen, device)
    args = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=output_padding,
                groups=cfg["groups"], dilation=cfg["dilation"])
    compare(myconv.conv_transpose2d, F.conv_transpose2d, x, w, b, args, gen, (cfg, output_padding))


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(cfg=conv_configs(), op_fraction=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_conv_transpose2d_forward_and_gradients(cfg, op_fraction, seed):
    check_conv_transpose2d(cfg, op_fraction, seed, "cpu")


@st.composite
def window_configs(draw):
    kernel = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    h, w = (fitting_size(draw, kernel[i], padding[i], dilation[i], 10) for i in range(2))
    return dict(n=draw(st.integers(0, 3)), c=draw(st.integers(1, 8)), h=h, w=w, kernel=kernel,
                dilation=dilation, padding=padding, stride=stride, batched=draw(st.booleans()))


@FUZZ
@given(cfg=window_configs(), seed=st.integers(0, 2**31 - 1))
def test_im2col_col2im_match_unfold_fold(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    win = (cfg["kernel"], cfg["dilation"], cfg["padding"], cfg["stride"])
    shape = (cfg["n"], cfg["c"], cfg["h"], cfg["w"]) if cfg["batched"] else (cfg["c"], cfg["h"], cfg["w"])
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    cols = myconv.im2col(x, *win)
    assert torch.equal(cols, F.unfold(x, *win))
    y = torch.randn(cols.shape, generator=gen, dtype=torch.float64)
    assert_rel_close(myconv.col2im(y, (cfg["h"], cfg["w"]), *win), F.fold(y, (cfg["h"], cfg["w"]), *win), 1e-12)


# ---- conv1d / conv3d and their transposes --------------------------------------------

@st.composite
def conv_nd_configs(draw):
    dims = draw(st.sampled_from([1, 3]))
    groups_kind = draw(st.sampled_from(["one", "few", "depthwise"]))
    if groups_kind == "depthwise":
        groups = c_in = draw(st.integers(1, 16))
        c_out = c_in * draw(st.integers(1, 2))
    else:
        groups = 1 if groups_kind == "one" else draw(st.integers(2, 4))
        c_in, c_out = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 4))
    top_kernel, slack = (3, 4) if dims == 3 else (7, 12)
    kernel = tuple(draw(st.integers(1, top_kernel)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    size = tuple(fitting_size(draw, kernel[i], padding[i], dilation[i], draw(st.sampled_from([0, 2, slack])))
                 for i in range(dims))
    layouts = ["contiguous", "strided"] + (["channels_last"] if dims == 3 else [])
    return dict(dims=dims, n=draw(st.integers(0, 3)), c_in=c_in, c_out=c_out, size=size, kernel=kernel,
                stride=stride, padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                layout=draw(st.sampled_from(layouts)), dtype=draw(st.sampled_from([torch.float64, torch.float32])))


def make_nd_tensors(cfg, weight_shape, gen, device):
    n, c, size, dtype = cfg["n"], cfg["c_in"], cfg["size"], cfg["dtype"]
    if cfg["layout"] == "strided":  # a non-contiguous view: every other element of the last axis
        x = torch.randn(n, c, *size[:-1], 2 * size[-1], generator=gen, dtype=torch.float64)[..., ::2]
    else:
        x = torch.randn(n, c, *size, generator=gen, dtype=torch.float64)
        if cfg["layout"] == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last_3d)
    x = x.to(device, dtype).requires_grad_()
    w = torch.randn(weight_shape, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
    b = (torch.randn(cfg["c_out"], generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_()
         if cfg["bias"] else None)
    return x, w, b


def check_conv_nd(cfg, seed, device):
    gen = torch.Generator().manual_seed(seed)
    d = cfg["dims"]
    x, w, b = make_nd_tensors(cfg, (cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"]), gen, device)
    args = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    compare(getattr(myconv, f"conv{d}d"), getattr(F, f"conv{d}d"), x, w, b, args, gen, cfg)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(cfg=conv_nd_configs(), seed=st.integers(0, 2**31 - 1))
def test_conv1d_conv3d_forward_and_gradients(cfg, seed):
    check_conv_nd(cfg, seed, "cpu")


@requires_cuda
@settings(FUZZ, max_examples=int(os.environ.get("MYCONV_FUZZ_EXAMPLES_CUDA", "300")) // 2)
@given(cfg=conv_nd_configs(), seed=st.integers(0, 2**31 - 1))
def test_conv1d_conv3d_forward_and_gradients_cuda(cfg, seed):
    with cuda_device_under_test() as device, float32_ieee():
        check_conv_nd(cfg, seed, device)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(cfg=conv_nd_configs(), op_fraction=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_conv_transpose1d_3d_forward_and_gradients(cfg, op_fraction, seed):
    from hypothesis import assume

    d = cfg["dims"]
    output_padding = tuple(int(op_fraction * (max(s, dl) - 1) + 0.5) for s, dl in zip(cfg["stride"], cfg["dilation"]))
    sizes = [(n - 1) * s - 2 * p + dl * (k - 1) + op + 1 for n, s, p, dl, k, op in
             zip(cfg["size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["kernel"], output_padding)]
    assume(min(sizes) > 0)
    gen = torch.Generator().manual_seed(seed)
    x, w, b = make_nd_tensors(cfg, (cfg["c_in"], cfg["c_out"] // cfg["groups"], *cfg["kernel"]), gen, "cpu")
    args = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=output_padding,
                groups=cfg["groups"], dilation=cfg["dilation"])
    compare(getattr(myconv, f"conv_transpose{d}d"), getattr(F, f"conv_transpose{d}d"), x, w, b, args, gen,
            (cfg, output_padding))
