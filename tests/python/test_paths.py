"""Every path of the CPU composition against F.conv2d, and its determinism.

The CPU backend chooses, per call (csrc/convolution.cpp, csrc/conv_plan.cpp):
  * im2col + GEMM on cache-sized tiles (parts of an image, or runs of small images),
  * 1x1 / stride 1 / no padding: GEMMs straight on the input (no columns),
  * channels_last input: NHWC columns and output,
  * grouped convolutions with a tiny per-group K (depthwise): direct kernels,
and cuts each pass into work items (tiles, channel blocks, partial-sum chunks)
that run on the threads. These tests reach each path with odd sizes, several
tiles per image (set_tile_bytes), tile edges, batch 0, non-contiguous and
channels_last tensors, 1 / 2 / 3 threads, and check forward and all three
gradients against F.conv2d in float64, and bitwise equality across thread counts;
also each CPU GEMM engine (csrc/cpu/cpu_gemm.h) and autotuned plans (csrc/autotune.h).
"""
import contextlib
import math
import threading

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import assert_rel_close, cuda_plan_on_cpu, requires_cuda


@contextlib.contextmanager
def settings(threads=None, tile_bytes=None, workspace=None):
    saved = (torch.get_num_threads(), myconv.get_tile_bytes(), myconv.get_workspace_limit())
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if tile_bytes is not None:
            myconv.set_tile_bytes(tile_bytes)
        if workspace is not None:
            myconv.set_workspace_limit(workspace)
        yield
    finally:
        torch.set_num_threads(saved[0])
        myconv.set_tile_bytes(saved[1])
        myconv.set_workspace_limit(saved[2])


# (name, input shape, weight shape, conv arguments): each reaches a path.
CASES = [
    # im2col + GEMM, several tiles per image (L = 13*17 = 221 positions), odd everything
    ("tiles", (3, 5, 13, 17), (7, 5, 3, 3), dict(padding=1)),
    ("tiles-stride-dilation", (2, 6, 23, 19), (5, 6, 3, 2), dict(stride=(2, 1), padding=(2, 1), dilation=(2, 3))),
    # small images joined into multi-image tiles (GEMM result / grad_output copied)
    ("small-images", (9, 4, 5, 6), (6, 4, 3, 3), dict(padding=1)),
    # output rows shorter than 16: im2col / col2im through a table of the taps' plane elements
    ("short-rows", (3, 5, 9, 7), (7, 5, 3, 3), dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1))),
    # short rows, but a table (taps x tile positions) too large for tiles of 1 MiB and more: row by row
    # (test_short_rows_row_by_row makes sure of the tile size)
    ("short-rows-tall", (2, 1, 600, 9), (4, 1, 7, 7), dict(padding=3)),
    # grouped, K per group above the direct threshold: per-group GEMMs
    ("grouped", (2, 12, 11, 9), (8, 6, 3, 3), dict(padding=1, groups=2)),
    # 1x1 / stride 1 / no padding: GEMMs on the input itself
    ("pointwise", (3, 24, 10, 11), (16, 24, 1, 1), dict()),
    ("pointwise-small", (5, 8, 3, 4), (6, 8, 1, 1), dict()),
    ("pointwise-grouped", (2, 12, 9, 10), (9, 4, 1, 1), dict(groups=3)),
    # strided 1x1: a strided gather
    ("pointwise-strided", (3, 16, 15, 13), (8, 16, 1, 1), dict(stride=2)),
    # direct grouped kernels: depthwise, channel multiplier, small per-group K
    ("depthwise", (3, 8, 14, 13), (8, 1, 3, 3), dict(padding=1, groups=8)),
    ("depthwise-strided-dilated", (2, 6, 17, 15), (6, 1, 3, 5), dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=6)),
    ("depthwise-multiplier", (2, 4, 9, 10), (12, 1, 3, 3), dict(padding=1, groups=4)),
    # stride 1 with padding beyond the dilated kernel: no flipped-kernel shortcut for grad_input
    ("depthwise-wide-padding", (2, 6, 12, 11), (6, 1, 3, 3), dict(padding=(3, 1), dilation=(1, 2), groups=6)),
    ("grouped-tiny-k", (2, 8, 10, 9), (12, 2, 3, 3), dict(stride=2, padding=1, groups=4)),
    # many rows: several channel blocks for grad_input / grad_weight
    ("channel-blocks", (2, 40, 9, 11), (24, 40, 3, 3), dict(padding=1)),
    # few tiles, many output channels: the forward's output-channel blocks (shared columns)
    ("output-channel-blocks", (2, 16, 5, 5), (300, 16, 3, 3), dict(padding=1)),
]
CASE_IDS = [c[0] for c in CASES]


def make(case, dtype=torch.float64, channels_last=False, batch=None, seed=0):
    _, xs, ws, kw = case
    g = torch.Generator().manual_seed(seed)
    if batch is not None:
        xs = (batch,) + xs[1:]
    x = torch.randn(xs, generator=g, dtype=torch.float64)
    w = torch.randn(ws, generator=g, dtype=torch.float64)
    b = torch.randn(ws[0], generator=g, dtype=torch.float64)
    x, w, b = (t.to(dtype) for t in (x, w, b))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, b, kw


def forward_backward(fn, x, w, b, kw, gy_seed=1):
    x, w, b = (t if t is None else t.detach().clone().requires_grad_() for t in (x, w, b))
    y = fn(x, w, b, **kw)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(gy_seed), dtype=torch.float64).to(y.dtype)
    y.backward(gy)
    return y.detach(), x.grad, w.grad, None if b is None else b.grad


