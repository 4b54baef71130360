"""Worked examples from the seed tutorials (../shared/seeds), exact values."""
import torch
import torch.nn.functional as F

import myconv


def test_5x7_image_3x3_kernel_padding_1():
    # "Convolution and Matrix Multiplication": raw convolution of arange(35).
    x = torch.arange(35.0).view(1, 1, 5, 7)
    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    expected = torch.tensor([
        [134, 211, 250, 289, 328, 367, 238],
        [333, 492, 537, 582, 627, 672, 423],
        [564, 807, 852, 897, 942, 987, 612],
        [795, 1122, 1167, 1212, 1257, 1302, 801],
        [422, 571, 592, 613, 634, 655, 382],
    ], dtype=torch.float32)
    assert torch.equal(myconv.conv2d(x, w, padding=1)[0, 0], expected)
    assert torch.equal(torch.ops.myconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)[0, 0], expected)


def test_4x4_image_2x2_kernel():
    # "Unfold + matmul equals Conv2d": arange(1, 17) with weights [[1, 2], [3, 4]].
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    w = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    expected = torch.tensor([[44, 54, 64], [84, 94, 104], [124, 134, 144]], dtype=torch.float32)
    assert torch.equal(myconv.conv2d(x, w, torch.zeros(1))[0, 0], expected)


def test_unfold_matmul_view_recipe_equals_op():
    # "PyTorch Conv2d under the hood": unfold + matmul + view == Conv2d, 3 -> 1 channel, 5x5.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=g)
    m = torch.nn.Conv2d(3, 1, 5)
    inp_unf = myconv.im2col(x, (5, 5))
    assert inp_unf.shape == (1, 75, 784)
    out = (inp_unf.transpose(1, 2) @ m.weight.view(1, -1).t()).transpose(1, 2) + m.bias.view(1, 1, 1)
    ours = myconv.Conv2d(3, 1, 5)
    ours.load_state_dict(m.state_dict())
    assert torch.allclose(ours(x), out.view(1, 1, 28, 28), atol=1e-5)
    assert torch.allclose(ours(x), m(x), atol=1e-5)


def test_strided_output_size_formula():
    # "Output size": floor((n + 2p - k) / s) + 1, per axis.
    x, w = torch.randn(1, 1, 11, 8), torch.randn(1, 1, 3, 2)
    out = myconv.conv2d(x, w, stride=(2, 3), padding=(1, 0))
    assert out.shape[-2:] == ((11 + 2 - 3) // 2 + 1, (8 - 2) // 3 + 1)
    assert torch.allclose(out, F.conv2d(x, w, stride=(2, 3), padding=(1, 0)), atol=1e-5)
