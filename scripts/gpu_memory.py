"""Peak CUDA memory of one forward+backward, predicted from the plan and measured
(issue 25, part 4), for scripts/gpu_check.sh.

For the profile's three layers (batch 32, float32 and float16), myconv's peak
above the inputs as the benchmark measures it (`peak_cuda_bytes`: x, w, b and
grad_output made beforehand), cuDNN's (F.conv2d) the same way, and the
prediction the host test makes from the plan
(tests/python/test_cuda_host_cost.py: the results, output, grad_input,
grad_weight and grad_bias, plus the largest workspace a pass asks for, from
`myconv.explain`, plus one more output-sized tensor, the gap between that
model and the 2026-12-04 measurement). Without a GPU it prints the
predictions alone. Prints a table; no assertions (the target: myconv at most
1.3x cuDNN). The measured column calibrates the model: where it differs from
the prediction, docs/gpu.md and the test's margin need the reason.
"""
import torch
import torch.nn.functional as F

import myconv
from myconv.benchmark import peak_cuda_bytes

# (name, input shape, weight shape, padding): the profile's layers, batch 32
LAYERS = [("64 56^2 k3", (32, 64, 56, 56), (64, 64, 3, 3), 1),
          ("256 14^2 k3", (32, 256, 14, 14), (256, 256, 3, 3), 1),
          ("1x1 256->64 56^2", (32, 256, 56, 56), (64, 256, 1, 1), 0)]


def predicted_bytes(x, w, b, padding):
    e = myconv.explain(x, w, b, padding=padding, device="cuda")
    y = F.conv2d(x.to("meta"), w.to("meta"), b.to("meta"), padding=padding)
    results = sum(t.numel() * t.element_size() for t in (y, x, w, b, y))  # (the output twice: see above)
    if x.dtype in (torch.float16, torch.bfloat16):
        results += w.numel() * 4  # grad_weight's float32 sum, rounded once at the end
    return results + max(p["workspace"]["total"] for p in e["forward"] + e["backward"])


def measured_bytes(conv, x, w, b, gy, padding):
    def step():
        y = conv(x, w, b, padding=padding)
        return torch.autograd.grad(y, (x, w, b), gy)

    step()  # cuBLAS / cuDNN handles and workspaces, the allocator's pools
    return peak_cuda_bytes(step)


def main():
    gpu = torch.cuda.is_available()
    if gpu:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    print("| layer | dtype | predicted MiB | myconv MiB | cuDNN MiB | myconv / cuDNN |")
    print("|---|---|---|---|---|---|")
    mib = 2.0 ** 20
    for name, xs, ws, padding in LAYERS:
        for dtype in (torch.float32, torch.float16):
            g = torch.Generator().manual_seed(0)
            device = "cuda" if gpu else "meta"
            make = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
            if not gpu:
                make = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
            x, w, b = make(*xs), make(*ws), make(ws[0])
            predicted = predicted_bytes(x, w, b, padding) / mib
            if not gpu:
                print(f"| {name} | {str(dtype)[6:]} | {predicted:.1f} | (no GPU) | | |")
                continue
            for t in (x, w, b):
                t.requires_grad_(True)
            gy = torch.randn(F.conv2d(x, w, b, padding=padding).shape, device="cuda", dtype=dtype)
            ours = measured_bytes(myconv.conv2d, x, w, b, gy, padding) / mib
            cudnn = measured_bytes(F.conv2d, x, w, b, gy, padding) / mib
            print(f"| {name} | {str(dtype)[6:]} | {predicted:.1f} | {ours:.1f} | {cudnn:.1f} | {ours / cudnn:.2f}x |")
            del x, w, b, gy
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
