"""im2col / col2im against torch.nn.functional.unfold / fold."""
import random

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import assert_rel_close


def window_grid(count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = (rng.randint(1, 5), rng.randint(1, 5))
        d = (rng.randint(1, 3), rng.randint(1, 3))
        p = (rng.randint(0, 3), rng.randint(0, 3))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        size = lambda i: (lambda lo: rng.randint(lo, lo + 8))(max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]))
        out.append((rng.randint(0, 3), rng.randint(1, 5), size(0), size(1), k, d, p, s))
    return out


WINDOWS = window_grid(120, seed=11)
ids = lambda c: "N{}_C{}_{}x{}_k{}_d{}_p{}_s{}".format(*c)


@pytest.mark.parametrize("case", WINDOWS, ids=ids)
def test_im2col_matches_unfold(case):
    n, c, h, w, k, d, p, s = case
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    assert torch.equal(myconv.im2col(x, k, d, p, s), F.unfold(x, k, d, p, s))


@pytest.mark.parametrize("case", WINDOWS, ids=ids)
def test_col2im_matches_fold(case):
    n, c, h, w, k, d, p, s = case
    blocks = F.unfold(torch.zeros(1, 1, h, w), k, d, p, s).shape[-1]
    cols = torch.randn(n, c * k[0] * k[1], blocks, dtype=torch.float64)
    assert_rel_close(myconv.col2im(cols, (h, w), k, d, p, s), F.fold(cols, (h, w), k, d, p, s), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_other_dtypes(dtype):
    x = torch.randn(2, 3, 9, 8).to(dtype)
    cols = myconv.im2col(x, (3, 2), (1, 2), (1, 1), (2, 1))
    assert cols.dtype == dtype
    assert torch.equal(cols, F.unfold(x.float(), (3, 2), (1, 2), (1, 1), (2, 1)).to(dtype))
    back = myconv.col2im(cols, (9, 8), (3, 2), (1, 2), (1, 1), (2, 1))
    ref = F.fold(cols.double(), (9, 8), (3, 2), (1, 2), (1, 1), (2, 1))
    assert back.dtype == dtype
    assert_rel_close(back, ref, 1e-6 if dtype == torch.float32 else 1e-2)


def test_unbatched():
    x = torch.randn(3, 7, 6, dtype=torch.float64)
    cols = myconv.im2col(x, 3, 1, 1, 2)
    assert torch.equal(cols, F.unfold(x, 3, 1, 1, 2))
    assert cols.dim() == 2
    assert_rel_close(myconv.col2im(cols, (7, 6), 3, 1, 1, 2), F.fold(cols, (7, 6), 3, 1, 1, 2), 1e-12)


def test_non_contiguous_and_channels_last_input():
    x = torch.randn(2, 9, 3, 8, dtype=torch.float64).permute(0, 2, 1, 3)
    assert not x.is_contiguous()
    assert torch.equal(myconv.im2col(x, 2, 1, 1, 1), F.unfold(x, 2, 1, 1, 1))
    y = torch.randn(2, 3, 6, 6, dtype=torch.float64).to(memory_format=torch.channels_last)
    assert torch.equal(myconv.im2col(y, 3, 1, 0, 1), F.unfold(y, 3, 1, 0, 1))


def test_gradients_are_each_others_adjoint():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: myconv.im2col(t, (2, 3), (2, 1), (1, 0), (1, 2)), (x,))
    cols = torch.randn(2, 8, 30, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: myconv.col2im(t, (5, 4), 2, 1, 1, 1), (cols,))
    assert torch.autograd.gradgradcheck(lambda t: myconv.col2im(t, (5, 4), 2, 1, 1, 1), (cols,))


def test_seed_unfold_example():
    # Seed "unfold + matmul": the 2x2 patches of arange(1, 17) as a 4x4 image.
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    expected = torch.tensor(
        [[1, 2, 3, 5, 6, 7, 9, 10, 11], [2, 3, 4, 6, 7, 8, 10, 11, 12],
         [5, 6, 7, 9, 10, 11, 13, 14, 15], [6, 7, 8, 10, 11, 12, 14, 15, 16]],
        dtype=torch.float32,
    )
    assert torch.equal(myconv.im2col(x, 2)[0], expected)


def test_seed_fold_of_outer_product():
    # Seed "Convolution and Matrix Multiplication": fold(kernel ⊗ conv(x)) on 5x7.
    data = torch.arange(35.0).view(1, 1, 5, 7)
    kernel = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    conv = myconv.conv2d(data, kernel, padding=1)
    p = kernel.reshape(9, 1) @ conv.reshape(1, 35)
    expected = torch.tensor([
        [2672, 5379, 6804, 7659, 8514, 8403, 6254],
        [8117, 15408, 18909, 20790, 22671, 21780, 15539],
        [14868, 27315, 32400, 34425, 36450, 34191, 23922],
        [20039, 35544, 41283, 43164, 45045, 41508, 28325],
        [18608, 32055, 36756, 38151, 39546, 35943, 23966],
    ], dtype=torch.float32)
    assert torch.equal(myconv.col2im(p[None], (5, 7), 3, padding=1)[0, 0], expected)
