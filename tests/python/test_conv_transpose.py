"""myconv::conv_transpose2d against torch.nn.functional.conv_transpose2d:
a seeded grid of configurations (forward and the three gradients), gradcheck
and gradgradcheck, opcheck, torch.compile, bad inputs, the module and convert,
ONNX, the seed's worked example, and CUDA twins that skip without a GPU
(MYCONV_TEST_CUDA_ON_CPU=1: on the CPU, conftest.py)."""
import io
import random
import zlib
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

import myconv
from conftest import REL_TOL, assert_rel_close, cuda_plan_on_cpu, requires_cuda


@dataclass(frozen=True)
class TConfig:
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int
    bias: bool

    def __str__(self):
        return (f"N{self.n}_C{self.c_in}-{self.c_out}_{self.h}x{self.w}_k{self.kernel[0]}{self.kernel[1]}"
                f"_s{self.stride[0]}{self.stride[1]}_p{self.padding[0]}{self.padding[1]}"
                f"_op{self.output_padding[0]}{self.output_padding[1]}_d{self.dilation[0]}{self.dilation[1]}"
                f"_g{self.groups}{'_b' if self.bias else ''}")

    def args(self):
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def tensors(self, dtype=torch.float64, device="cpu", requires_grad=False):
        g = torch.Generator().manual_seed(zlib.crc32(str(self).encode()))
        x = torch.randn(self.n, self.c_in, self.h, self.w, generator=g, dtype=torch.float64)
        w = torch.randn(self.c_in, self.c_out // self.groups, *self.kernel, generator=g, dtype=torch.float64)
        b = torch.randn(self.c_out, generator=g, dtype=torch.float64) if self.bias else None
        out = [None if t is None else t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (x, w, b)]
        return out


def random_config(rng: random.Random) -> TConfig:
    groups = rng.choice([1, 1, 2, 3])
    if rng.random() < 0.15:  # depthwise-like transposed convolution
        groups = rng.randint(2, 6)
        c_in, c_out = groups, groups * rng.choice([1, 2])
    else:
        c_in, c_out = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
    kernel = (rng.randint(1, 4), rng.randint(1, 4))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    output_padding = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation))
    padding = (rng.randint(0, 3), rng.randint(0, 3))
    h, w = rng.randint(1, 7), rng.randint(1, 7)

    def size(n, k, s, p, op, d):
        return (n - 1) * s - 2 * p + d * (k - 1) + op + 1

    # shrink the padding until the output is not empty
    padding = tuple(min(p, max(0, (size(n, k, s, 0, op, d) - 1) // 2))
                    for p, n, k, s, op, d in zip(padding, (h, w), kernel, stride, output_padding, dilation))
    return TConfig(rng.randint(0, 3), c_in, c_out, h, w, kernel, stride, padding, output_padding, dilation,
                   groups, rng.random() < 0.6)


GRID = [random_config(random.Random(2026 * 1000 + i)) for i in range(240)]


def test_grid_covers_the_parameter_space():
    assert len(GRID) >= 200
    assert {c.n for c in GRID} == {0, 1, 2, 3}
    assert {c.stride[0] for c in GRID} == {1, 2, 3} and {c.dilation[1] for c in GRID} == {1, 2, 3}
    assert {c.groups for c in GRID} >= {1, 2, 3}
    assert any(c.output_padding[0] > 0 for c in GRID)
    assert any(op >= s for c in GRID for op, s in zip(c.output_padding, c.stride))  # op < dilation only
    assert any(c.groups == c.c_in and c.groups > 1 for c in GRID)
    assert {c.bias for c in GRID} == {True, False}


def forward_backward(fn, x, w, b, cfg, seed=1):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    b = None if b is None else b.detach().clone().requires_grad_()
    y = fn(x, w, b, **cfg.args())
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y)
    y.backward(gy)
    return [y.detach(), x.grad, w.grad, None if b is None else b.grad]


def check(cfg, dtype=torch.float64, layout=lambda t: t, device="cpu"):
    x, w, b = cfg.tensors(dtype, device)
    x = layout(x)
    ours = forward_backward(myconv.conv_transpose2d, x, w, b, cfg)
    to64 = lambda t: None if t is None else t.detach().to("cpu", torch.float64)  # noqa: E731
    ref = forward_backward(F.conv_transpose2d, to64(x), to64(w), to64(b), cfg)
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), ours, ref):
        if e is not None:
            assert a.dtype == dtype and a.device.type == torch.device(device).type
            assert_rel_close(a, e, REL_TOL[dtype], f"{cfg} {name}")
    return ours


