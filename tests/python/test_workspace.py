"""The column workspace is bounded: chunks of the batch, same results."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import assert_rel_close


@pytest.fixture
def small_workspace():
    saved = myconv.get_workspace_limit()
    yield
    myconv.set_workspace_limit(saved)


def test_default_limit_is_256_mib():
    code = "import myconv; print(myconv.get_workspace_limit())"
    env = {k: v for k, v in os.environ.items() if k != "MYCONV_WORKSPACE_MB"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout.split()[-1]) == 256 << 20


def test_environment_variable_sets_the_limit():
    code = "import myconv; print(myconv.get_workspace_limit())"
    env = dict(os.environ, MYCONV_WORKSPACE_MB="1.5")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout.split()[-1]) == int(1.5 * (1 << 20))


def test_setter_rejects_non_positive(small_workspace):
    with pytest.raises(RuntimeError, match="expected a positive workspace limit"):
        myconv.set_workspace_limit(0)


@pytest.mark.parametrize("limit", [1, 5000, 40000, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_any_chunking_gives_the_same_results(small_workspace, limit, dtype):
    # 7 images (a prime: chunks of 1, 2, 3 ... leave a remainder), groups 2, bias.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, 9, 8, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    b = torch.randn(6, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    myconv.set_workspace_limit(limit)
    y = myconv.conv2d(x, w, b, 1, 1, 1, 2)
    y.backward(torch.ones_like(y))
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    yr = F.conv2d(xr, wr, br, 1, 1, 1, 2)
    yr.backward(torch.ones_like(yr))
    tol = 1e-12 if dtype == torch.float64 else 3e-2
    assert_rel_close(y, yr, tol)
    assert_rel_close(x.grad, xr.grad, tol)
    assert_rel_close(w.grad, wr.grad, tol)
    assert_rel_close(b.grad, br.grad, tol)
