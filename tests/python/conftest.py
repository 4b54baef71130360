"""Shared helpers of the pytest suite: the seeded configuration grid, the
tolerance-aware comparison against torch.nn.functional, the device under test
of the CUDA tests, float32 without TF32, and a check that no test leaves
PyTorch's precision flags changed.

The CUDA tests take their device from the ``cuda_device`` fixture (or the
``cuda_device_under_test()`` context manager): "cuda" where there is a GPU;
with MYCONV_TEST_CUDA_ON_CPU=1 "cpu" instead (GPU or not), the CPU backend
running the CUDA backend's work plan and its cuBLAS calls replayed on the CPU
(torch.ops.myconv._set_cpu_whole_image_plan), so the CUDA tests' own code and
the CUDA composition run where there is no GPU (scripts/test.sh). Without a
GPU and without the variable they skip. What only a GPU can check (streams, a
second device, autocast "cuda", mixing devices) is marked ``cuda_only(why)``:
it skips under the mapping, with its reason."""
import os

# MKL's conditional numerical reproducibility mode would hide a thread-count
# dependence of MKL's GEMMs from the bitwise tests: removed before MKL starts
# (test_thread_independence.py checks that MKL runs with it off).
os.environ.pop("MKL_CBWR", None)

import contextlib  # noqa: E402
import random  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import List, Optional  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import myconv  # noqa: E402,F401  (loads the ops)

# Relative tolerance (max |ours - ref| / max |ref|) per dtype.
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


# ---- the device under test of the CUDA tests ------------------------------------------

CUDA_ON_CPU_VARIABLE = "MYCONV_TEST_CUDA_ON_CPU"
CUDA_ON_CPU = os.environ.get(CUDA_ON_CPU_VARIABLE, "0") not in ("", "0")
HAS_CUDA = torch.cuda.is_available()
# "cuda", "cpu" (the CUDA tests mapped to the CPU), or None (they skip)
CUDA_TEST_DEVICE = "cpu" if CUDA_ON_CPU else "cuda" if HAS_CUDA else None


def requires_cuda(test):
    """A CUDA test (marker "cuda", so `pytest -m cuda` selects them): it runs on
    the device under test (the ``cuda_device`` fixture), and skips where there
    is none."""
    skip = pytest.mark.skipif(CUDA_TEST_DEVICE is None,
                              reason=f"no CUDA device ({CUDA_ON_CPU_VARIABLE}=1 runs the CUDA tests on the CPU)")
    return pytest.mark.cuda(skip(test))


def cuda_only(why: str):
    """For a CUDA test only a real GPU can check: it skips without one and under
    the mapping to the CPU, saying why (``@cuda_only("streams")``)."""
    where = f"{CUDA_ON_CPU_VARIABLE}=1 maps the CUDA tests to the CPU" if CUDA_ON_CPU else "no CUDA device"
    skip = pytest.mark.skipif(CUDA_ON_CPU or not HAS_CUDA, reason=f"CUDA-only: {why} ({where})")
    return lambda test: pytest.mark.cuda(skip(test))


_cuda_plan_depth = 0


@contextlib.contextmanager
def cuda_plan_on_cpu(workspace: Optional[int] = None):
    """The CUDA backend's work plan and its cuBLAS calls, replayed on the CPU
    (and, given, a workspace limit); nested uses keep it on until the outermost
    ends (the flag has no getter: counted here)."""
    global _cuda_plan_depth
    saved = myconv.get_workspace_limit()
    _cuda_plan_depth += 1
    torch.ops.myconv._set_cpu_whole_image_plan(True)
    try:
        if workspace is not None:
            myconv.set_workspace_limit(workspace)
        yield
    finally:
        _cuda_plan_depth -= 1
        if _cuda_plan_depth == 0:
            torch.ops.myconv._set_cpu_whole_image_plan(False)
        myconv.set_workspace_limit(saved)


@contextlib.contextmanager
def cuda_device_under_test():
    """The device a CUDA test runs on: "cuda", or "cpu" with the CUDA backend's
    plan when the CUDA tests are mapped to the CPU; skips the test otherwise."""
    if CUDA_TEST_DEVICE is None:
        pytest.skip(f"no CUDA device ({CUDA_ON_CPU_VARIABLE}=1 runs the CUDA tests on the CPU)")
    if CUDA_TEST_DEVICE == "cuda":
        yield "cuda"
    else:
        with cuda_plan_on_cpu():
            yield "cpu"


@pytest.fixture
def cuda_device():
    """The device under test of a CUDA test (see cuda_device_under_test)."""
    with cuda_device_under_test() as device:
        yield device


# ---- TF32 and the precision flags -------------------------------------------------------
# PyTorch >= 2.9 has two APIs for TF32: the legacy flags (torch.backends.cuda.
# matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.flags(),
# torch.backends.mkldnn.flags()) and the current one (torch.backends[.cuda.matmul |
# .cudnn.conv | .cudnn.rnn | .mkldnn.*].fp32_precision). The legacy getters raise
# ("a mix of the legacy and new APIs") once the two disagree. The tests use the
# current API only, and every test restores what it changed (checked below).

@contextlib.contextmanager
def float32_ieee():
    """float32 GEMMs on CUDA in IEEE float32 (no TF32), through the current API
    only; restored after. (The references run in float64: cuDNN's TF32 never
    matters.)"""
    saved = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved


@pytest.fixture
def no_tf32():
    with float32_ieee():
        yield