@pytest.mark.parametrize("cfg", GRID, ids=str)
def test_matches_f_conv_transpose2d(cfg):
    check(cfg)


@pytest.mark.parametrize("cfg", GRID[:60], ids=str)
def test_float32_and_channels_last(cfg):
    check(cfg, torch.float32)
    y = check(cfg, layout=lambda t: t.contiguous(memory_format=torch.channels_last))[0]
    ref = F.conv_transpose2d(*[t if t is None else t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                               for t in cfg.tensors()[:1]], cfg.tensors()[1], cfg.tensors()[2], **cfg.args())
    assert y.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cfg", GRID[60:90], ids=str)
def test_bfloat16(cfg):
    check(cfg, torch.bfloat16)


@pytest.mark.parametrize("cfg", GRID[:30], ids=str)
def test_non_contiguous_input_and_weight(cfg):
    x, w, b = cfg.tensors()
    x = torch.cat([x, x], 3)[..., ::2]
    w = w.transpose(2, 3).contiguous().transpose(2, 3)
    if w.numel() > 1 and x.numel() > 1:
        assert not x.is_contiguous() or x.shape[3] == 1
    ours = myconv.conv_transpose2d(x, w, b, **cfg.args())
    assert_rel_close(ours, F.conv_transpose2d(x, w, b, **cfg.args()), 1e-12)


@pytest.mark.parametrize("tile_bytes", [0, 1])
@pytest.mark.parametrize("threads", [1, 3])
def test_tiles_threads_and_the_cuda_plan(tile_bytes, threads):
    cfg = TConfig(3, 12, 10, 19, 17, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 2, True)
    saved = torch.get_num_threads(), myconv.get_tile_bytes()
    try:
        torch.set_num_threads(threads)
        myconv.set_tile_bytes(tile_bytes)
        first = check(cfg, torch.float32)
        with cuda_plan_on_cpu():
            check(cfg)
    finally:
        torch.set_num_threads(saved[0])
        myconv.set_tile_bytes(saved[1])
    # bitwise the same for any thread count
    torch.set_num_threads(2)
    try:
        myconv.set_tile_bytes(tile_bytes)
        again = forward_backward(myconv.conv_transpose2d, *cfg.tensors(torch.float32), cfg)
    finally:
        torch.set_num_threads(saved[0])
        myconv.set_tile_bytes(saved[1])
    for a, e in zip(again, first):
        assert torch.equal(a, e)


def test_unbatched_input():
    cfg = TConfig(1, 4, 6, 5, 6, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2), 2, True)
    x, w, b = cfg.tensors()
    y = myconv.conv_transpose2d(x[0], w, b, **cfg.args())
    assert_rel_close(y, F.conv_transpose2d(x[0], w, b, **cfg.args()), 1e-12)


GRADCHECK_CONFIGS = [
    TConfig(2, 4, 6, 4, 5, (3, 2), (2, 1), (1, 1), (1, 0), (1, 2), 2, True),
    TConfig(1, 3, 2, 3, 3, (2, 2), (1, 1), (0, 1), (1, 1), (2, 3), 1, True),  # output_padding >= stride
    TConfig(2, 4, 4, 3, 4, (3, 3), (3, 2), (2, 1), (2, 1), (1, 1), 4, False),  # depthwise-like
]


@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS, ids=str)
def test_gradcheck_and_gradgradcheck(cfg):
    x, w, b = cfg.tensors(requires_grad=True)
    inputs = (x, w) if b is None else (x, w, b)
    fn = lambda *t: myconv.conv_transpose2d(*t, **cfg.args())  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS[:2] + GRID[:4], ids=str)
def test_opcheck(cfg):
    x, w, b = cfg.tensors(requires_grad=True)
    a = cfg.args()
    torch.library.opcheck(torch.ops.myconv.conv_transpose2d.default,
                          (x, w, b, list(a["stride"]), list(a["padding"]), list(a["output_padding"]),
                           a["groups"], list(a["dilation"])))


