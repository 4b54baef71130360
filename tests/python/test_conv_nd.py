"""conv1d, conv3d, conv_transpose1d and conv_transpose3d against
torch.nn.functional: a seeded grid of 240 configurations per op (forward and
the three gradients, float64 and float32), gradcheck and gradgradcheck,
unbatched and channels_last_3d inputs, 'same' / 'valid', reduced precision,
every CPU path (tiles, channel blocks, 1x1x1, direct depthwise kernels),
bitwise equality across thread counts, the workspace limit, the CUDA
backend's plan replayed on the CPU, the seed's 1-D example, and CUDA twins
that skip without a GPU (MYCONV_TEST_CUDA_ON_CPU=1: on the CPU, see
conftest.py). (conv2d / conv_transpose2d: test_conv2d.py,
test_conv_transpose.py, test_paths.py.)"""
import contextlib
import random
import zlib
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import REL_TOL, assert_rel_close, cuda_plan_on_cpu, requires_cuda


@dataclass(frozen=True)
class Config:
    dims: int
    transposed: bool
    n: int
    c_in: int
    c_out: int
    size: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple
    groups: int
    bias: bool

    def __str__(self):
        t = "T" if self.transposed else ""
        j = lambda v: "x".join(map(str, v))  # noqa: E731
        return (f"{t}{self.dims}d_N{self.n}_C{self.c_in}-{self.c_out}_{j(self.size)}_k{j(self.kernel)}"
                f"_s{j(self.stride)}_p{j(self.padding)}_d{j(self.dilation)}"
                + (f"_op{j(self.output_padding)}" if self.transposed else "")
                + f"_g{self.groups}{'_b' if self.bias else ''}")

    @property
    def op_name(self):
        return f"conv_transpose{self.dims}d" if self.transposed else f"conv{self.dims}d"

    def args(self):
        a = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if self.transposed:
            a["output_padding"] = self.output_padding
        return a

    def weight_shape(self):
        if self.transposed:
            return (self.c_in, self.c_out // self.groups) + self.kernel
        return (self.c_out, self.c_in // self.groups) + self.kernel

    def tensors(self, dtype=torch.float64, device="cpu", requires_grad=False):
        g = torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
        x = torch.randn((self.n, self.c_in) + self.size, generator=g, dtype=torch.float64)
        w = torch.randn(self.weight_shape(), generator=g, dtype=torch.float64)
        b = torch.randn(self.c_out, generator=g, dtype=torch.float64) if self.bias else None
        return [None if t is None else t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
                for t in (x, w, b)]

    def ours(self):
        return getattr(myconv, self.op_name)

    def reference(self):
        return getattr(F, self.op_name)


def random_config(rng: random.Random, dims: int, transposed: bool) -> Config:
    groups = rng.choice([1, 1, 2, 3])
    if rng.random() < 0.2:  # depthwise (and channel multipliers)
        groups = rng.randint(2, 5)
        c_in, c_out = groups, groups * rng.choice([1, 2])
        if transposed:
            c_in, c_out = c_out, c_in
            c_in = groups * (c_in // groups)
    else:
        c_in, c_out = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    top = 5 if dims == 3 else 9
    kernel = tuple(rng.randint(1, 3 if dims == 3 else 5) for _ in range(dims))
    stride = tuple(rng.randint(1, 3) for _ in range(dims))
    dilation = tuple(rng.randint(1, 2 if dims == 3 else 3) for _ in range(dims))
    padding = tuple(rng.randint(0, 2) for _ in range(dims))
    if transposed:
        output_padding = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation))
        size = tuple(rng.randint(1, top - 1) for _ in range(dims))

        def out(n, k, s, p, op, d):
            return (n - 1) * s - 2 * p + d * (k - 1) + op + 1

        # shrink the padding until the output is not empty
        padding = tuple(min(p, max(0, (out(n, k, s, 0, op, d) - 1) // 2))
                        for p, n, k, s, op, d in zip(padding, size, kernel, stride, output_padding, dilation))
    else:
        output_padding = (0,) * dims
        need = [max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, padding, dilation)]
        size = tuple(rng.randint(n, max(n, top)) for n in need)
    return Config(dims, transposed, rng.randint(0, 3), c_in, c_out, size, kernel, stride, padding, dilation,
                  output_padding, groups, rng.random() < 0.6)


OPS = [(1, False), (3, False), (1, True), (3, True)]
OP_IDS = ["conv1d", "conv3d", "conv_transpose1d", "conv_transpose3d"]
GRIDS = {op: [random_config(random.Random(zlib.crc32(f"{op}-{i}".encode())), *op) for i in range(240)]
         for op in OPS}
GRID = [cfg for op in OPS for cfg in GRIDS[op]]


def forward_backward(fn, x, w, b, args, gy=None):
    """Output and the gradients of (x, w, b) for grad_output gy (seeded randn)."""
    ts = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(ts[0], ts[1], ts[2], **args)
    if gy is None:
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y.backward(gy.to(y.device, y.dtype))
    return [y] + [t.grad if t is not None else None for t in ts]


def check_against_f(cfg: Config, dtype, tol, device="cpu"):
    x, w, b = cfg.tensors(dtype, device)
    ours = forward_backward(cfg.ours(), x, w, b, cfg.args())
    ref = forward_backward(cfg.reference(), *[None if t is None else t.double().cpu() for t in (x, w, b)],
                           cfg.args())
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        if e is not None:
            assert a.dtype == dtype and a.device.type == device
            assert_rel_close(a, e, tol, f"{cfg} {name}")
    return ours


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_grid_matches_torch_functional(cfg, dtype):
    check_against_f(cfg, dtype, REL_TOL[dtype] if dtype == torch.float64 else 1e-5)


def test_grids_reach_every_kind_of_configuration():
    for op in OPS:
        grid = GRIDS[op]
        assert len(grid) >= 200
        assert any(c.n == 0 for c in grid) and any(c.groups > 1 for c in grid)
        assert any(c.groups == c.c_in for c in grid)  # depthwise
        assert any(max(c.stride) > 1 for c in grid) and any(max(c.dilation) > 1 for c in grid)
        if op[1]:
            assert any(p >= s for c in grid for p, s in zip(c.output_padding, c.stride))


GRADCHECK = [
    Config(1, False, 2, 4, 6, (9,), (3,), (2,), (1,), (2,), (0,), 2, True),
    Config(3, False, 2, 3, 4, (4, 5, 3), (2, 3, 2), (1, 2, 1), (1, 0, 1), (1, 1, 2), (0, 0, 0), 1, True),
    Config(3, False, 1, 4, 4, (3, 4, 4), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), 4, True),  # depthwise
    Config(1, True, 2, 4, 6, (5,), (3,), (2,), (1,), (1,), (1,), 2, True),
    Config(3, True, 1, 2, 3, (2, 3, 2), (2, 2, 3), (2, 1, 2), (0, 1, 1), (1, 2, 1), (1, 1, 0), 1, True),
]


@pytest.mark.parametrize("cfg", GRADCHECK, ids=str)
def test_gradcheck_and_gradgradcheck(cfg):
    x, w, b = cfg.tensors(torch.float64, requires_grad=True)
    fn = lambda x, w, b: cfg.ours()(x, w, b, **cfg.args())  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("cfg", GRADCHECK, ids=str)
def test_unbatched_input(cfg):
    x, w, b = cfg.tensors()
    x1 = x[0]
    ours = forward_backward(cfg.ours(), x1, w, b, cfg.args())
    ref = forward_backward(cfg.reference(), x1, w, b, cfg.args())
    assert ours[0].dim() == cfg.dims + 1
    for a, e in zip(ours, ref):
        assert_rel_close(a, e, 1e-12)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv3d", "conv_transpose3d"])
@pytest.mark.parametrize("which", ["input", "weight"])
def test_channels_last_3d(transposed, which):
    cfg = Config(3, transposed, 2, 8, 6, (5, 6, 7), (3, 3, 3), (1, 2, 1), (1, 1, 1), (1, 1, 1),
                 (0, 1, 0) if transposed else (0, 0, 0), 2, True)
    x, w, b = cfg.tensors()
    if which == "input":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    else:
        w = w.contiguous(memory_format=torch.channels_last_3d)
    ours = forward_backward(cfg.ours(), x, w, b, cfg.args())
    ref = forward_backward(cfg.reference(), x, w, b, cfg.args())
    for a, e in zip(ours, ref):
        assert_rel_close(a, e, 1e-12)
    # the output's layout is F.conv3d's (its float32 path: the float64 one
    # falls back to slow_conv3d, which always returns a contiguous output)
    assert ours[0].is_contiguous(memory_format=torch.channels_last_3d)
    y32 = cfg.reference()(*[None if t is None else t.float() for t in (x, w, b)], **cfg.args())
    assert y32.is_contiguous(memory_format=torch.channels_last_3d)
    # each gradient in the layout of its tensor
    assert ours[1].is_contiguous(memory_format=torch.channels_last_3d) == (which == "input")
    assert ours[2].is_contiguous(memory_format=torch.channels_last_3d) == (which == "weight")


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_string_padding(dims, padding):
    g = torch.Generator().manual_seed(dims)
    x = torch.randn((2, 4) + (7,) * dims, generator=g, dtype=torch.float64)
    w = torch.randn((6, 2) + (4, 3, 2)[:dims], generator=g, dtype=torch.float64)  # even kernels: odd totals
    dilation = (2, 1, 3)[:dims]
    ours = getattr(myconv, f"conv{dims}d")(x, w, None, 1, padding, dilation, 2)
    ref = getattr(F, f"conv{dims}d")(x, w, None, 1, padding, dilation, 2)
    assert_rel_close(ours, ref, 1e-12)
    op = getattr(torch.ops.myconv, f"conv{dims}d").padding
    assert_rel_close(op(x, w, None, [1] * dims, padding, list(dilation), 2), ref, 1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cfg", GRADCHECK, ids=str)
def test_reduced_precision(cfg, dtype):
    check_against_f(cfg, dtype, 3e-2)


def test_seed_1d_example():
    # "Unfold + matmul equals Conv2d", appendix: a strided 1-D convolution.
    x = torch.arange(1.0, 37.0).view(1, 3, 12)
    w = torch.arange(1.0, 25.0).view(2, 3, 4)
    expected = torch.tensor([[[1530.0, 1686.0, 1842.0, 1998.0, 2154.0],
                              [3618.0, 4062.0, 4506.0, 4950.0, 5394.0]]])
    assert torch.equal(myconv.conv1d(x, w, stride=2), expected)
    assert torch.equal(torch.ops.myconv.conv1d(x, w, None, [2], [0], [1], 1), expected)


# ---- the CPU paths, threads and workspace ------------------------------------------

@contextlib.contextmanager
def settings(threads=None, tile_bytes=None, workspace=None, cuda_plan=False):
    saved = (torch.get_num_threads(), myconv.get_tile_bytes(), myconv.get_workspace_limit())
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if tile_bytes is not None:
            myconv.set_tile_bytes(tile_bytes)
        if workspace is not None:
            myconv.set_workspace_limit(workspace)
        with cuda_plan_on_cpu() if cuda_plan else contextlib.nullcontext():
            yield
    finally:
        torch.set_num_threads(saved[0])
        myconv.set_tile_bytes(saved[1])
        myconv.set_workspace_limit(saved[2])


# Each reaches a path of the composition in 3-D (and 1-D).
PATHS = {
    "tiles": Config(3, False, 2, 5, 7, (5, 6, 7), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), 1, True),
    "tiles-strided-dilated": Config(3, False, 2, 4, 6, (7, 9, 8), (3, 2, 3), (2, 1, 2), (2, 0, 1), (1, 2, 2),
                                    (0, 0, 0), 2, True),
    "small-images-joined": Config(3, False, 5, 4, 6, (2, 3, 2), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1),
                                  (0, 0, 0), 1, True),
    "pointwise": Config(3, False, 2, 24, 16, (3, 5, 4), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), (0, 0, 0), 1,
                        True),
    "pointwise-strided": Config(3, False, 2, 8, 6, (5, 7, 6), (1, 1, 1), (2, 2, 2), (0, 0, 0), (1, 1, 1), (0, 0, 0),
                                1, True),
    "channel-blocks": Config(3, False, 1, 40, 24, (3, 4, 5), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0),
                             1, True),
    "output-channel-blocks": Config(3, False, 1, 8, 300, (3, 3, 3), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1),
                                    (0, 0, 0), 1, True),
    "depthwise": Config(3, False, 2, 6, 6, (4, 6, 5), (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), 6,
                        True),
    "depthwise-strided-dilated": Config(3, False, 2, 4, 8, (7, 8, 6), (3, 3, 3), (2, 1, 2), (1, 2, 1), (2, 1, 1),
                                        (0, 0, 0), 4, True),
    "depthwise-wide-padding": Config(3, False, 1, 3, 3, (4, 5, 4), (3, 3, 3), (1, 1, 1), (3, 1, 2), (1, 2, 1),
                                     (0, 0, 0), 3, True),
    "depthwise-transposed": Config(3, True, 2, 4, 4, (3, 4, 3), (3, 3, 3), (2, 1, 2), (1, 1, 1), (1, 1, 1),
                                   (1, 0, 1), 4, True),
    "1d-long": Config(1, False, 2, 6, 8, (300,), (5,), (1,), (2,), (1,), (0,), 1, True),
    "1d-depthwise": Config(1, False, 2, 6, 6, (40,), (3,), (1,), (1,), (2,), (0,), 6, True),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
