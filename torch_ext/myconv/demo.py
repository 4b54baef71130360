"""What myconv is for, in under a minute:

  1. the seed tutorials' worked examples, exact values
  2. parity with F.conv1d / conv2d / conv3d on a few layers (max error)
  3. a float64 gradient check (torch.autograd.gradcheck)
  4. a side-by-side CPU speed comparison on the seed layer
  5. a short training run (3 epochs of python -m myconv.train on the digits)

    python -m myconv.demo
"""
import tempfile
import time

import torch
import torch.nn.functional as F

import myconv

from . import benchmark, train


def section(title: str):
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def seed_examples():
    section("1. Seed examples (exact values)")
    x = torch.arange(35.0).view(1, 1, 5, 7)
    k = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    out = torch.ops.myconv.conv2d(x, k, None, [1, 1], [1, 1], [1, 1], 1)
    expected = torch.tensor([[134, 211, 250, 289, 328, 367, 238], [333, 492, 537, 582, 627, 672, 423],
                             [564, 807, 852, 897, 942, 987, 612], [795, 1122, 1167, 1212, 1257, 1302, 801],
                             [422, 571, 592, 613, 634, 655, 382]], dtype=torch.float32)
    print("conv2d(arange(35).view(1,1,5,7), arange(1,10).view(1,1,3,3), padding=1):")
    print(out[0, 0].int())
    print("equals the seed's values:", torch.equal(out[0, 0], expected))
    x4 = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    w4 = torch.arange(1.0, 5.0).view(1, 1, 2, 2)
    print("conv2d(arange(1,17).view(1,1,4,4), [[1,2],[3,4]]):", myconv.conv2d(x4, w4)[0, 0].int().tolist(),
          "(seed: [[44, 54, 64], [84, 94, 104], [124, 134, 144]])")
    x1 = torch.arange(1.0, 37.0).view(1, 3, 12)
    w1 = torch.arange(1.0, 25.0).view(2, 3, 4)
    print("conv1d(arange(1,37).view(1,3,12), arange(1,25).view(2,3,4), stride=2):",
          myconv.conv1d(x1, w1, stride=2)[0].int().tolist(),
          "(seed: [[1530, 1686, 1842, 1998, 2154], [3618, 4062, 4506, 4950, 5394]])")


PARITY_LAYERS = [
    ("3x3, padding 1", (4, 8, 16, 16), (16, 8, 3, 3), dict(padding=1)),
    ("5x3, stride (2,1), dilation (1,2)", (2, 6, 15, 13), (4, 6, 5, 3), dict(stride=(2, 1), dilation=(1, 2))),
    ("grouped 3x3, groups 4", (3, 8, 12, 12), (12, 2, 3, 3), dict(padding=1, groups=4)),
    ("depthwise 3x3, stride 2", (2, 16, 20, 20), (16, 1, 3, 3), dict(stride=2, padding=1, groups=16)),
    ("1x1 pointwise", (4, 32, 7, 7), (64, 32, 1, 1), dict()),
    ("1-D k10/5 (wav2vec-style)", (2, 1, 400), (16, 1, 10), dict(stride=5)),
    ("3-D 3x3x3, padding 1", (2, 4, 6, 8, 8), (8, 4, 3, 3, 3), dict(padding=1)),
    ("3-D (3,7,7)/(1,2,2) stem", (1, 3, 4, 16, 16), (8, 3, 3, 7, 7), dict(stride=(1, 2, 2), padding=(1, 3, 3))),
]


def parity():
    section("2. Parity with F.conv1d / conv2d / conv3d (forward and gradients)")
    g = torch.Generator().manual_seed(0)
    print("relative error = max |myconv - F| / max |F|, over the output and over all gradients")
    print(f"{'layer':36s} {'dtype':8s} {'output':>10s} {'gradients':>10s}")
    for name, xs, ws, kw in PARITY_LAYERS:
        for dtype in (torch.float32, torch.float64):
            x = torch.randn(xs, generator=g, dtype=dtype, requires_grad=True)
            w = torch.randn(ws, generator=g, dtype=dtype, requires_grad=True)
            b = torch.randn(ws[0], generator=g, dtype=dtype, requires_grad=True)
            name_nd = f"conv{len(xs) - 2}d"
            ours = getattr(myconv, name_nd)(x, w, b, **kw)
            grads = torch.autograd.grad(ours.sum(), (x, w, b))
            ref = getattr(F, name_nd)(x, w, b, **kw)
            ref_grads = torch.autograd.grad(ref.sum(), (x, w, b))
            rel = lambda a, r: ((a - r).abs().max() / r.abs().max()).item()
            out_err = rel(ours, ref)
            grad_err = max(rel(a, r) for a, r in zip(grads, ref_grads))
            print(f"{name:36s} {str(dtype)[6:]:8s} {out_err:10.1e} {grad_err:10.1e}")


def gradient_check():
    section("3. torch.autograd.gradcheck (float64)")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, w, b: myconv.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    ok = torch.autograd.gradcheck(fn, (x, w, b))
    print("stride (2,1), padding (1,2), dilation (2,1), groups 2, bias: gradcheck passed:", ok)


def speed():
    section(f"4. CPU speed, seed layer ({torch.get_num_threads()} threads; ratio = other time / myconv time)")
    benchmark.run([benchmark.SEED_LAYER], device="cpu", min_run_time=0.5, progress=False)
    print("F.conv2d is oneDNN's direct convolution, aten-im2col ATen's own im2col convolution,")
    print("unfold+mm the seed tutorials' recipe, gemm the bare GEMMs of the same sizes.")
    print("The whole suite: python -m myconv.benchmark (results: docs/benchmarks.md)")


def training():
    section("5. Training a CNN on the digits through torch.ops.myconv.conv2d (3 epochs)")
    out = tempfile.mkdtemp(prefix="myconv-train-")
    result = train.main(["--epochs", "3", "--out", out, "--no-progress"])
    print(f"checkpoint, metrics and plot in {out}; the full run: python -m myconv.train "
          f"(test accuracy {result['test_accuracy']:.1%} after 3 epochs)")


def main():
    start = time.perf_counter()
    print(f"myconv {myconv.__version__} on torch {torch.__version__}; library {myconv.library_path()}")
    print(f"CUDA kernels built: {myconv.cuda_built()}; CUDA device available: {torch.cuda.is_available()}")
    seed_examples()
    parity()
    gradient_check()
    speed()
    training()
    print(f"\ndemo finished in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
