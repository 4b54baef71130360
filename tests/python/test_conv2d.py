"""conv2d forward and backward against torch.nn.functional.conv2d."""
import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import BACKWARD_GRID, FORWARD_GRID, REL_TOL, assert_rel_close


def reference(x, w, b, cfg):
    """F.conv2d in float64 on the same (possibly rounded) values."""
    to64 = lambda t: None if t is None else t.detach().to(torch.float64)
    return F.conv2d(to64(x), to64(w), to64(b), **cfg.args())


@pytest.mark.parametrize("cfg", FORWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_forward_matches_f_conv2d(cfg, dtype):
    x, w, b = cfg.tensors(dtype)
    out = myconv.conv2d(x, w, b, **cfg.args())
    assert out.dtype == dtype
    assert_rel_close(out, reference(x, w, b, cfg), REL_TOL[dtype], str(cfg))


@pytest.mark.parametrize("cfg", FORWARD_GRID[:40], ids=str)
def test_forward_float16(cfg):
    x, w, b = cfg.tensors(torch.float16)
    out = myconv.conv2d(x, w, b, **cfg.args())
    assert out.dtype == torch.float16
    assert_rel_close(out, reference(x, w, b, cfg), REL_TOL[torch.float16], str(cfg))


def test_grid_covers_the_parameter_space():
    grid = FORWARD_GRID
    assert len(grid) >= 300
    assert {c.n for c in grid} == {0, 1, 2, 3, 4}
    assert {c.kernel[0] for c in grid} == {1, 2, 3, 4, 5}
    assert any(c.kernel[0] != c.kernel[1] for c in grid)
    assert {c.stride[0] for c in grid} == {1, 2, 3}
    assert {c.padding[1] for c in grid} == {0, 1, 2, 3}
    assert {c.dilation[0] for c in grid} == {1, 2, 3}
    assert {c.groups for c in grid if c.groups != c.c_in} >= {1, 2, 3}
    assert any(c.groups == c.c_in and c.c_in > 1 for c in grid)  # depthwise
    assert {c.bias for c in grid} == {True, False}
    assert max(c.c_in for c in grid) == 12 and min(c.c_in for c in grid) == 1


@pytest.mark.parametrize("cfg", BACKWARD_GRID, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_gradients_match_f_conv2d(cfg, dtype):
    ours = cfg.tensors(dtype, requires_grad=True)
    ref = [None if t is None else t.detach().to(torch.float64).requires_grad_() for t in ours]
    y = myconv.conv2d(*ours, **cfg.args())
    y_ref = F.conv2d(*ref, **cfg.args())
    gy = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y.backward(gy.to(dtype))
    y_ref.backward(gy)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), ours, ref):
        if a is not None:
            assert a.grad.dtype == dtype
            assert_rel_close(a.grad, e.grad, REL_TOL[dtype], f"{cfg} {name}")


@pytest.mark.parametrize("cfg", BACKWARD_GRID[:12], ids=str)
def test_gradients_bfloat16(cfg):
    ours = cfg.tensors(torch.bfloat16, requires_grad=True)
    ref = [None if t is None else t.detach().to(torch.float64).requires_grad_() for t in ours]
    y = myconv.conv2d(*ours, **cfg.args())
    y_ref = F.conv2d(*ref, **cfg.args())
    gy = torch.randn(y_ref.shape, dtype=torch.float64).to(torch.bfloat16).to(torch.float64)
    y.backward(gy.to(torch.bfloat16))
    y_ref.backward(gy)
    for a, e in zip(ours, ref):
        if a is not None:
            assert_rel_close(a.grad, e.grad, 5e-2, str(cfg))


GRADCHECK_CASES = [
    # (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, bias)
    (2, 2, 3, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    (1, 4, 4, 6, 5, (3, 2), (2, 1), (0, 1), (1, 2), 2, True),
    (2, 3, 6, 7, 7, (2, 3), (1, 2), (2, 0), (2, 1), 3, False),
    (1, 3, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 3, True),  # depthwise
    (3, 2, 2, 4, 4, (1, 1), (2, 2), (0, 0), (1, 1), 1, True),  # 1x1, strided
    (0, 2, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),  # empty batch
]


@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradcheck(case):
    n, ci, co, h, w, k, s, p, d, g, bias = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, ci, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    wt = torch.randn(co, ci // g, *k, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(co, dtype=torch.float64, generator=gen, requires_grad=True) if bias else None
    fn = lambda x, wt, b: myconv.conv2d(x, wt, b, s, p, d, g)
    assert torch.autograd.gradcheck(fn, (x, wt, b))


def test_gradcheck_unbatched():
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: myconv.conv2d(x, w, None, 1, 1), (x, w))


def test_unbatched_input_gives_unbatched_output():
    x, w, b = torch.randn(3, 9, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    out = myconv.conv2d(x, w, b, padding=1, stride=(2, 1))
    assert out.shape == (4, 5, 8)
    assert_rel_close(out, F.conv2d(x, w, b, padding=1, stride=(2, 1)), 1e-5)


def test_op_is_callable_from_torch_ops():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    torch.ops.myconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1).sum().backward()
    assert x.grad.shape == (2, 3, 8, 8) and w.grad.shape == (4, 3, 3, 3)


def test_backward_op_honours_output_mask():
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    gy = torch.randn(2, 4, 4, 4)
    gi, gw, gb = torch.ops.myconv.conv2d_backward(gy, x, w, [1, 1], [0, 0], [1, 1], 1, [False, True, False])
    assert gi is None and gb is None and gw.shape == w.shape
    gi, gw, gb = torch.ops.myconv.conv2d_backward(gy, x, w, [1, 1], [0, 0], [1, 1], 1, [True, False, True])
    assert gw is None and gi.shape == x.shape
    assert_rel_close(gb, gy.sum((0, 2, 3)), 1e-6)


def test_no_grad_for_inputs_that_do_not_require_it():
    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4)
    myconv.conv2d(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None and w.grad is not None


def test_forward_and_backward_are_bitwise_reproducible():
    x = torch.randn(6, 8, 20, 20, requires_grad=True)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    runs = []
    for _ in range(3):
        x.grad = w.grad = None
        y = myconv.conv2d(x, w, None, 1, 1)
        y.backward(torch.ones_like(y))
        runs.append((y.detach().clone(), x.grad.clone(), w.grad.clone()))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
