"""Side-by-side speed of myconv against what a PyTorch user would compare it
with, measured in one process:

* ``F.conv``        ``F.conv1d`` / ``F.conv2d`` / ``F.conv3d``: oneDNN on the CPU,
                    cuDNN on a GPU (``F.conv_transposeNd`` for transposed layers);
* ``aten-im2col``   ATen's own fallback, im2col / vol2col + GEMM (``F.convNd``
                    with oneDNN / cuDNN disabled: ``slow_conv2d`` (1-D and 2-D),
                    ``slow_conv3d``, ``slow_conv_transpose2d`` / ``3d``);
* ``unfold+mm``     the seed tutorials' recipe (``F.unfold`` + matmul; for
                    transposed layers matmul + ``F.fold``; 2-D, groups 1);
* ``gemm``          the bare GEMM(s) of the same M, N, K on ready operands: the
                    limit of the im2col + GEMM algorithm (forward: one GEMM;
                    forward+backward: the three GEMMs of forward, grad_input and
                    grad_weight).

    python -m myconv.benchmark                          # CPU, the ResNet-18-style suite
    python -m myconv.benchmark --layers 3x3-56,1x1      # a subset (see --list)
    python -m myconv.benchmark --threads 1 --channels-last --out bench/
    python -m myconv.benchmark --device cuda --dtype float16
    python -m myconv.benchmark --suite decoder          # transposed convolutions
    python -m myconv.benchmark --suite audio            # 1-D: wav2vec-style, a dilated TCN layer
    python -m myconv.benchmark --suite video            # 3-D: C3D / R3D layers, a stem, a 3-D U-Net layer

Ratios are ``other time / myconv time``: above 1, myconv is faster. Times are
medians over blocks of calls (each block >= 10 ms); the implementations'
blocks are interleaved in rounds, so that a noisy neighbour slows every
implementation alike. ``--out DIR`` writes ``benchmark.md`` (the table),
``benchmark.json`` (every raw sample and the machine) and ``benchmark.png``
(the ratios as bars).
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from . import _library
from . import functional as myconv_functional

_Size = Union[int, Tuple[int, ...]]


@dataclass(frozen=True)
class Layer:
    """A convolution layer of `dims` spatial dimensions; size, kernel, stride,
    padding, dilation and output_padding are an int (every axis) or one entry
    per axis."""
    key: str
    name: str
    n: int
    c_in: int
    c_out: int
    size: _Size
    kernel: _Size
    stride: _Size = 1
    padding: _Size = 0
    dilation: _Size = 1
    groups: int = 1
    transposed: bool = False  # a transposed convolution (conv_transposeNd)
    output_padding: _Size = 0
    dims: int = 2

    def axes(self, v: _Size) -> Tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * self.dims

    def args(self):
        a = dict(stride=self.axes(self.stride), padding=self.axes(self.padding), dilation=self.axes(self.dilation),
                 groups=self.groups)
        if self.transposed:
            a["output_padding"] = self.axes(self.output_padding)
        return a

    @property
    def out_sizes(self) -> Tuple[int, ...]:
        size, k, s, p, d = (self.axes(v) for v in (self.size, self.kernel, self.stride, self.padding, self.dilation))
        if self.transposed:
            op = self.axes(self.output_padding)
            return tuple((size[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in range(self.dims))
        return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(self.dims))

    def input_shape(self):
        return (self.n, self.c_in) + self.axes(self.size)

    def output_shape(self):
        return (self.n, self.c_out) + self.out_sizes

    def weight_shape(self):
        if self.transposed:
            return (self.c_in, self.c_out // self.groups) + self.axes(self.kernel)
        return (self.c_out, self.c_in // self.groups) + self.axes(self.kernel)

    def gemm_sizes(self):
        """(groups, M, N, K) of the convolution's forward GEMM W[g] @ cols[g]:
        M = output channels per group, N = batch * output positions, K = input
        channels per group * taps. A transposed convolution is that
        convolution's input gradient: the same three GEMMs, the convolution
        running from its output (the transposed one's input) back."""
        taps = math.prod(self.axes(self.kernel))
        if self.transposed:
            return (self.groups, self.c_in // self.groups, self.n * math.prod(self.axes(self.size)),
                    self.c_out // self.groups * taps)
        return (self.groups, self.c_out // self.groups, self.n * math.prod(self.out_sizes),
                self.c_in // self.groups * taps)

    def flops(self, backward: bool) -> float:
        g, m, n, k = self.gemm_sizes()
        return 2.0 * g * m * n * k * (3 if backward else 1)


# ResNet-18-style layers at batch 8 (the suite), plus the seed layer.
SUITE = [
    Layer("stem", "stem 7x7/2 (3->64, 224)", 8, 3, 64, 224, 7, stride=2, padding=3),
    Layer("3x3-56", "3x3 (64->64, 56)", 8, 64, 64, 56, 3, padding=1),
    Layer("3x3-28", "3x3 (128->128, 28)", 8, 128, 128, 28, 3, padding=1),
    Layer("3x3-14", "3x3 (256->256, 14)", 8, 256, 256, 14, 3, padding=1),
    Layer("3x3-7", "3x3 (512->512, 7)", 8, 512, 512, 7, 3, padding=1),
    Layer("3x3s2", "3x3/2 (64->128, 56)", 8, 64, 128, 56, 3, stride=2, padding=1),
    Layer("1x1s2", "1x1/2 downsample (64->128, 56)", 8, 64, 128, 56, 1, stride=2),
    Layer("1x1", "1x1 (256->64, 56)", 8, 256, 64, 56, 1),
    Layer("dw3x3", "depthwise 3x3 (128, 28)", 8, 128, 128, 28, 3, padding=1, groups=128),
    Layer("dil3x3", "dilated 3x3 d2 (64->64, 28)", 8, 64, 64, 28, 3, padding=2, dilation=2),
    Layer("seed", "seed 3x3 (8->16, 32, batch 10)", 10, 8, 16, 32, 3),
]
SEED_LAYER = SUITE[-1]

# The transposed convolutions of a small decoder (DCGAN / U-Net style), batch 8.
DECODER = [
    Layer("t4x4-8", "transposed 4x4/2 (256->128, 8->16)", 8, 256, 128, 8, 4, stride=2, padding=1, transposed=True),
    Layer("t4x4-16", "transposed 4x4/2 (128->64, 16->32)", 8, 128, 64, 16, 4, stride=2, padding=1, transposed=True),
    Layer("t3x3-32", "transposed 3x3/2 op1 (64->32, 32->64)", 8, 64, 32, 32, 3, stride=2, padding=1,
          transposed=True, output_padding=1),
    Layer("t2x2-28", "transposed 2x2/2 (128->64, 28->56)", 8, 128, 64, 28, 2, stride=2, transposed=True),
    Layer("t3x3-64", "transposed 3x3 head (32->3, 64)", 8, 32, 3, 64, 3, padding=1, transposed=True),
]
# 1-D: a wav2vec 2.0-style feature encoder's first two layers on 1 s of 16 kHz
# audio, and a dilated temporal-convolution (TCN) layer; batch 8.
AUDIO = [
    Layer("w2v-1", "wav2vec k10/5 (1->512, 16000)", 8, 1, 512, 16000, 10, stride=5, dims=1),
    Layer("w2v-2", "wav2vec k3/2 (512->512, 3199)", 8, 512, 512, 3199, 3, stride=2, dims=1),
    Layer("tcn", "TCN k3 d4 (256->256, 1024)", 8, 256, 256, 1024, 3, padding=4, dilation=4, dims=1),
]

# 3-D: C3D / R3D-18-style layers of 16-frame 112x112 clips (stem, then
# 3x3x3 layers as the clip shrinks), and a 3-D U-Net layer at 32^3; batch 2.
VIDEO = [
    Layer("r3d-stem", "R3D stem (3,7,7)/(1,2,2) (3->64, 16x112x112)", 2, 3, 64, (16, 112, 112), (3, 7, 7),
          stride=(1, 2, 2), padding=(1, 3, 3), dims=3),
    Layer("3x3x3-56", "3x3x3 (64->64, 16x56x56)", 2, 64, 64, (16, 56, 56), 3, padding=1, dims=3),
    Layer("3x3x3s2", "3x3x3/2 (64->128, 16x56x56)", 2, 64, 128, (16, 56, 56), 3, stride=2, padding=1, dims=3),
    Layer("3x3x3-28", "3x3x3 (128->128, 8x28x28)", 2, 128, 128, (8, 28, 28), 3, padding=1, dims=3),
    Layer("3x3x3-14", "3x3x3 (256->256, 4x14x14)", 2, 256, 256, (4, 14, 14), 3, padding=1, dims=3),
    Layer("1x1x1s2", "1x1x1/2 downsample (64->128, 16x56x56)", 2, 64, 128, (16, 56, 56), 1, stride=2, dims=3),
    Layer("unet3d", "3-D U-Net 3x3x3 (32->32, 32^3)", 2, 32, 32, 32, 3, padding=1, dims=3),
]

# Small calls, where the fixed cost of a call shows: a 1x1 convolution of a
# 1x1x4x4 image (almost nothing but that cost), and the convolutions of the
# training script's model (myconv.train: 8x8 digits, batch 64).
SMALL = [
    Layer("tiny", "tiny 1x1 (1->1, 4x4, batch 1)", 1, 1, 1, 4, 1),
    Layer("digits-1", "digits 3x3 (1->32, 8, batch 64)", 64, 1, 32, 8, 3, padding=1),
    Layer("digits-2", "digits 3x3/2 (32->64, 8, batch 64)", 64, 32, 64, 8, 3, stride=2, padding=1),
    Layer("digits-res", "digits 3x3 (64->64, 4, batch 64)", 64, 64, 64, 4, 3, padding=1),
    Layer("digits-3", "digits 3x3/2 (64->128, 4, batch 64)", 64, 64, 128, 4, 3, stride=2, padding=1),
]

SUITES = {"resnet": SUITE, "decoder": DECODER, "audio": AUDIO, "video": VIDEO, "small": SMALL,
          "all": SUITE + DECODER + AUDIO + VIDEO + SMALL}
LAYERS = {layer.key: layer for layer in SUITE + DECODER + AUDIO + VIDEO + SMALL}


def unfold_matmul(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """The seed tutorials' recipe: F.unfold + matmul + view (2-D, groups == 1 only)."""
    stride, padding, dilation = (torch.nn.modules.utils._pair(v) for v in (stride, padding, dilation))
    k = w.shape[2:]
    out_size = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(2)]
    cols = F.unfold(x, k, dilation, padding, stride)
    out = w.view(w.shape[0], -1) @ cols
    if b is not None:
        out = out + b.view(1, -1, 1)
    return out.view(x.shape[0], w.shape[0], *out_size)


@contextmanager
def aten_im2col_flags():
    """ATen's own im2col / vol2col convolution (slow_conv2d, slow_conv3d, ...):
    F.convNd with oneDNN and cuDNN switched off, for the forward and the
    backward call alike.

    Only the two ``enabled`` switches change. Not through
    ``torch.backends.cudnn.flags()`` / ``mkldnn.flags()``: those also set
    (and on exit restore) the TF32 flags through the legacy API, whose cuDNN
    getter raises once the current precision API has been used ("a mix of
    the legacy and new APIs": with torch 2.14 it raises as soon as cuDNN's
    conv or RNN precision is "ieee"), and they would switch the ATen
    comparator's GEMMs to the default precision."""
    saved = (torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled)
    try:
        torch.backends.mkldnn.enabled = False
        torch.backends.cudnn.enabled = False
        yield
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled = saved


@contextmanager
def cuda_fp32_precision(tf32: bool):
    """Float32 on CUDA for every implementation: TF32 allowed (``tf32``) or
    not ("ieee"), for cuBLAS matmuls and cuDNN convolutions alike, set and
    restored through PyTorch's current precision API only (nothing here, and
    nothing the benchmark runs, reads the legacy TF32 getters, which raise
    once this API has been used). Works without a GPU: the flags are process
    settings."""
    precision = "tf32" if tf32 else "ieee"
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    try:
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def matmul_fold(x, w, b, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The seed's transposed convolution: matmul + F.fold (col2im) (2-D, groups == 1 only)."""
    stride, padding, output_padding, dilation = (torch.nn.modules.utils._pair(v)
                                                 for v in (stride, padding, output_padding, dilation))
    n, c_in, h, wd = x.shape
    k = w.shape[2:]
    size = [(s - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + output_padding[i] + 1
            for i, s in enumerate((h, wd))]
    cols = w.view(c_in, -1).t() @ x.view(n, c_in, h * wd)
    out = F.fold(cols, size, k, dilation, padding, stride)
    return out if b is None else out + b.view(1, -1, 1, 1)


def _functional(module, layer: Layer):
    """module's conv1d / conv2d / conv3d or conv_transposeNd for the layer."""
    return getattr(module, f"conv_transpose{layer.dims}d" if layer.transposed else f"conv{layer.dims}d")


# name: (the layer's function with F.convNd's signature, or None where the
#        implementation has none; the context the whole call runs in)
IMPLEMENTATIONS: Dict[str, tuple] = {
    "myconv": (lambda layer: _functional(myconv_functional, layer), nullcontext),
    "F.conv": (lambda layer: _functional(F, layer), nullcontext),
    "aten-im2col": (lambda layer: _functional(F, layer), aten_im2col_flags),
    "unfold+mm": (lambda layer: (matmul_fold if layer.transposed else unfold_matmul)
                  if layer.dims == 2 and layer.groups == 1 else None, nullcontext),
}
COMPARATORS = ["F.conv", "aten-im2col", "unfold+mm", "gemm"]


def timed_blocks(fns: Dict[str, Callable[[], object]], device: str, min_run_time: float,
                 min_rounds: int = 5) -> Dict[str, List[float]]:
    """Seconds per call of each fn, one sample per block of calls (>= 10 ms),
    blocks interleaved round by round. CUDA is synchronised per block."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def block(fn, calls: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        return (time.perf_counter() - start) / calls

    calls = {}
    for name, fn in fns.items():
        block(fn, 1)  # warm up (allocator, caches, lazy initialisation)
        calls[name] = max(1, int(0.01 / max(block(fn, 1), 1e-7)))
    samples = {name: [] for name in fns}
    deadline = time.perf_counter() + min_run_time * len(fns)
    while time.perf_counter() < deadline or len(samples[next(iter(fns))]) < min_rounds:
        for name, fn in fns.items():
            samples[name].append(block(fn, calls[name]))
    return samples


def peak_cuda_bytes(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def bare_gemm(layer: Layer, device: str, dtype, backward: bool) -> Callable[[], object]:
    """The GEMMs myconv's algorithm cannot avoid, on operands made beforehand.
    Convolution: forward W[g] @ cols[g]; backward adds W[g]^T @ gy[g] and
    gy[g] @ cols[g]^T. Transposed convolution (the convolution's input
    gradient): forward W[g]^T @ x[g]; backward adds W[g] @ cols[g] and
    x[g] @ cols[g]^T."""
    g, m, n, k = layer.gemm_sizes()
    gen = torch.Generator().manual_seed(1)
    make = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)  # noqa: E731
    w, cols, y = make(g, m, k), make(g, k, n), make(g, m, n)
    out_mn, out_kn, out_mk = (torch.empty(g, a, b, device=device, dtype=dtype) for a, b in ((m, n), (k, n), (m, k)))

    def run():
        if layer.transposed:
            torch.bmm(w.transpose(1, 2), y, out=out_kn)
            if backward:
                torch.bmm(w, cols, out=out_mn)
                torch.bmm(y, cols.transpose(1, 2), out=out_mk)
            return out_kn
        torch.bmm(w, cols, out=out_mn)
        if backward:
            torch.bmm(w.transpose(1, 2), y, out=out_kn)
            torch.bmm(y, cols.transpose(1, 2), out=out_mk)
        return out_mn

    return run


def measure(layer: Layer, device: str = "cpu", dtype=torch.float32, backward: bool = False,
            min_run_time: float = 0.3, channels_last: bool = False,
            compare: Sequence[str] = tuple(COMPARATORS)) -> Dict[str, dict]:
    """{implementation: {"samples": [seconds per call, ...], "seconds": median,
    "peak_bytes": CUDA peak or None}}: myconv and the comparators in `compare`."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(layer.input_shape(), generator=g).to(device, dtype)
    w = torch.randn(layer.weight_shape(), generator=g).to(device, dtype)
    b = torch.randn(layer.c_out, generator=g).to(device, dtype)
    memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if channels_last and memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    gy = torch.randn(layer.output_shape(), generator=g).to(device, dtype)
    if channels_last and memory_format is not None:
        gy = gy.contiguous(memory_format=memory_format)
    if backward:
        for t in (x, w, b):
            t.requires_grad_(True)

    runs = {}
    for name, (function_of, context) in IMPLEMENTATIONS.items():
        impl = function_of(layer) if name == "myconv" or name in compare else None
        if impl is None:
            continue

        def run(impl=impl, context=context):
            with context():
                y = impl(x, w, b, **layer.args())
                if backward:
                    return torch.autograd.grad(y, (x, w, b), gy)
                return y

        runs[name] = run
    if "gemm" in compare:
        runs["gemm"] = bare_gemm(layer, device, dtype, backward)
    samples = timed_blocks(runs, device, min_run_time)
    return {name: {"samples": samples[name], "seconds": statistics.median(samples[name]),
                   "peak_bytes": peak_cuda_bytes(run) if device == "cuda" else None}
            for name, run in runs.items()}


def geomean(values: List[float]) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def ratio(res: dict, other: str) -> Optional[float]:
    """other time / myconv time (> 1: myconv is faster)."""
    if other not in res:
        return None
    return res[other]["seconds"] / res["myconv"]["seconds"]


def format_markdown(rows: List[dict]) -> str:
    """The table: one line per layer and pass (and, on CUDA, one of peak
    memory), then the geometric means per pass; with rows of several devices,
    a device column, and the means per device."""
    devices = list(dict.fromkeys(row["device"] for row in rows))
    several = len(devices) > 1

    def fmt_ratio(r):
        return "n/a" if r is None else f"{r:.2f}"

    lead, lead_rule = ("| device ", "|---") if several else ("", "")
    lines = [
        lead + "| layer | pass | myconv ms | GFLOP/s | F.convNd ms | aten-im2col ms | unfold+mm ms | gemm ms "
        "| vs F.convNd | vs aten-im2col | vs unfold+mm | vs gemm |",
        lead_rule + "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        res = row["results"]
        cell = f"| {row['device']} " if several else ""
        ms = {k: v["seconds"] * 1e3 for k, v in res.items()}
        gflops = row["flops"] / res["myconv"]["seconds"] / 1e9
        cells = [f"{ms[k]:.3f}" if k in ms else "n/a" for k in COMPARATORS]
        ratios = [fmt_ratio(ratio(res, k)) for k in COMPARATORS]
        lines.append(cell + f"| {row['layer']['name']} | {row['pass']} | {ms['myconv']:.3f} | {gflops:.1f} | "
                     + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        peaks = {k: v["peak_bytes"] / 2**20 for k, v in res.items() if v["peak_bytes"] is not None}
        if peaks:
            lines.append(("| " if several else "") + "| | peak MiB | "
                         + f"{peaks.get('myconv', float('nan')):.1f} | | "
                         + " | ".join(f"{peaks[k]:.1f}" if k in peaks else "n/a" for k in COMPARATORS)
                         + " | | | | |")
    for device in devices:
        for pass_name in ("forward", "fwd+bwd"):
            sel = [r for r in rows if r["pass"] == pass_name and r["device"] == device]
            if not sel:
                continue
            gm = [geomean([ratio(r["results"], k) or float("nan") for r in sel]) for k in COMPARATORS]
            lines.append((f"| {device} " if several else "") + f"| **geometric mean** | {pass_name} | | | | | | | "
                         + " | ".join(f"**{v:.2f}**" if math.isfinite(v) else "n/a" for v in gm) + " |")
    return "\n".join(lines)


def machine_info(device: str) -> dict:
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_gemm_engine": _library.get_cpu_gemm_engine(),
        "tile_bytes": _library.get_tile_bytes(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        caches = {}
        base = "/sys/devices/system/cpu/cpu0/cache"
        for entry in sorted(os.listdir(base)):
            if entry.startswith("index"):
                read = lambda f: open(os.path.join(base, entry, f)).read().strip()  # noqa: E731
                caches[f"L{read('level')} {read('type')}"] = read("size")
        info["caches"] = caches
    except OSError:
        pass
    info["blas"] = "MKL" if torch.backends.mkl.is_available() else "other"
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def plot(rows: List[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(dict.fromkeys(r["device"] for r in rows))
    panels = [(d, p) for d in devices for p in ("forward", "fwd+bwd")
              if any(r["pass"] == p and r["device"] == d for r in rows)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.2 * len(panels)), squeeze=False)
    for ax, (device, pass_name) in zip(axes[:, 0], panels):
        sel = [r for r in rows if r["pass"] == pass_name and r["device"] == device]
        labels = [r["layer"]["key"] for r in sel] + ["geomean"]
        width = 0.8 / len(COMPARATORS)
        for i, other in enumerate(COMPARATORS):
            vals = [ratio(r["results"], other) or 0.0 for r in sel]
            vals.append(geomean([v for v in vals if v > 0]))
            xs = [j + (i - (len(COMPARATORS) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, vals, width, label=f"{other} time / myconv time")
        ax.axhline(1.0, color="black", linewidth=0.8)
        # a log axis: ratios of 0.5 and 2 are as far from 1, and one large
        # ratio (depthwise against ATen) does not flatten the others
        ax.set_yscale("log")
        ax.set_ylim(min(0.1, ax.get_ylim()[0]), max(10.0, ax.get_ylim()[1]))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20)
        ax.set_ylabel("speed ratio, log scale (> 1: myconv faster)")
        ax.set_title(f"{title} — {device}, {pass_name}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def device_header(info: dict) -> str:
    """One line saying what a device's rows were measured on."""
    if info["device"] == "cuda":
        where = f"cuda ({info.get('gpu')}, float32 matmul / cuDNN conv precision {info.get('fp32_precision')})"
    else:
        where = (f"cpu ({info.get('cpu', '?')}), {info['threads']} threads, CPU GEMM engine {info['cpu_gemm_engine']}"
                 + (f", tile {info['tile_bytes']} B" if info.get("tile_bytes") else ""))
    return f"torch {info['torch']}, {where}, {info['dtype']}{', channels_last' if info['channels_last'] else ''}"


def parse_devices(device: Union[str, Sequence[str]]) -> List[str]:
    """'cpu', 'cuda', or several ('cpu,cuda' or a list), each once; ValueError otherwise."""
    devices = [d.strip() for d in (device.split(",") if isinstance(device, str) else device)]
    unknown = [d for d in devices if d not in ("cpu", "cuda")]
    if unknown or not devices:
        raise ValueError(f"--device expects cpu, cuda or a list of them (cpu,cuda); got {device!r}")
    return list(dict.fromkeys(devices))


def run(layers: Optional[List[Layer]] = None, device: Union[str, Sequence[str]] = "cpu", dtype=torch.float32,
        min_run_time: float = 0.3, channels_last: bool = False, passes=("forward", "fwd+bwd"),
        out_dir: Optional[str] = None, progress: bool = True, print_fn=print,
        compare: Sequence[str] = tuple(COMPARATORS)) -> List[dict]:
    """Measures every layer and pass on each device ("cpu", "cuda" or a list:
    one table with the devices side by side; CUDA is skipped, saying so, where
    there is no device); prints the Markdown table; with out_dir, writes
    benchmark.md, benchmark.json and benchmark.png there."""
    layers = layers or SUITE
    devices, skipped = [], {}
    for d in parse_devices(device):
        if d == "cuda" and not torch.cuda.is_available():
            skipped[d] = "no CUDA device: skipped"
        else:
            devices.append(d)
    jobs = [(d, layer, p) for d in devices for layer in layers for p in passes]
    bar = None
    if progress and jobs:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="benchmark", unit="case", file=sys.stderr)
        except ImportError:
            bar = None
    rows = []
    for d, layer, pass_name in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{d} {layer.key} {pass_name}")
        backward = pass_name == "fwd+bwd"
        res = measure(layer, d, dtype, backward, min_run_time, channels_last, compare)
        rows.append({"device": d, "layer": asdict(layer), "pass": pass_name, "flops": layer.flops(backward),
                     "results": res})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    infos = {}
    for d in devices:
        info = machine_info(d)
        info.update(device=d, dtype=str(dtype).replace("torch.", ""), channels_last=channels_last,
                    min_run_time=min_run_time)
        if d == "cuda":
            info["fp32_precision"] = (f"{torch.backends.cuda.matmul.fp32_precision} / "
                                      f"{torch.backends.cudnn.conv.fp32_precision}")
        infos[d] = info
    lines = [device_header(info) for info in infos.values()]
    lines += [f"{d}: {why}" for d, why in skipped.items()]
    header = "\n".join(lines) + "\nmedian ms; ratios = other time / myconv time (> 1: myconv faster)"
    table = format_markdown(rows) if rows else "(nothing measured)"
    print_fn(header + "\n\n" + table)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "benchmark.md"), "w") as f:
            f.write(header + "\n\n" + table + "\n")
        # "machine": the first device's (the only one for a single device); "devices": each one's
        machine = next(iter(infos.values()), {})
        with open(os.path.join(out_dir, "benchmark.json"), "w") as f:
            json.dump({"machine": machine, "devices": infos, "skipped": skipped, "rows": rows}, f, indent=1)
        if rows:
            dt = machine.get("dtype", "")
            plot(rows, os.path.join(out_dir, "benchmark.png"),
                 f"myconv vs others, {dt}{', channels_last' if channels_last else ''}")
    return rows


def parse_batches(spec: Optional[str]) -> List[Optional[int]]:
    """--batch: one size or a comma-separated list (None: each layer's own)."""
    if not spec:
        return [None]
    try:
        batches = [int(b) for b in spec.split(",")]
    except ValueError:
        raise SystemExit(f"--batch expects integers, like 8 or 1,8,32; got {spec!r}")
    if any(b < 0 for b in batches):
        raise SystemExit("--batch sizes must be >= 0")
    return batches


def parse_layers(spec: Optional[str], batch: Optional[int], suite: str = "resnet") -> List[Layer]:
    layers = SUITES[suite]
    if spec:
        unknown = [k for k in spec.split(",") if k not in LAYERS]
        if unknown:
            raise SystemExit(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
        layers = [LAYERS[k] for k in spec.split(",")]
    if batch is not None:
        layers = [replace(layer, n=batch) for layer in layers]
    return layers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda, or both side by side in one table: cpu,cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--suite", default="resnet", choices=sorted(SUITES),
                        help="resnet: ResNet-18-style layers and the seed layer (default); decoder: the "
                             "transposed convolutions of a small decoder; audio: 1-D layers; video: 3-D "
                             "layers; small: a tiny call and the training script's layers (the fixed cost of a call); "
                             "all: every suite")
    parser.add_argument("--layers", help="comma-separated layer keys (default: the whole suite)")
    parser.add_argument("--list", action="store_true", help="list the layers and exit")
    parser.add_argument("--quick", action="store_true", help="only the seed layer")
    parser.add_argument("--batch", help="batch size of every layer, or a comma-separated list (1,8,32): one "
                                        "run each, written to --out/batch-N/ when there are several")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--cpu-gemm-engine", choices=["auto", "onednn", "blas", "aten"],
                        help="myconv's CPU GEMM engine for this run (myconv.set_cpu_gemm_engine; default: "
                             "the current setting, auto unless set)")
    parser.add_argument("--tile-bytes", type=int,
                        help="myconv's CPU column-tile size for this run (myconv.set_tile_bytes; default: the "
                             "current setting, 0 = from the L2 cache)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last inputs")
    parser.add_argument("--pass", dest="passes", default="forward,fwd+bwd",
                        help="forward, fwd+bwd or both (default)")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per implementation and case")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (for every implementation)")
    parser.add_argument("--compare", default=",".join(COMPARATORS),
                        help="the implementations timed next to myconv (default: all of "
                             f"{','.join(COMPARATORS)}); fewer for a quick run")
    parser.add_argument("--cuda-tuning", help="overrides of myconv's CUDA plan choices for this run, "
                                              "key=value,... (myconv.set_cuda_tuning), to time a choice "
                                              "against its alternative")
    parser.add_argument("--out", help="directory for benchmark.md / .json / .png")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for suite in (s for s in SUITES if s != "all"):
            print(f"{suite}:")
            for layer in SUITES[suite]:
                print(f"  {layer.key:8s} {layer.name}")
        return
    try:
        devices = parse_devices(args.device)
    except ValueError as e:
        raise SystemExit(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = parse_batches(args.batch)
    compare = tuple(c for c in args.compare.split(",") if c)
    if set(compare) - set(COMPARATORS):
        raise SystemExit(f"--compare: unknown {sorted(set(compare) - set(COMPARATORS))}; known: {', '.join(COMPARATORS)}")
    engine, tile_bytes = _library.get_cpu_gemm_engine(), _library.get_tile_bytes()
    cuda_tuning = torch.ops.myconv._get_cuda_tuning()
    # TF32 on CUDA as asked, for every implementation (restored after)
    precision = cuda_fp32_precision(args.tf32) if "cuda" in devices else nullcontext()
    try:
        if args.cpu_gemm_engine:
            _library.set_cpu_gemm_engine(args.cpu_gemm_engine)
        if args.tile_bytes is not None:
            _library.set_tile_bytes(args.tile_bytes)
        if args.cuda_tuning:
            try:
                _library.set_cuda_tuning(args.cuda_tuning)
            except RuntimeError as e:
                raise SystemExit(str(e).splitlines()[0])
            print(f"myconv's CUDA plan with {args.cuda_tuning}: {torch.ops.myconv._get_cuda_tuning()}\n")
        with precision:
            for batch in batches:
                layers = parse_layers(SEED_LAYER.key if args.quick else args.layers, batch, args.suite)
                out = args.out
                if out and len(batches) > 1:
                    out = os.path.join(out, f"batch-{batch}")
                if len(batches) > 1:
                    print(f"\n## batch {batch}\n")
                rows = run(layers, devices, getattr(torch, args.dtype), args.min_run_time, args.channels_last,
                           tuple(args.passes.split(",")), out, progress=not args.no_progress, compare=compare)
                if not rows and layers:
                    raise SystemExit(f"nothing measured: no device of {','.join(devices)} is available")
    finally:
        # the caller's settings (main may be called in-process)
        _library.set_cpu_gemm_engine(engine)
        _library.set_tile_bytes(tile_bytes)
        _library.set_cuda_tuning(cuda_tuning)


if __name__ == "__main__":
    main()