def test_torch_compile_fullgraph():
    model = myconv.convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                         nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)))
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)
    assert_rel_close(compiled(x), model(x), 1e-5)


def test_autocast_runs_in_bfloat16():
    x, w = torch.randn(2, 4, 5, 5), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = myconv.conv_transpose2d(x, w, stride=2)
        ref = F.conv_transpose2d(x, w, stride=2)
    assert y.dtype == ref.dtype == torch.bfloat16
    assert_rel_close(y, ref, 3e-2)


def test_seed_example():
    # The seed (001/000): the transposed convolution of the 5x7 conv result with
    # the same 3x3 kernel (1..9) and padding 1.
    x = torch.arange(35.0).view(1, 1, 5, 7)
    k = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    conv = myconv.conv2d(x, k, padding=1)
    out = myconv.conv_transpose2d(conv, k, padding=1)
    expected = torch.tensor([[2672, 5379, 6804, 7659, 8514, 8403, 6254],
                             [8117, 15408, 18909, 20790, 22671, 21780, 15539],
                             [14868, 27315, 32400, 34425, 36450, 34191, 23922],
                             [20039, 35544, 41283, 43164, 45045, 41508, 28325],
                             [18608, 32055, 36756, 38151, 39546, 35943, 23966]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)


# ---- bad inputs: PyTorch's rules, messages naming the argument ----------------------

BAD = [
    ("output padding must be smaller than either stride or dilation, but got output_padding_height: 2",
     (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(stride=2, output_padding=2)),
    ("output padding must be smaller than either stride or dilation",
     (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(stride=(2, 1), output_padding=(1, 1))),
    ("expected input\\[1, 3, 5, 5\\] to have 4 channels, but got 3 channels instead",
     (torch.randn(1, 3, 5, 5), torch.randn(4, 2, 3, 3)), {}),
    ("to be divisible by groups", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(groups=3)),
    ("expected groups to be positive", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(groups=0)),
    ("expected 4-D weight", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3)), {}),
    ("expected 3-D \\(unbatched\\) or 4-D \\(batched\\) input", (torch.randn(1, 1, 4, 5, 5), torch.randn(4, 2, 3, 3)), {}),
    ("expected bias to be 1-D with 2 elements", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3), torch.randn(3)), {}),
    ("Calculated output size per channel: \\(-3 x -3\\). Output size is too small",
     (torch.randn(1, 4, 1, 1), torch.randn(4, 2, 3, 3)), dict(padding=3)),
    ("expected stride to be positive", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(stride=0)),
    ("expected padding to be non-negative", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(padding=-1)),
    ("expected output_padding to be non-negative", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)),
     dict(output_padding=-1)),
    ("expected dilation to be positive", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), dict(dilation=0)),
    ("to have the same dtype", (torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3, dtype=torch.float64)), {}),
    ("non-zero", (torch.randn(1, 4, 0, 5), torch.randn(4, 2, 3, 3)), {}),
    ("non-zero", (torch.randn(1, 4, 5, 5), torch.randn(4, 0, 3, 3)), {}),
]


@pytest.mark.parametrize("message, tensors, kwargs", BAD, ids=[b[0][:40] for b in BAD])
def test_bad_inputs_raise_like_pytorch(message, tensors, kwargs):
    with pytest.raises(RuntimeError, match=message):
        myconv.conv_transpose2d(*tensors, **kwargs)
    # the Meta kernel (FakeTensor / torch.compile) raises the same
    with pytest.raises(RuntimeError, match=message):
        myconv.conv_transpose2d(*[t.to("meta") for t in tensors], **kwargs)


def test_pytorch_itself_rejects_the_same_inputs():
    # our catalogue is PyTorch's: every entry fails in F.conv_transpose2d too
    for _, tensors, kwargs in BAD:
        with pytest.raises((RuntimeError, ValueError)):
            F.conv_transpose2d(*tensors, **kwargs)


def test_integer_tensors_are_rejected():
    # Like myconv.conv2d (and unlike F.conv_transpose2d on the CPU, which takes
    # integer tensors): floating point only.
    with pytest.raises(RuntimeError, match="to be a floating-point tensor"):
        myconv.conv_transpose2d(torch.ones(1, 4, 5, 5, dtype=torch.int64), torch.ones(4, 2, 3, 3, dtype=torch.int64))


