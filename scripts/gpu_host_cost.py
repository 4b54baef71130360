"""Host cost of a CUDA convolution step (issue 24, part 3), for scripts/gpu_check.sh.

The seed layer (8->16, 32x32, 3x3, batch 32) forward+backward, myconv and
F.conv2d (cuDNN) side by side: wall time per step with 1 CPU thread and with
all of them, then a profile of a few myconv steps (CPU self time per ATen op,
CUDA runtime calls, kernels) at all threads. Prints a report; no assertions.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import myconv


def step_fn(conv, x, w, b, gy):
    def step():
        y = conv(x, w, b, padding=1)
        return torch.autograd.grad(y, (x, w, b), gy)
    return step


def wall_ms(step, seconds=1.0):
    for _ in range(20):
        step()
    torch.cuda.synchronize()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            step()
        calls += 20
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    g = torch.Generator().manual_seed(0)
    make = lambda *s: torch.randn(*s, generator=g).cuda().requires_grad_()  # noqa: E731
    x, w, b = make(32, 8, 32, 32), make(16, 8, 3, 3), make(16)
    gy = torch.randn(32, 16, 32, 32, device="cuda")
    steps = {"myconv": step_fn(myconv.conv2d, x, w, b, gy), "F.conv2d": step_fn(F.conv2d, x, w, b, gy)}
    every = os.cpu_count() or 1
    print(f"seed layer fwd+bwd, wall ms per step (torch {torch.__version__}, {torch.cuda.get_device_name()})")
    for threads in (1, every):
        torch.set_num_threads(threads)
        print(f"  {threads:3d} CPU threads: " + ", ".join(f"{k} {wall_ms(s):.3f}" for k, s in steps.items()))
    torch.set_num_threads(every)
    for name in ("myconv",):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                steps[name]()
            torch.cuda.synchronize()
        print(f"\n{name}, 5 steps at {every} threads:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