_backends = torch.backends
_PRECISION_FLAGS = {
    # the current API (its getters never raise)
    "backends.fp32_precision": lambda: _backends.fp32_precision,
    "backends.cuda.matmul.fp32_precision": lambda: _backends.cuda.matmul.fp32_precision,
    "backends.cudnn.fp32_precision": lambda: _backends.cudnn.fp32_precision,
    "backends.cudnn.conv.fp32_precision": lambda: _backends.cudnn.conv.fp32_precision,
    "backends.cudnn.rnn.fp32_precision": lambda: _backends.cudnn.rnn.fp32_precision,
    "backends.mkldnn.fp32_precision": lambda: _backends.mkldnn.fp32_precision,
    "backends.mkldnn.matmul.fp32_precision": lambda: _backends.mkldnn.matmul.fp32_precision,
    "backends.mkldnn.conv.fp32_precision": lambda: _backends.mkldnn.conv.fp32_precision,
    "backends.mkldnn.rnn.fp32_precision": lambda: _backends.mkldnn.rnn.fp32_precision,
    # the legacy getters (they raise once the APIs are mixed)
    "backends.cuda.matmul.allow_tf32": lambda: _backends.cuda.matmul.allow_tf32,
    "backends.cudnn.allow_tf32": lambda: _backends.cudnn.allow_tf32,
    "get_float32_matmul_precision()": torch.get_float32_matmul_precision,
    # the other flags cudnn.flags() / mkldnn.flags() set
    "backends.cudnn.enabled": lambda: _backends.cudnn.enabled,
    "backends.cudnn.benchmark": lambda: _backends.cudnn.benchmark,
    "backends.cudnn.deterministic": lambda: _backends.cudnn.deterministic,
    "backends.mkldnn.enabled": lambda: _backends.mkldnn.enabled,
    "backends.mkldnn.deterministic": lambda: _backends.mkldnn.deterministic,
}


def precision_flags() -> dict:
    """PyTorch's precision and backend flags ("raises: ..." for a getter that raises)."""
    state = {}
    for name, get in _PRECISION_FLAGS.items():
        try:
            state[name] = get()
        except RuntimeError as error:
            state[name] = f"raises: {str(error).splitlines()[0][:100]}"
    return state


@pytest.fixture(autouse=True)
def precision_flags_unchanged():
    """Every test leaves PyTorch's precision flags as it found them: a test that
    leaks TF32 settings (or mixes the APIs) fails here, not some later test."""
    before = precision_flags()
    yield
    after = precision_flags()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if changed:
        pytest.fail(f"the test left PyTorch's precision flags changed (before, after): {changed}", pytrace=False)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = ""):
    """max |actual - expected| <= rel * max |expected| (plus a tiny floor)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.numel() == 0:
        return
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    scale = e.abs().max().item()
    err = (a - e).abs().max().item()
    assert err <= rel * scale + 1e-300, f"{what}: max error {err:.3e} > {rel:.1e} * {scale:.3e}"


@dataclass(frozen=True)
class ConvConfig:
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool

    def __str__(self):
        return (
            f"N{self.n}_C{self.c_in}-{self.c_out}_{self.h}x{self.w}_k{self.kernel[0]}x{self.kernel[1]}"
            f"_s{self.stride[0]}{self.stride[1]}_p{self.padding[0]}{self.padding[1]}"
            f"_d{self.dilation[0]}{self.dilation[1]}_g{self.groups}{'_b' if self.bias else ''}"
        )

    def tensors(self, dtype=torch.float64, device="cpu", requires_grad=False, generator=None):
        g = generator or torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
        x = torch.randn(self.n, self.c_in, self.h, self.w, generator=g, dtype=torch.float64)
        wt = torch.randn(self.c_out, self.c_in // self.groups, *self.kernel, generator=g, dtype=torch.float64)
        b = torch.randn(self.c_out, generator=g, dtype=torch.float64) if self.bias else None
        out = [t.to(device=device, dtype=dtype) if t is not None else None for t in (x, wt, b)]
        if requires_grad:
            for t in out:
                if t is not None:
                    t.requires_grad_(True)
        return out

    def args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


def random_config(rng: random.Random) -> ConvConfig:
    kind = rng.choice(["1", "2", "3", "depthwise"])
    if kind == "depthwise":
        c_in = rng.randint(1, 12)
        groups, c_out = c_in, c_in * rng.choice([1, 2]) if c_in <= 6 else c_in
    else:
        groups = int(kind)
        c_in = groups * rng.randint(1, 12 // groups)
        c_out = groups * rng.randint(1, 12 // groups)
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    if rng.random() < 0.3:
        kernel = (kernel[0], kernel[0])
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 3), rng.randint(0, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    # Spatial sizes large enough for the dilated kernel to fit the padded input.
    def size(k, p, d):
        need = max(1, d * (k - 1) + 1 - 2 * p)
        return rng.randint(need, need + 8)
    h, w = size(kernel[0], padding[0], dilation[0]), size(kernel[1], padding[1], dilation[1])
    return ConvConfig(
        n=rng.randint(0, 4), c_in=c_in, c_out=c_out, h=h, w=w, kernel=kernel, stride=stride,
        padding=padding, dilation=dilation, groups=groups, bias=rng.random() < 0.5,
    )


def config_grid(count: int, seed: int) -> List[ConvConfig]:
    rng = random.Random(seed)
    return [random_config(rng) for _ in range(count)]


# The grids every parity test file uses (seeded: the same configurations on every run).
FORWARD_GRID = config_grid(320, seed=2024)
BACKWARD_GRID = config_grid(72, seed=7)