@pytest.mark.parametrize("tile_bytes", [0, 1], ids=["l2-tiles", "tiny-tiles"])
@pytest.mark.parametrize("name", list(PATHS))
def test_paths_match_torch_functional(name, tile_bytes, channels_last):
    cfg = PATHS[name]
    if channels_last and cfg.dims != 3:
        pytest.skip("no channels-last 1-D tensors")
    x, w, b = cfg.tensors()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with settings(tile_bytes=tile_bytes, threads=3):
        ours = forward_backward(cfg.ours(), x, w, b, cfg.args())
    ref = forward_backward(cfg.reference(), x, w, b, cfg.args())
    for a, e in zip(ours, ref):
        assert_rel_close(a, e, 1e-11, name)


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
@pytest.mark.parametrize("name", list(PATHS))
def test_results_are_bitwise_the_same_for_any_thread_count(name, channels_last):
    cfg = PATHS[name]
    if channels_last and cfg.dims != 3:
        pytest.skip("no channels-last 1-D tensors")
    x, w, b = cfg.tensors(torch.float32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    runs = []
    for threads in (1, 2, 3):
        with settings(threads=threads):
            runs.append(forward_backward(cfg.ours(), x, w, b, cfg.args()))
    for run in runs[1:]:
        for a, e in zip(run, runs[0]):
            assert torch.equal(a, e), name


@pytest.mark.parametrize("workspace", [20_000, 200_000])
@pytest.mark.parametrize("name", ["tiles", "channel-blocks", "output-channel-blocks", "1d-long"])
def test_workspace_stays_within_the_limit(name, workspace):
    cfg = PATHS[name]
    x, w, b = cfg.tensors(torch.float32)
    op = getattr(torch.ops.myconv, cfg.op_name)
    back = getattr(torch.ops.myconv, f"conv{cfg.dims}d_backward")
    args = [list(cfg.stride), list(cfg.padding), list(cfg.dilation), cfg.groups]
    with settings(workspace=workspace, threads=3):
        y = op(x, w, b, *args)
        assert 0 < torch.ops.myconv._last_workspace_peak() <= workspace
        back(torch.ones_like(y), x, w, *args, [True, True, True])
        assert 0 < torch.ops.myconv._last_workspace_peak() <= workspace
    assert_rel_close(y, cfg.reference()(x.double(), w.double(), b.double(), **cfg.args()), 1e-5)


@pytest.mark.parametrize("workspace", [None, 1], ids=["one-chunk", "image-chunks"])
@pytest.mark.parametrize("cfg", GRID[::12], ids=str)
def test_the_cuda_backends_plan_on_the_cpu(cfg, workspace):
    # The CUDA backend's work plan and its cuBLAS calls, replayed on the CPU
    # (see test_paths.py for 2-D).
    with settings(workspace=workspace, cuda_plan=True):
        check_against_f(cfg, torch.float64, 1e-11)


# ---- CUDA twins (skipped without a device) --------------------------------------------

@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("cfg", GRID[::6], ids=str)
def test_cuda_matches_torch_functional(cfg, dtype, cuda_device, no_tf32):
    check_against_f(cfg, dtype, REL_TOL[dtype] if dtype == torch.float64 else 1e-4, device=cuda_device)


@requires_cuda
@pytest.mark.parametrize("cfg", GRADCHECK, ids=str)
def test_cuda_gradcheck(cfg, cuda_device):
    x, w, b = cfg.tensors(torch.float64, device=cuda_device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: cfg.ours()(x, w, b, **cfg.args()), (x, w, b))


@requires_cuda
def test_cuda_conv3d_reduced_precision_and_channels_last(cuda_device):
    cfg = PATHS["tiles-strided-dilated"]
    for dtype in (torch.float16, torch.bfloat16):
        check_against_f(cfg, dtype, 3e-2, device=cuda_device)
    x, w, b = cfg.tensors(torch.float64, device=cuda_device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    assert_rel_close(myconv.conv3d(x, w, b, **cfg.args()), F.conv3d(x, w, b, **cfg.args()), 1e-12)