# ---- module, convert, ONNX --------------------------------------------------------

def test_module_is_a_drop_in_with_output_size():
    ref = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2, dilation=(1, 2))
    ours = myconv.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2, dilation=(1, 2))
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    assert repr(ours).replace("ConvTranspose2d", "") == repr(ref).replace("ConvTranspose2d", "")
    x = torch.randn(2, 4, 5, 6)
    for size in (None, [9, 11], [10, 12], [9, 12]):
        assert_rel_close(ours(x, output_size=size), ref(x, output_size=size), 1e-5)
    assert ours(x, output_size=[10, 12]).shape == (2, 6, 10, 12)
    with pytest.raises(ValueError, match="requested an output size"):
        ours(x, output_size=[11, 12])


class EncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                 nn.BatchNorm2d(16), nn.ReLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 3, 3, padding=1, groups=1))

    def forward(self, x):
        return self.dec(self.enc(x))


def test_convert_turns_an_encoder_decoder_into_myconv_with_equal_outputs_and_gradients():
    torch.manual_seed(0)
    ref = EncoderDecoder().double()
    ours = myconv.convert(ref, inplace=False)
    kinds = {type(m) for m in ours.modules()}
    assert myconv.Conv2d in kinds and myconv.ConvTranspose2d in kinds
    assert nn.Conv2d not in kinds and nn.ConvTranspose2d not in kinds
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y_ref, y = ref(x), ours(x)
    assert_rel_close(y, y_ref, 1e-12)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        # (the bias before batch norm has a zero gradient, up to rounding)
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def onnx_outputs(proto, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString())
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("dynamo", [True, False], ids=["default-exporter", "torchscript-exporter"])
def test_plain_onnx_export_gives_standard_nodes(tmp_path, dynamo):
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = myconv.convert(EncoderDecoder()).eval()
    x = torch.randn(2, 3, 16, 16)
    path = str(tmp_path / "model.onnx")
    if dynamo:
        torch.onnx.export(model, (x,), path)  # plain call: no table, no extra import
    else:
        torch.onnx.export(model, (x,), path, dynamo=False)
    proto = onnx.load(path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 2 and ops.count("ConvTranspose") == 2, ops
    assert not any("myconv" in n.domain or "myconv" in n.op_type for n in proto.graph.node)
    assert_rel_close(onnx_outputs(proto, x), model(x), 1e-5)


def test_onnx_export_of_direct_op_calls_with_the_translation_table(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from myconv import onnx_export

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 2, 3, 3))

        def forward(self, x):
            return torch.ops.myconv.conv_transpose2d(x, self.w, None, [2, 2], [1, 1], [1, 1], 2, [1, 1])

    model = Direct().eval()
    x = torch.randn(1, 4, 5, 5)
    path = str(tmp_path / "direct.onnx")
    onnx_export.export(model, (x,), path)
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node] == ["ConvTranspose"]
    assert_rel_close(onnx_outputs(proto, x), model(x), 1e-5)


# ---- CUDA twins ------------------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("cfg", GRID[:80], ids=str)
def test_cuda_matches_f_conv_transpose2d(cfg, cuda_device, no_tf32):
    check(cfg, device=cuda_device)
    check(cfg, torch.float32, device=cuda_device)


@requires_cuda
@pytest.mark.parametrize("cfg", GRADCHECK_CONFIGS, ids=str)
def test_cuda_gradcheck(cfg, cuda_device):
    x, w, b = cfg.tensors(device=cuda_device, requires_grad=True)
    inputs = (x, w) if b is None else (x, w, b)
    assert torch.autograd.gradcheck(lambda *t: myconv.conv_transpose2d(*t, **cfg.args()), inputs)


def test_module_is_scriptable_and_saves(tmp_path):
    model = myconv.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 4, 5, 5)
    assert_rel_close(scripted(x), model(x), 1e-6)
    assert_rel_close(scripted(x, [10, 10]), model(x, output_size=[10, 10]), 1e-6)
    torch.jit.save(scripted, str(tmp_path / "m.pt"))
    assert_rel_close(torch.jit.load(str(tmp_path / "m.pt"))(x), model(x), 1e-6)