def check_against_reference(x, w, b, kw, tol):
    ours = forward_backward(myconv.conv2d, x, w, b, kw)
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, e, tol, name)
    return ours


@pytest.mark.parametrize("tile_bytes", [0, 1], ids=["cache-tiles", "smallest-tiles"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paths_match_f_conv2d(case, channels_last, tile_bytes):
    x, w, b, kw = make(case, channels_last=channels_last)
    with settings(tile_bytes=tile_bytes):
        y, gx, gw, gb = check_against_reference(x, w, b, kw, 1e-11)
    ref_format = F.conv2d(x, w, b, **kw)
    assert y.stride() == ref_format.stride()
    assert gx.stride() == x.stride()


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
def test_short_rows_row_by_row(dtype, tol):
    # tiles of whole 600x9 images: 49 taps x 5400 positions, past the table's
    # size, whatever this machine's L2 (the default tile size follows it)
    case = next(c for c in CASES if c[0] == "short-rows-tall")
    x, w, b, kw = make(case, dtype)
    with settings(tile_bytes=8 << 20):
        check_against_reference(x, w, b, kw, tol)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paths_float32(case, channels_last):
    x, w, b, kw = make(case, torch.float32, channels_last)
    with settings(tile_bytes=1):
        check_against_reference(x, w, b, kw, 2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paths_reduced_precision(case, channels_last, dtype):
    x, w, b, kw = make(case, dtype, channels_last)
    with settings(tile_bytes=1):
        ours = forward_backward(myconv.conv2d, x, w, b, kw)
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert a.dtype == dtype
        assert_rel_close(a, e, 3e-2, name)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paths_batch_zero(case, channels_last):
    x, w, b, kw = make(case, channels_last=channels_last, batch=0)
    ours = forward_backward(myconv.conv2d, x, w, b, kw)
    ref = forward_backward(F.conv2d, x, w, b, kw)
    for a, e in zip(ours, ref):
        assert a.shape == e.shape
        assert torch.equal(a, e)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paths_non_contiguous(case):
    x, w, b, kw = make(case)
    # every other image, and a weight and bias read through strides
    x = torch.cat([x, x.flip(0)], 0)[::2]
    w = w.transpose(2, 3).contiguous().transpose(2, 3)
    w = torch.stack([w, w], -1)[..., 0]
    b = torch.stack([b, b], -1)[:, 1]
    assert not (x.is_contiguous() or w.is_contiguous() or b.is_contiguous())
    with settings(tile_bytes=1):
        check_against_reference(x, w, b, kw, 1e-11)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bitwise_identical_for_1_2_3_threads(case, channels_last):
    x, w, b, kw = make(case, torch.float32, channels_last, seed=5)
    for tile_bytes in (0, 1):
        results = []
        for threads in (1, 2, 3):
            with settings(threads=threads, tile_bytes=tile_bytes):
                results.append(forward_backward(myconv.conv2d, x, w, b, kw))
        for other in results[1:]:
            for a, e in zip(other, results[0]):
                assert torch.equal(a, e), f"tile_bytes={tile_bytes}"


def test_bitwise_identical_on_a_resnet_layer_for_1_2_3_threads():
    # Real sizes: several tiles per image, channel blocks and partial-sum chunks.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, 28, 28, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g)
    b = torch.randn(64, generator=g)
    for channels_last in (False, True):
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        results = []
        for threads in (1, 2, 3):
            with settings(threads=threads):
                results.append(forward_backward(myconv.conv2d, xi, w, b, dict(padding=1)))
        for other in results[1:]:
            for a, e in zip(other, results[0]):
                assert torch.equal(a, e)


@pytest.mark.parametrize("workspace", [1, 20_000, 300_000])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[6], CASES[14]], ids=lambda c: c[0])
def test_any_workspace_limit_gives_correct_results(case, workspace):
    # Tiny limits shrink tiles to a few positions and run a single worker.
    x, w, b, kw = make(case)
    with settings(workspace=workspace):
        check_against_reference(x, w, b, kw, 1e-11)


def test_unbatched_input_takes_the_same_paths():
    x, w, b, kw = make(CASES[0])
    with settings(tile_bytes=1):
        y = myconv.conv2d(x[1], w, b, **kw)
    assert_rel_close(y, F.conv2d(x[1], w, b, **kw), 1e-12)


def test_tile_bytes_setting_round_trips_and_rejects_negative():
    with settings():
        myconv.set_tile_bytes(12345)
        assert myconv.get_tile_bytes() == 12345
        with pytest.raises(RuntimeError, match="non-negative tile size"):
            myconv.set_tile_bytes(-1)
        myconv.set_tile_bytes(0)
        assert myconv.get_tile_bytes() == 0


def test_called_from_many_python_threads_inside_autograd():
    # Work items run on ATen's threads with the caller's thread-local state
    # (grad mode, dispatch keys): backward through them must not try to record
    # the inner GEMMs for autograd.
    x, w, b, kw = make(("big", (4, 32, 30, 30), (32, 32, 3, 3), dict(padding=1)), torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    y = myconv.conv2d(x, w, b, **kw)
    y.sum().backward()
    assert x.grad is not None and w.grad is not None


def last_workspace_peak():
    return torch.ops.myconv._last_workspace_peak()


@pytest.mark.parametrize("workspace", [24_000, 100_000, 1 << 20])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_workspace_stays_within_the_limit(case, channels_last, workspace):
    # The limit bounds everything the composition allocates besides its
    # inputs and outputs: column tiles, per-worker buffers, partial sums.
    x, w, b, kw = make(case, torch.float32, channels_last)
    args = ([kw.get("stride", 1)] * 2 if isinstance(kw.get("stride", 1), int) else list(kw["stride"]),
            [kw.get("padding", 0)] * 2 if isinstance(kw.get("padding", 0), int) else list(kw["padding"]),
            [kw.get("dilation", 1)] * 2 if isinstance(kw.get("dilation", 1), int) else list(kw["dilation"]),
            kw.get("groups", 1))
    with settings(workspace=workspace, threads=3):
        y = torch.ops.myconv.conv2d(x, w, b, *args)
        assert 0 <= last_workspace_peak() <= workspace
        torch.ops.myconv.conv2d_backward(torch.ones_like(y), x, w, *args, [True, True, True])
        assert 0 <= last_workspace_peak() <= workspace


def test_workspace_is_used_and_reported_for_a_real_layer():
    x = torch.randn(4, 64, 28, 28)
    w = torch.randn(64, 64, 3, 3)
    torch.ops.myconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    peak = last_workspace_peak()
    assert 0 < peak <= myconv.get_workspace_limit()
    with settings(workspace=peak // 3):
        y = torch.ops.myconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
        assert 0 < last_workspace_peak() <= peak // 3
    assert_rel_close(y, F.conv2d(x, w, None, 1, 1), 1e-5)


@pytest.mark.parametrize("workspace", [None, 1, 5000], ids=["one-chunk", "image-chunks", "small-chunks"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_cuda_backends_plan_runs_right_on_the_cpu(case, channels_last, workspace):
    # The CUDA backend's work plan (chunks of whole images, one item per pass,
    # all groups in one batched GEMM; channels-last inputs on channels-last
    # columns) through the same composition, on the CPU kernels: the
    # composition the GPU runs, tested without a GPU.
    x, w, b, kw = make(case, channels_last=channels_last)
    with settings(workspace=workspace), cuda_plan_on_cpu():
        check_against_reference(x, w, b, kw, 1e-11)


@pytest.mark.parametrize("workspace", [None, 1, 5000], ids=["one-chunk", "image-chunks", "small-chunks"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_cuda_plan_runs_image_gemms_right_on_the_cpu(case, workspace):
    # The same, with every chunk of several images running its GEMMs image by image
    # (Tuning::image_gemm_min_positions, on the GPU only for images of 2048 positions or more): the
    # forward's GEMMs write each image's output in place, grad_weight's each image's product.
    x, w, b, kw = make(case)
    with settings(workspace=workspace), cuda_plan_on_cpu():
        try:
            myconv.set_cuda_tuning(image_gemm_min_positions=1)
            check_against_reference(x, w, b, kw, 1e-11)
        finally:
            myconv.set_cuda_tuning()


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-11), (torch.bfloat16, 3e-2)], ids=str)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("chunks", [1, 3], ids=["one-chunk", "chunks-of-3-3-1"])
def test_the_cuda_plans_large_images_run_their_gemms_image_by_image(chunks, bias, groups, dtype, tol):
    # Images of image_gemm_min_positions or more on the CUDA plan (a 3x3 layer at 48x48, 2304 positions;
    # 8 input and 6 output channels, 7 images): the forward runs, per group, one GEMM per image batched
    # over a chunk's images (the weight broadcast), each writing its image of the output in place: no
    # scratch for the chunk's result, no copy out of it. grad_input's GEMMs read each image's
    # grad_output in place and write its columns, a matrix an image, which col2im reads so; grad_weight
    # writes each image's product and sums them instead of gathering grad_output (float64: 6 x 72
    # products against 6 x 2304 gathered elements an image; bfloat16's float32 products too).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 8, 48, 48, generator=g, dtype=torch.float64)
    w = torch.randn(6, 8 // groups, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else None
    kw = dict(padding=1, groups=groups)
    cast = [t if t is None else t.to(dtype) for t in (x, w, b)]
    L, K, M, es = 48 * 48, 8 // groups * 9, 6 // groups, dtype.itemsize
    rows = 8 * 9 * (3 if chunks == 3 else 7) * L * es  # the chunk's columns (rows whole sectors already)
    product = 6 * K * (4 if dtype == torch.bfloat16 else 8)  # an image's products of all groups
    results = {}
    for on in (True, False):
        # a workspace of 3 images' columns and gathered grad_output (or result)
        workspace = None if chunks == 1 else rows + 3 * 6 * L * es + 4096  # (+ a page: buffers start on one)
        with settings(workspace=workspace), cuda_plan_on_cpu():
            try:
                if not on:
                    myconv.set_cuda_tuning(image_gemm_min_positions=0)
                e = myconv.explain(*cast, **kw)
                forward, grad_input, grad_weight = e["forward"] + e["backward"]
                assert [p["path"] for p in (forward, grad_input, grad_weight)] == ["columns"] * 3
                images = 3 if chunks == 3 else 7
                assert [p["tiles"]["images_per_tile"] for p in (forward, grad_input, grad_weight)] == [images] * 3
                if on:
                    assert forward["gemm"] == {"batch": images, "m": M, "n": L, "k": K, "calls": groups}
                    assert grad_weight["gemm"] == {"batch": images, "m": M, "n": K, "k": L, "calls": groups}
                    # columns alone; grad_weight's products (and a later chunk's sum) next to them
                    assert forward["workspace"]["total"] == rows
                    held = images + (1 if chunks == 3 else 0)
                    assert grad_weight["workspace"]["image_products"] == held * product
                    # grad_input: each image's columns a matrix of its own, read by col2im; no gathered
                    # grad_output
                    assert grad_input["gemm"] == {"batch": images, "m": K, "n": L, "k": M, "calls": groups}
                    assert grad_input["workspace"]["total"] == rows
                else:
                    assert grad_input["gemm"] == {"batch": groups, "m": K, "n": images * L, "k": M, "calls": 1}
                    assert forward["gemm"] == {"batch": groups, "m": M, "n": images * L, "k": K, "calls": 1}
                    # + the result's scratch (the worker's buffer a whole number of pages on the CPU)
                    assert forward["workspace"]["total"] == -(-(rows + 6 * images * L * es) // 4096) * 4096
                    assert grad_weight["workspace"]["image_products"] == 0
                results[on] = forward_backward(myconv.conv2d, *cast, kw)
                # what the backward took is what its plans said
                assert torch.ops.myconv._last_workspace_peak() == max(grad_input["workspace"]["total"],
                                                                      grad_weight["workspace"]["total"])
            finally:
                myconv.set_cuda_tuning()
    ref = forward_backward(F.conv2d, x, w, b, kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), results[True], ref):
        if e is not None:
            assert_rel_close(a, e, tol, name)
    # each output element is the same sum either way (the bias, then the taps in order); so is each
    # grad_input column entry, and col2im sums them in the same order
    assert torch.equal(results[True][0], results[False][0])
    assert torch.equal(results[True][1], results[False][1])


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-11), (torch.bfloat16, 3e-2)], ids=str)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("chunking", [None, "products", "columns"],
                         ids=["one-chunk", "grad-weight-chunks-of-3-3-1", "chunks-of-3-3-1-for-columns"])
def test_the_cuda_plans_1x1_batches_its_gemms_over_a_chunks_images(chunking, bias, groups, dtype, tol):
    # 1x1 / stride 1 / no padding on the CUDA plan: the forward and grad_input run one batched GEMM
    # per group over a chunk's images (the weight broadcast), no columns; grad_weight one batched GEMM
    # per group into each image's product (48 x 40 or 80 of them, against 80 + 48 rows of 72 positions
    # of columns), then their sum, and reads the tensors alone for a chunk of one. 40 channels a group
    # (no direct kernels); 72 positions an image; 7 images. Passes without columns take chunks by their
    # own buffers (Tuning::view_chunks): the forward and grad_input, none, so the whole batch;
    # grad_weight, its products, in chunks of 3, 3 and 1 under a limit of 3 images' products and their
    # sum's slot. With view_chunks off, every pass takes chunks sized for columns: 3, 3 and 1 under a
    # limit of 3 images' columns and output and their rows' padding.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 80, 8, 9, generator=g, dtype=torch.float64)
    w = torch.randn(48, 80 // groups, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(48, generator=g, dtype=torch.float64) if bias else None
    kw = dict(groups=groups)
    cast = [t if t is None else t.to(dtype) for t in (x, w, b)]
    product = 48 * (80 // groups) * (4 if dtype == torch.bfloat16 else 8)  # (float32 for bfloat16)
    # (+ 8192: room for bfloat16's 4 float32 products of 48 x 80, whose 3 images' columns take 55,296)
    workspace = {None: None, "products": 4 * product, "columns": 3 * (80 + 48) * 72 * dtype.itemsize + 8192}[chunking]
    chunk = 3 if chunking else None
    with settings(workspace=workspace), cuda_plan_on_cpu():
        try:
            myconv.set_cuda_tuning(view_chunks=chunking != "columns")
            e = myconv.explain(*cast, **kw)
            plans = e["forward"] + e["backward"]
            assert [p["path"] for p in plans] == ["gemm_on_views"] * 3
            forward_chunk = 3 if chunking == "columns" else 7
            assert [p["tiles"]["images_per_tile"] for p in plans] == [forward_chunk, forward_chunk, chunk or 7]
            assert plans[0]["workspace"]["total"] == plans[1]["workspace"]["total"] == 0
            # grad_weight: a chunk's products, and with several chunks one more for the sum of each later
            # chunk's
            products = ((chunk or 7) + (1 if chunk else 0)) * product
            assert plans[2]["workspace"]["total"] == plans[2]["workspace"]["image_products"] == products
            # (a strided-batched call per group, each over the chunk's images)
            assert plans[2]["gemm"] == {"batch": chunk or 7, "m": 48 // groups, "n": 80 // groups, "k": 72,
                                        "calls": groups}
            ours = forward_backward(myconv.conv2d, *cast, kw)
            # what the backward took is what the plan said (the last call: the backward's grad_weight pass)
            assert torch.ops.myconv._last_workspace_peak() == products
        finally:
            myconv.set_cuda_tuning()
    ref = forward_backward(F.conv2d, x, w, b, kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        if e is not None:
            assert_rel_close(a, e, tol, name)


@pytest.mark.parametrize("limit", [260096, 390144, 1 << 20])
def test_the_cuda_plans_1x1_grad_weight_keeps_its_image_products_within_the_workspace_limit(limit):
    # 127 -> 127 1x1 on 8x8 images (float64): an image's product (129,032 bytes) is just smaller than its
    # columns and gathered grad_output (130,048), so a chunk's products and their sum may take more than
    # the limit its columns were cut to: then grad_weight builds columns (a review found 387,096 bytes
    # taken under a limit of 260,096)
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(6, 127, 8, 8, generator=g, dtype=torch.float64), torch.randn(127, 127, 1, 1, generator=g,
                                                                                   dtype=torch.float64)
    gy = torch.randn(6, 127, 8, 8, generator=g, dtype=torch.float64)
    with settings(workspace=limit), cuda_plan_on_cpu():
        (plan,) = [p for p in myconv.explain(x, w)["backward"] if p["computes"] == "grad_weight"]
        # within the limit, but for the rounding of its buffer to whole pages (the CPU replay's
        # alignment; 64 bytes on CUDA), which the chunk rule does not count
        assert plan["workspace"]["image_products"] <= limit and plan["workspace"]["total"] <= limit + 4096
        # grad_weight alone takes what its plan says
        torch.ops.myconv.conv2d_backward(gy, x, w, [1, 1], [0, 0], [1, 1], 1, [False, True, False])
        assert torch.ops.myconv._last_workspace_peak() == plan["workspace"]["total"]
        ours = forward_backward(myconv.conv2d, x, w, None, {})
    for name, a, e in zip(("output", "grad_input", "grad_weight"), ours, forward_backward(F.conv2d, x, w, None, {})):
        assert_rel_close(a, e, 1e-11, name)
    if limit == 1 << 20:
        assert plan["path"] == "gemm_on_views"  # (the whole batch's 6 products fit)


def test_the_cuda_plans_1x1_joins_small_images_and_batches_transposed_ones():
    g = torch.Generator().manual_seed(0)
    with cuda_plan_on_cpu():
        # images of 7x7 (49 positions) and 1x1: too small for a GEMM each, one GEMM over columns
        for size in (7, 1):
            x, w = torch.randn(6, 64, size, size, generator=g), torch.randn(32, 64, 1, 1, generator=g)
            assert {p["path"] for p in myconv.explain(x, w)["forward"]} == {"columns"}
            assert_rel_close(myconv.conv2d(x, w), F.conv2d(x, w), 1e-5, f"{size}x{size}")
        # 14x14 in float16: an image's plane (392 bytes) is no multiple of 16: columns
        x, w = torch.randn(6, 64, 14, 14, generator=g), torch.randn(32, 64, 1, 1, generator=g)
        assert myconv.explain(x.half(), w.half())["forward"][0]["path"] == "columns"
        assert myconv.explain(x, w)["forward"][0]["path"] == "gemm_on_views"
        # a transposed 1x1 runs the grad_input pass: batched over the images too
        x = torch.randn(5, 64, 9, 8, generator=g, dtype=torch.float64)
        w = torch.randn(64, 24, 1, 1, generator=g, dtype=torch.float64)
        e = myconv.explain(x, w, transposed=True)
        assert e["forward"][0]["path"] == "gemm_on_views" and e["forward"][0]["tiles"]["images_per_tile"] == 5
        assert_rel_close(myconv.conv_transpose2d(x, w), F.conv_transpose2d(x, w), 1e-12, "transposed")


# The CUDA plan's choices and their alternatives (myconv.set_cuda_tuning, for timing them on a GPU):
# (override, layer (input, weight, groups, channels_last), what the plan shows under it)
CUDA_TUNING_CASES = [
    # (chunk_bytes is float32's: 400,000 bytes of float64 columns; 184 kB an image: chunks of 2)
    ("chunk_bytes=200000,chunk_min_positions=0", ((6, 16, 12, 12), (16, 16, 3, 3), 1, False),
     lambda plans: {p["tiles"]["count"] for p in plans} == {3}),
    ("image_batched_views=0", ((6, 96, 12, 12), (40, 96, 1, 1), 1, False),
     lambda plans: [p["path"] for p in plans] == ["columns"] * 3),
    ("grad_weight_image_products=0", ((6, 96, 12, 12), (40, 96, 1, 1), 1, False),
     lambda plans: [p["path"] for p in plans] == ["gemm_on_views", "gemm_on_views", "columns"]),
    # (1x1 passes without columns take the whole batch by default; chunks sized for columns without)
    ("view_chunks=0,chunk_bytes=200000,chunk_min_positions=0", ((6, 96, 12, 12), (40, 96, 1, 1), 1, False),
     lambda plans: {(p["path"], p["tiles"]["count"]) for p in plans} == {("gemm_on_views", 3)}),
    ("gemm_on_views=0", ((6, 96, 12, 12), (40, 96, 1, 1), 1, True),
     lambda plans: {(p["path"], p["layout"]) for p in plans} == {("columns", "channels_first")}),
    ("channels_last=0", ((6, 16, 12, 12), (16, 16, 3, 3), 1, True),
     lambda plans: {p["layout"] for p in plans} == {"channels_first"}),
    ("direct_grouped=false", ((6, 16, 12, 12), (16, 1, 3, 3), 16, False),
     lambda plans: {p["path"] for p in plans} == {"columns"}),
    ("column_row_bytes=0", ((6, 16, 9, 9), (16, 16, 3, 3), 1, False),
     # rows of 486 positions, not 488 (the replay's buffers take whole pages)
     lambda plans: plans[0]["workspace"]["total"] == -(-(16 * 9 + 16) * 6 * 81 * 8 // 4096) * 4096),
]


@pytest.mark.parametrize("override, layer, shows", CUDA_TUNING_CASES, ids=[c[0] for c in CUDA_TUNING_CASES])
def test_each_cuda_plan_choice_and_its_alternative_compute_the_same(override, layer, shows):
    # Each choice of the CUDA plan a GPU session may time against its alternative: the plan shows the
    # alternative, and the replayed composition computes the convolution with it as with the default
    (xs, ws, groups, cl), g = layer, torch.Generator().manual_seed(5)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in (xs, ws, ws[:1]))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    kw = dict(padding=ws[-1] // 2, groups=groups)
    default = myconv.get_cuda_tuning()
    with cuda_plan_on_cpu():
        e = myconv.explain(x, w, b, **kw)
        assert not shows(e["forward"] + e["backward"]), "the default plan already shows it"
        try:
            myconv.set_cuda_tuning(override)
            for item in override.split(","):
                key, value = item.split("=")
                want = {"true": True, "false": False}[value] if value in ("true", "false") else int(value)
                assert myconv.get_cuda_tuning()[key] == want, item
            e = myconv.explain(x, w, b, **kw)
            assert shows(e["forward"] + e["backward"]), e
            ours = forward_backward(myconv.conv2d, x, w, b, kw)
        finally:
            myconv.set_cuda_tuning()
    assert myconv.get_cuda_tuning() == default
    ref = forward_backward(F.conv2d, x, w, b, kw)
    for name, a, want in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, want, 1e-11, f"{override}: {name}")


def test_a_bad_cuda_tuning_raises_and_changes_nothing():
    default = myconv.get_cuda_tuning()
    myconv.set_cuda_tuning(chunk_min_positions=8192)
    try:
        for bad, message in (("foo=1", "unknown key 'foo'"), ("chunk_bytes=-1", "from 0 to 2"),
                             ("chunk_min_positions=99999999999999999999", "from 0 to 2"),
                             ("column_row_bytes=24", "power of two"), ("channels_last=2", "0, 1, false or true"),
                             ("chunk_bytes", "key=value"), ("grouped_channels_last_columns=1", "unknown key")):
            with pytest.raises(RuntimeError, match=message):
                myconv.set_cuda_tuning(bad)
            assert myconv.get_cuda_tuning() == dict(default, chunk_min_positions=8192)
        # keywords: booleans for the switches (NumPy's too), integers for the sizes, nothing else
        for bad in (dict(chunk_bytes=True), dict(chunk_bytes="5,gemm_on_views=0"), dict(chunk_bytes=1.5),
                    dict(channels_last="false"), dict(channels_last=2)):
            with pytest.raises(TypeError):
                myconv.set_cuda_tuning(**bad)
            assert myconv.get_cuda_tuning() == dict(default, chunk_min_positions=8192)
        numpy = pytest.importorskip("numpy")
        myconv.set_cuda_tuning(channels_last=numpy.bool_(False), chunk_bytes=numpy.int64(1 << 20))
        assert myconv.get_cuda_tuning() == dict(default, channels_last=False, chunk_bytes=1 << 20)
        # what get_cuda_tuning returns may be set back
        myconv.set_cuda_tuning(dict(default, direct_grouped=False))
        assert myconv.get_cuda_tuning() == dict(default, direct_grouped=False)
    finally:
        myconv.set_cuda_tuning()
    assert myconv.get_cuda_tuning() == default


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_the_cuda_plans_chunks_of_several_images_stay_within_the_workspace_limit(channels_last):
    # A chunk of several images takes its buffer as allocated, rounded up to the buffers' alignment (a
    # page on the CPU replay), within the limit; only a chunk of one image may pass it (nothing smaller
    # exists). Limits around the sizes of 1 to 4 images' columns, on padded rows (width 1001: 3003 ->
    # 3008 positions for 3 images), float32 and float64.
    g = torch.Generator().manual_seed(4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(8, 16, 3, 1001, generator=g).to(dtype).contiguous(memory_format=fmt)
        w = torch.randn(16, 16, 3, 3, generator=g).to(dtype)
        per_image = (16 * 9 + 16) * 3 * 1001 * dtype.itemsize
        for limit in sorted({n * per_image + d for n in range(1, 5) for d in (-4096, -1, 0, 1, 4096, 8000)}):
            with settings(workspace=limit), cuda_plan_on_cpu():
                e = myconv.explain(x, w, padding=1)
                for plan in e["forward"] + e["backward"]:
                    if plan["tiles"]["images_per_tile"] > 1:
                        assert plan["workspace"]["total"] <= limit, (dtype, limit, plan)


@pytest.mark.parametrize("dims, dtype, tol", [(2, torch.float64, 1e-11), (3, torch.float64, 1e-11),
                                              (2, torch.bfloat16, 3e-2)], ids=["2d", "3d", "2d-bfloat16"])
@pytest.mark.parametrize("chunk", [None, 2], ids=["one-chunk", "chunks-of-2"])
def test_the_cuda_plan_runs_channels_last_inputs_on_channels_last_columns(chunk, dims, dtype, tol):
    # channels_last (channels_last_3d) inputs on the CUDA plan: channels-last columns for the 3x3 layers
    # (no copy of the input, grad_output or results into NCHW, grad_output read in place), none at all
    # for 1x1 / stride 1 ones; results in the input's memory format, like F.convNd's. 5 images, in one
    # chunk or in chunks of 2, 2 and 1. Grouped layers that take columns (K = 40 * taps a group) run
    # channels-first on the GPU; depthwise ones take the direct kernels in channels-last.
    g = torch.Generator().manual_seed(1)
    conv = {2: (myconv.conv2d, F.conv2d), 3: (myconv.conv3d, F.conv3d)}[dims]
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}[dims]
    size = (9, 8) if dims == 2 else (4, 5, 6)
    # (the 1x1 layer builds no columns: its chunks are the whole batch (Tuning::view_chunks), or, with
    # view_chunks off, chunks sized for columns, 2, 2 and 1 too)
    layers = ((3, 1, 1, 1, True), (3, 1, 2, 1, True), (1, 0, 1, 1, True), (1, 0, 1, 1, False), (3, 1, 1, 2, True),
              (3, 1, 1, 80, True))
    for k, pad, stride, groups, view_chunks in layers:
        x = torch.randn(5, 80, *size, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
        w = torch.randn(80 if groups == 80 else 40, 80 // groups, *(k,) * dims, generator=g, dtype=torch.float64)
        b = torch.randn(w.shape[0], generator=g, dtype=torch.float64)
        kw = dict(padding=pad, stride=stride, groups=groups)
        cast = [t.to(dtype) for t in (x, w, b)]
        es = cast[0].element_size()
        columns = es * 80 * k ** dims  # column bytes a position takes (channels-last chunks: columns only)
        positions = math.prod((s + 2 * pad - k) // stride + 1 for s in size)
        workspace = chunk and 2 * columns * positions + 4096
        with settings(workspace=workspace), cuda_plan_on_cpu():
            try:
                myconv.set_cuda_tuning(view_chunks=view_chunks)
                e = myconv.explain(*cast, **kw)
                plans = e["forward"] + e["backward"]
                layout = "channels_first" if groups == 2 else "channels_last"
                assert {p["layout"] for p in plans} == {layout}, (k, stride, groups)
                path = ("direct_grouped" if groups == 80 else
                        "gemm_on_views" if k == 1 and stride == 1 else "columns")
                assert {p["path"] for p in plans} == {path}, (k, stride, groups)
                if groups == 1:
                    whole = path == "gemm_on_views" and view_chunks
                    assert {p["tiles"]["images_per_tile"] for p in plans} == {5 if whole else chunk or 5}
                if path != "columns":
                    assert all(p["workspace"]["total"] == 0 for p in plans)
                ours = forward_backward(conv[0], *cast, kw)
            finally:
                myconv.set_cuda_tuning()
        assert ours[0].is_contiguous(memory_format=fmt) and ours[1].is_contiguous(memory_format=fmt)
        ref = forward_backward(conv[1], x, w, b, kw)
        for name, a, want in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
            assert_rel_close(a, want, tol, f"{k}x{k}/{stride} groups {groups} {name}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_cuda_backends_plan_in_bfloat16(case, channels_last):
    x, w, b, kw = make(case, torch.bfloat16, channels_last)
    with settings(workspace=5000), cuda_plan_on_cpu():
        ours = forward_backward(myconv.conv2d, x, w, b, kw)
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, e, 3e-2, name)


@requires_cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-11), (torch.float32, 1e-4)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cases_on_cuda(case, channels_last, dtype, tol, cuda_device, no_tf32):
    # The same odd sizes, short rows, 1x1, depthwise and channel-block cases
    # on the device under test (the reference in float64 there too).
    x, w, b, kw = make(case, dtype, channels_last=channels_last)
    check_against_reference(*(t.to(cuda_device) for t in (x, w, b)), kw, tol)


# --- the CPU GEMM engines (csrc/cpu/cpu_gemm.h) --------------------------------

@contextlib.contextmanager
def gemm_engine(engine):
    saved = myconv.get_cpu_gemm_engine()
    try:
        myconv.set_cpu_gemm_engine(engine)
        yield
    finally:
        myconv.set_cpu_gemm_engine(saved)


ENGINES = ["auto", "onednn", "blas", "aten"]


def resnet_layer(channels_last, dtype=torch.float32, seed=0):
    # big enough that "auto" gives its GEMMs to oneDNN (float32, >= 4M multiply-adds)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 64, 28, 28, generator=g, dtype=dtype)
    w = torch.randn(96, 64, 3, 3, generator=g, dtype=dtype)
    b = torch.randn(96, generator=g, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w, b, dict(padding=1)


def test_auto_gives_large_float32_gemms_to_onednn_and_the_rest_to_the_blas():
    engine_for = torch.ops.myconv._cpu_gemm_engine_for
    big = engine_for(torch.float32, 96, 784, 576)
    assert big in ("onednn", "blas", "aten")  # oneDNN where this torch has it
    if torch.backends.mkldnn.is_available():
        assert big == "onednn"
    assert engine_for(torch.float32, 16, 900, 72) in ("blas", "aten")
    assert engine_for(torch.float64, 96, 784, 576) in ("blas", "aten")
    assert engine_for(torch.bfloat16, 96, 784, 576) == "aten"


def test_a_forced_engine_that_cannot_take_the_dtype_hands_the_gemm_down():
    engine_for = torch.ops.myconv._cpu_gemm_engine_for
    with gemm_engine("onednn"):
        assert engine_for(torch.float32, 16, 900, 72) in ("onednn", "blas", "aten")  # any size
        assert engine_for(torch.float64, 96, 784, 576) in ("blas", "aten")
        assert engine_for(torch.bfloat16, 96, 784, 576) == "aten"
    with gemm_engine("blas"):
        assert engine_for(torch.float32, 96, 784, 576) in ("blas", "aten")
        assert engine_for(torch.bfloat16, 96, 784, 576) == "aten"
    with gemm_engine("aten"):
        assert engine_for(torch.float32, 96, 784, 576) == "aten"


@contextlib.contextmanager
def mkldnn_matmul_precision(precision):
    saved = torch.backends.mkldnn.matmul.fp32_precision
    try:
        torch.backends.mkldnn.matmul.fp32_precision = precision
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = saved


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("how", ["bf16 matmuls", "tf32 matmuls", "oneDNN off"])
def test_convolutions_stay_float32_when_torch_lets_onednn_matmuls_round(how):
    # torch.backends.mkldnn.matmul.fp32_precision = "bf16" lets oneDNN run
    # float32 matmuls in bfloat16: a convolution keeps float32 (the BLAS), as
    # it does where oneDNN is switched off.
    engine_for = torch.ops.myconv._cpu_gemm_engine_for
    assert engine_for(torch.float32, 96, 784, 576) == "onednn"
    if how == "oneDNN off":
        # only the enabled flag: flags()' defaults would also set (and not
        # restore) the legacy TF32 flag, allow_tf32=True
        context = torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None,
                                              fp32_precision=None)
    else:
        context = mkldnn_matmul_precision(how.split()[0])
    x, w, b, kw = resnet_layer(False)
    with context:
        assert engine_for(torch.float32, 96, 784, 576) == "blas"
        ours = forward_backward(myconv.conv2d, x, w, b, kw)
    assert engine_for(torch.float32, 96, 784, 576) == "onednn"
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, e, 2e-5, name)


def test_set_float32_matmul_precision_medium_keeps_convolutions_float32():
    # set_float32_matmul_precision() also writes the current API's per-backend
    # matmul precisions: undone with the same call, then those put back
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision,
             torch.backends.mkldnn.matmul.fp32_precision)
    try:
        torch.set_float32_matmul_precision("medium")
        assert torch.ops.myconv._cpu_gemm_engine_for(torch.float32, 96, 784, 576) in ("blas", "aten")
        x, w, b, kw = resnet_layer(False)
        ours = forward_backward(myconv.conv2d, x, w, b, kw)
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.fp32_precision = saved[1]
        torch.backends.mkldnn.matmul.fp32_precision = saved[2]
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, e, 2e-5, name)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_every_gemm_engine_matches_f_conv2d(engine, channels_last):
    x, w, b, kw = resnet_layer(channels_last)
    with gemm_engine(engine):
        ours = forward_backward(myconv.conv2d, x, w, b, kw)
        small = make(CASES[0], torch.float32, channels_last)
        small_ours = forward_backward(myconv.conv2d, *small[:3], small[3])
    ref = forward_backward(F.conv2d, x.double(), w.double(), b.double(), kw)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        assert_rel_close(a, e, 2e-5, name)
    small_ref = forward_backward(F.conv2d, *(t.double() for t in small[:3]), small[3])
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), small_ours, small_ref):
        assert_rel_close(a, e, 2e-5, name)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_every_gemm_engine_is_bitwise_identical_for_1_2_3_threads(engine, channels_last):
    x, w, b, kw = resnet_layer(channels_last, seed=1)
    results = []
    with gemm_engine(engine):
        for threads in (1, 2, 3):
            with settings(threads=threads):
                results.append(forward_backward(myconv.conv2d, x, w, b, kw))
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert torch.equal(a, e)


def test_gemm_engine_setting_round_trips_and_rejects_unknown_names():
    assert myconv.get_cpu_gemm_engine() == "auto"
    with gemm_engine("blas"):
        assert myconv.get_cpu_gemm_engine() == "blas"
    assert myconv.get_cpu_gemm_engine() == "auto"
    with pytest.raises(RuntimeError, match="expected a CPU GEMM engine 'auto', 'onednn', 'blas' or 'aten', but got 'mkl'"):
        myconv.set_cpu_gemm_engine("mkl")
    assert myconv.get_cpu_gemm_engine() == "auto"


# --- autotuning (csrc/autotune.h) ----------------------------------------------

@contextlib.contextmanager
def autotuning():
    torch.ops.myconv._clear_autotune_cache()
    myconv.set_autotune(True)
    try:
        yield
    finally:
        myconv.set_autotune(False)
        torch.ops.myconv._clear_autotune_cache()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_autotuned_plans_match_f_conv2d_and_are_cached_per_pass(channels_last):
    assert not myconv.get_autotune()  # off by default
    x, w, b, kw = resnet_layer(channels_last, torch.float64)
    with autotuning():
        first = forward_backward(myconv.conv2d, x, w, b, kw)
        # forward, grad_input, grad_weight: one tuned plan each
        assert torch.ops.myconv._autotune_cache_size() == 3
        again = forward_backward(myconv.conv2d, x, w, b, kw)
        assert torch.ops.myconv._autotune_cache_size() == 3
        # another problem: its own plans
        forward_backward(myconv.conv2d, x[:2], w, b, kw)
        assert torch.ops.myconv._autotune_cache_size() == 6
    ref = forward_backward(F.conv2d, x, w, b, kw)
    for name, a, e, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), first, again, ref):
        assert torch.equal(a, e), name  # the cached plan is the one the first call ran
        assert_rel_close(a, r, 1e-11, name)


def test_autotuning_leaves_a_set_tile_size_and_the_direct_kernels_alone():
    x, w, b, kw = resnet_layer(False, torch.float64)
    with autotuning(), settings(tile_bytes=4096):
        forward_backward(myconv.conv2d, x, w, b, kw)
        assert torch.ops.myconv._autotune_cache_size() == 0
    xd, wd, bd = torch.randn(2, 8, 9, 9, dtype=torch.float64), torch.randn(8, 1, 3, 3, dtype=torch.float64), None
    with autotuning():
        forward_backward(myconv.conv2d, xd, wd, torch.zeros(8, dtype=torch.float64), dict(groups=8))
        assert torch.ops.myconv._autotune_cache_size() == 0  # depthwise: direct kernels, no tiles


def test_threads_tuning_one_problem_at_once_all_run_the_plan_the_cache_keeps():
    # each call's result is the cached plan's, whichever thread's timing won
    x, w, b, kw = resnet_layer(False, seed=3)
    results = [None] * 4

    def call(i):
        results[i] = myconv.conv2d(x, w, b, **kw)

    with autotuning():
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert torch.ops.myconv._autotune_cache_size() == 1
        again = myconv.conv2d(x, w, b, **kw)
    assert all(torch.equal(r, again) for r in results)


def test_a_tuned_plan_is_bitwise_deterministic():
    x, w, b, kw = resnet_layer(False, seed=2)
    with autotuning():
        results = [forward_backward(myconv.conv2d, x, w, b, kw) for _ in range(3)]
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert torch.equal(a, e)
