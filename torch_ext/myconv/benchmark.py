"""Side-by-side speed of myconv against F.conv2d (oneDNN on CPU, cuDNN on GPU)
and the seed tutorials' unfold + matmul recipe, measured in one run.

    python -m myconv.benchmark                 # CPU, default layers
    python -m myconv.benchmark --device cuda   # GPU (also reports peak memory)
    python -m myconv.benchmark --quick         # the seed layer only

Ratios > 1 mean myconv is slower. Times are medians over blocks of calls
(each block at least 10 ms); the implementations' blocks are interleaved in
rounds, in one process, with the same thread count, so that machine noise hits
them alike.
"""
import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from .functional import conv2d as myconv_conv2d


@dataclass(frozen=True)
class Layer:
    name: str
    n: int
    c_in: int
    c_out: int
    size: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


SEED_LAYER = Layer("seed (10x8x32x32 -> 16, 3x3)", 10, 8, 16, 32, 3)
LAYERS = [
    SEED_LAYER,
    Layer("resnet 3x3 (8x64x28x28 -> 64, p1)", 8, 64, 64, 28, 3, padding=1),
    Layer("strided 3x3 (8x32x56x56 -> 64, s2 p1)", 8, 32, 64, 56, 3, stride=2, padding=1),
    Layer("pointwise 1x1 (8x128x14x14 -> 256)", 8, 128, 256, 14, 1),
    Layer("depthwise 3x3 (8x64x28x28, g64, p1)", 8, 64, 64, 28, 3, padding=1, groups=64),
    Layer("dilated 5x5 (4x16x40x40 -> 32, d2 p4)", 4, 16, 32, 40, 5, padding=4, dilation=2),
]


def unfold_matmul(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """The seed tutorials' recipe: F.unfold + matmul + view (groups == 1 only)."""
    n, _, h, wd = x.shape
    k = w.shape[-1]
    oh = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    cols = F.unfold(x, k, dilation, padding, stride)
    out = w.view(w.shape[0], -1) @ cols
    if b is not None:
        out = out + b.view(1, -1, 1)
    return out.view(n, w.shape[0], oh, ow)


IMPLEMENTATIONS: Dict[str, Callable] = {
    "myconv": myconv_conv2d,
    "F.conv2d": F.conv2d,
    "unfold+matmul": unfold_matmul,
}


def median_seconds(fns: Dict[str, Callable[[], object]], device: str,
                   min_run_time: float) -> Dict[str, float]:
    """Median time per call of each fn, measured side by side: rounds of one
    block of calls (>= 10 ms) per implementation, interleaved, so that a noisy
    neighbour slows every implementation alike. CUDA synchronised per block."""
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
        block(fn, 1)  # warm up
        calls[name] = max(1, int(0.01 / max(block(fn, 1), 1e-7)))
    samples = {name: [] for name in fns}
    deadline = time.perf_counter() + min_run_time * len(fns)
    while time.perf_counter() < deadline or len(samples[next(iter(fns))]) < 5:
        for name, fn in fns.items():
            samples[name].append(block(fn, calls[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def peak_cuda_bytes(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def measure(layer: Layer, device: str = "cpu", dtype=torch.float32, backward: bool = False,
            min_run_time: float = 0.3) -> Dict[str, dict]:
    """{implementation: {"seconds": median, "peak_bytes": CUDA peak or None}}."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(layer.n, layer.c_in, layer.size, layer.size, generator=g).to(device, dtype)
    w = torch.randn(layer.c_out, layer.c_in // layer.groups, layer.kernel, layer.kernel,
                    generator=g).to(device, dtype)
    b = torch.randn(layer.c_out, generator=g).to(device, dtype)
    if backward:
        for t in (x, w, b):
            t.requires_grad_(True)
    runs = {}
    for name, impl in IMPLEMENTATIONS.items():
        if name == "unfold+matmul" and layer.groups != 1:
            continue

        def run(impl=impl):
            y = impl(x, w, b, **layer.args())
            if backward:
                y.backward(torch.ones_like(y))
            return y

        runs[name] = run
    seconds = median_seconds(runs, device, min_run_time)
    results = {name: {"seconds": seconds[name],
                      "peak_bytes": peak_cuda_bytes(run) if device == "cuda" else None}
               for name, run in runs.items()}
    return results


def format_table(rows: List[tuple], device: str) -> str:
    lines = []
    header = (f"{'layer':40s} {'pass':8s} {'myconv ms':>10s} {'F.conv2d':>10s} {'unfold+mm':>10s} "
              f"{'vs F.conv2d':>12s} {'vs unfold':>10s}")
    lines.append(header)
    lines.append("-" * len(header))
    for layer, pass_name, res in rows:
        t = {k: v["seconds"] * 1e3 for k, v in res.items()}
        ours, unf = t["myconv"], t.get("unfold+matmul")
        lines.append(
            f"{layer.name:40s} {pass_name:8s} {ours:10.3f} {t['F.conv2d']:10.3f} "
            f"{(f'{unf:10.3f}' if unf else 'n/a'):>10s} "
            f"{t['myconv'] / t['F.conv2d']:11.2f}x "
            f"{(f'{ours / unf:9.2f}x' if unf else '      n/a'):>10s}"
        )
        if device == "cuda":
            peaks = {k: v["peak_bytes"] / 2**20 for k, v in res.items()}
            lines.append(f"{'':40s} {'peak MiB':8s} " + " ".join(f"{peaks.get(k, float('nan')):10.1f}" for k in IMPLEMENTATIONS))
    return "\n".join(lines)


def run(layers: Optional[List[Layer]] = None, device: str = "cpu", dtype=torch.float32,
        min_run_time: float = 0.3, print_fn=print) -> List[tuple]:
    layers = layers or LAYERS
    rows = []
    for layer in layers:
        for backward in (False, True):
            rows.append((layer, "fwd+bwd" if backward else "forward",
                         measure(layer, device, dtype, backward, min_run_time)))
    print_fn(format_table(rows, device))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true", help="only the seed layer")
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (for both sides)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f", {torch.get_num_threads()} threads")
          + f", dtype {args.dtype}; times in ms (median), ratio = myconv / other\n")
    run([SEED_LAYER] if args.quick else LAYERS, args.device, getattr(torch, args.dtype), args.min_run_time)


if __name__ == "__main__":
    main()
