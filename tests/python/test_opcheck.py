"""torch.library.opcheck on every op: schema, autograd registration, FakeTensor
(Meta kernels) and AOT dispatch, static and dynamic."""
import pytest
import torch
from torch.library import opcheck

import myconv  # noqa: F401


def _t(*shape, grad=False):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


CONV2D_SAMPLES = [
    (_t(2, 4, 8, 7, grad=True), _t(6, 2, 3, 2, grad=True), _t(6, grad=True), [2, 1], [1, 0], [1, 2], 2),
    (_t(1, 3, 6, 6), _t(4, 3, 3, 3, grad=True), None, [1, 1], [1, 1], [1, 1], 1),
    (_t(3, 5, 5, grad=True), _t(2, 3, 3, 3, grad=True), _t(2), [1, 1], [0, 0], [1, 1], 1),
    (_t(2, 4, 6, 6, grad=True).to(memory_format=torch.channels_last), _t(4, 1, 3, 3, grad=True), None, [1, 1], [1, 1], [1, 1], 4),
    (_t(0, 2, 5, 5, grad=True), _t(3, 2, 3, 3, grad=True), _t(3, grad=True), [1, 1], [1, 1], [1, 1], 1),
]


@pytest.mark.parametrize("args", CONV2D_SAMPLES, ids=range(len(CONV2D_SAMPLES)))
def test_conv2d(args):
    opcheck(torch.ops.myconv.conv2d.default, args)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv2d_padding_overload(padding):
    args = (_t(2, 4, 8, 7, grad=True), _t(6, 2, 4, 3, grad=True), _t(6, grad=True), [1, 1], padding, [1, 2], 2)
    opcheck(torch.ops.myconv.conv2d.padding, args)


@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False], [False, True, True]], ids=str)
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "requires_grad"])
def test_conv2d_backward(mask, grad):
    # With requires_grad this exercises the double-backward registration too.
    x, w = _t(2, 4, 8, 7, grad=grad), _t(6, 2, 3, 2, grad=grad)
    gy = _t(2, 6, 4, 5, grad=grad)
    opcheck(torch.ops.myconv.conv2d_backward.default, (gy, x, w, [2, 1], [1, 0], [1, 2], 2, mask))


@pytest.mark.parametrize("shape", [(2, 3, 8, 7), (3, 8, 7)], ids=str)
def test_im2col(shape):
    opcheck(torch.ops.myconv.im2col.default, (_t(*shape, grad=True), [3, 2], [1, 2], [1, 0], [2, 1]))


@pytest.mark.parametrize("shape", [(2, 12, 25), (12, 25)], ids=str)
def test_col2im(shape):
    opcheck(torch.ops.myconv.col2im.default, (_t(*shape, grad=True), [5, 6], [3, 2], [1, 1], [1, 0], [1, 1]))
