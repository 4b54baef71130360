"""myconv.Conv2d as a drop-in for nn.Conv2d, and training through the op."""
import copy

import pytest
import torch
from torch import nn

import myconv
from conftest import assert_rel_close


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_matches_nn_conv2d(padding_mode):
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2,
                    padding_mode=padding_mode, dtype=torch.float64)
    ours = myconv.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2,
                         padding_mode=padding_mode, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    y, yr = ours(x), ref(xr)
    assert_rel_close(y, yr, 1e-12)
    gy = torch.randn_like(y)
    y.backward(gy)
    yr.backward(gy)
    assert_rel_close(x.grad, xr.grad, 1e-12)
    assert_rel_close(ours.weight.grad, ref.weight.grad, 1e-12)
    assert_rel_close(ours.bias.grad, ref.bias.grad, 1e-12)


def test_state_dict_round_trip_and_repr():
    ref = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    ours = myconv.Conv2d(3, 8, 3, padding=1, bias=False)
    ours.load_state_dict(ref.state_dict())
    ref2 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    ref2.load_state_dict(ours.state_dict())
    assert torch.equal(ref2.weight, ref.weight)
    assert repr(ours) == repr(ref).replace("Conv2d", "Conv2d", 1)
    assert isinstance(ours, nn.Conv2d)


def small_cnn(conv):
    torch.manual_seed(0)
    return nn.Sequential(
        conv(3, 8, 3, padding=1), nn.ReLU(),
        conv(8, 16, 3, stride=2, padding=1, groups=2), nn.ReLU(),
        conv(16, 16, 3, padding=1, groups=16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).double()


def test_training_matches_nn_conv2d_and_loss_goes_down():
    ref, ours = small_cnn(nn.Conv2d), small_cnn(myconv.Conv2d)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 12, 12, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (16,), generator=g)
    losses = {}
    for name, model in (("ref", ref), ("ours", ours)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses[name] = []
        for _ in range(8):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert losses["ours"][-1] < losses["ours"][0]
    for a, b in zip(losses["ours"], losses["ref"]):
        assert abs(a - b) <= 1e-9 * abs(b)
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert_rel_close(p, q, 1e-9, n)


def test_deepcopy_and_device_dtype_kwargs():
    m = myconv.Conv2d(2, 3, 3, device="cpu", dtype=torch.float32)
    m2 = copy.deepcopy(m)
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(m(x), m2(x))
