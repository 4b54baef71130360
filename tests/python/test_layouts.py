"""Any strides or memory format in; F.conv2d's layout out."""
import torch
import torch.nn.functional as F

import myconv
from conftest import assert_rel_close


def test_non_contiguous_inputs():
    x = torch.randn(3, 9, 4, 10, dtype=torch.float64).permute(0, 2, 1, 3)[:, :, ::2, 1:]
    w = torch.randn(5, 4, 4, 3, dtype=torch.float64).transpose(2, 3)
    b = torch.randn(10, dtype=torch.float64)[::2]
    assert not (x.is_contiguous() or w.is_contiguous() or b.is_contiguous())
    out = myconv.conv2d(x, w, b, padding=(1, 2), stride=(1, 2))
    assert_rel_close(out, F.conv2d(x, w, b, padding=(1, 2), stride=(1, 2)), 1e-12)


def test_channels_last_input_gives_channels_last_output():
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64).to(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out = myconv.conv2d(x, w, None, 1, 1, 1, 2)
    ref = F.conv2d(x, w, None, 1, 1, 1, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.stride() == ref.stride()
    assert_rel_close(out, ref, 1e-12)


def test_channels_last_weight_gives_channels_last_output():
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = myconv.conv2d(x, w)
    assert out.stride() == F.conv2d(x, w).stride()


def test_contiguous_inputs_give_contiguous_output():
    out = myconv.conv2d(torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3))
    assert out.is_contiguous()


def test_gradients_take_the_layout_of_their_tensor():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    myconv.conv2d(x, w, None, 1, 1).sum().backward()
    F.conv2d(xr, wr, None, 1, 1).sum().backward()
    assert x.grad.stride() == xr.grad.stride()
    assert w.grad.stride() == wr.grad.stride()
    assert_rel_close(x.grad, xr.grad, 1e-12)
    assert_rel_close(w.grad, wr.grad, 1e-12)


def test_expanded_and_sliced_batch():
    base = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    x = base.expand(3, 2, 7, 7)  # stride 0 over the batch
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    assert_rel_close(myconv.conv2d(x, w), F.conv2d(x, w), 1e-12)
