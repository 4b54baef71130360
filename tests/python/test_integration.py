"""PyTorch integration: F.conv2d's forms, convert(), double backward,
torch.compile / torch.export, autocast, TorchScript, ONNX."""
import copy
import io
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import myconv
from conftest import assert_rel_close, cuda_only


# ---- the functional forms -------------------------------------------------

@pytest.mark.parametrize("kernel", [(3, 3), (4, 2), (2, 5), (1, 1)])
@pytest.mark.parametrize("dilation", [1, (2, 1), 3])
def test_padding_same(kernel, dilation):
    x = torch.randn(2, 4, 11, 10, dtype=torch.float64)
    w = torch.randn(6, 2, *kernel, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    out = myconv.conv2d(x, w, b, padding="same", dilation=dilation, groups=2)
    assert out.shape[-2:] == x.shape[-2:]
    assert_rel_close(out, F.conv2d(x, w, b, padding="same", dilation=dilation, groups=2), 1e-12)


def test_padding_same_gradients_with_even_kernel():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: myconv.conv2d(x, w, padding="same"), (x, w))


def test_padding_valid_and_unbatched():
    x = torch.randn(3, 9, 8, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 2, dtype=torch.float64)
    out = myconv.conv2d(x, w, padding="valid", stride=(2, 1))
    assert out.dim() == 3
    assert_rel_close(out, F.conv2d(x, w, padding="valid", stride=(2, 1)), 1e-12)
    assert_rel_close(myconv.conv2d(x, w, padding="same"), F.conv2d(x, w, padding="same"), 1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
    (dict(padding="full"), "Invalid padding string: 'full'"),
])
def test_padding_string_errors_match_pytorch(kwargs, message):
    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match=message):
        F.conv2d(x, w, **kwargs)
    with pytest.raises(RuntimeError, match=message):
        myconv.conv2d(x, w, **kwargs)


def test_ints_and_pairs():
    x, w = torch.randn(2, 3, 10, 9, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for kw in (dict(stride=2, padding=1, dilation=2), dict(stride=(1, 2), padding=[2, 0], dilation=(2, 1))):
        assert_rel_close(myconv.conv2d(x, w, **kw), F.conv2d(x, w, **kw), 1e-12)


@pytest.mark.parametrize("padding", ["same", "valid", (1, 2)])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_module_padding_forms(padding, padding_mode):
    ref = nn.Conv2d(4, 6, (3, 2), padding=padding, padding_mode=padding_mode, groups=2, dtype=torch.float64)
    ours = myconv.Conv2d(4, 6, (3, 2), padding=padding, padding_mode=padding_mode, groups=2, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    assert_rel_close(ours(x), ref(x), 1e-12)
    assert repr(ours) == repr(ref)


# ---- convert() on a ResNet-style model ------------------------------------

class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.dw = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out)  # depthwise
        self.pw = nn.Conv2d(c_out, c_out, 1)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.pw(F.relu(self.dw(y)))
        return F.relu(y + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8, 8, 1), Block(8, 16, 2)])
        self.heads = nn.ModuleDict({"cls": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)),
                                    "seg": nn.Conv2d(16, 2, 1)})

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.heads["cls"](x), self.heads["seg"](x)


def count(model, cls):
    return sum(type(m) is cls for m in model.modules())


def test_convert_resnet_style_model():
    torch.manual_seed(0)
    ref = TinyResNet().double()
    n_convs = count(ref, nn.Conv2d)
    ours = myconv.convert(copy.deepcopy(ref))
    assert count(ours, nn.Conv2d) == 0 and count(ours, myconv.Conv2d) == n_convs == 9
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    outs_ref, outs = ref(x), ours(x)
    for a, b in zip(outs, outs_ref):
        assert_rel_close(a, b, 1e-12)
    (outs[0].sum() + outs[1].square().sum()).backward()
    (outs_ref[0].sum() + outs_ref[1].square().sum()).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert_rel_close(p.grad, q.grad, 1e-10, name)
    # state_dicts are interchangeable
    fresh = TinyResNet().double()
    fresh.load_state_dict(ours.state_dict())
    assert_rel_close(fresh(x)[0], outs_ref[0], 1e-12)


def test_convert_shares_parameters_and_copy_option():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    weight = model[0].weight
    copied = myconv.convert(model, inplace=False)
    assert type(model[0]) is nn.Conv2d and type(copied[0]) is myconv.Conv2d
    same = myconv.convert(model)
    assert same is model and type(model[0]) is myconv.Conv2d and model[0].weight is weight
    lone = myconv.convert(nn.Conv2d(1, 1, 1))
    assert type(lone) is myconv.Conv2d


# ---- double backward --------------------------------------------------------

GRADGRAD_CASES = [
    ((2, 4, 6, 5), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2), True),
    ((1, 3, 5, 5), (3, 1, 3, 3), dict(padding=1, groups=3), True),
    ((2, 2, 5, 6), (3, 2, 2, 3), dict(stride=2, dilation=2, padding=2), False),
    ((3, 5, 6), (2, 3, 3, 3), dict(padding=1), True),  # unbatched
]


@pytest.mark.parametrize("case", GRADGRAD_CASES, ids=range(len(GRADGRAD_CASES)))
def test_gradgradcheck(case):
    xs, ws, kw, bias = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(xs, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(ws, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(ws[0], dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    fn = lambda x, w, b: myconv.conv2d(x, w, b, **kw)
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_second_derivatives_match_f_conv2d():
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for conv in (myconv.conv2d, F.conv2d):
        y = conv(x, w, None, 1, 1)
        gx, gw = torch.autograd.grad(y.square().sum(), (x, w), create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum() + gw.sin().sum(), (x, w)))
    for a, b in zip(*results):
        assert_rel_close(a, b, 1e-10)


# ---- torch.compile / torch.export -------------------------------------------

def small_model():
    torch.manual_seed(0)
    return myconv.convert(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(8, 4, 2, padding="same"),
    ))


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    model = small_model()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    y, y_ref = compiled(x), model(x)
    assert_rel_close(y, y_ref, 1e-5)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert_rel_close(gx, gx_ref, 1e-5)


def test_torch_compile_dynamic_shapes():
    torch._dynamo.reset()
    model = small_model()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for shape in [(2, 3, 16, 16), (5, 3, 16, 16), (3, 3, 20, 14)]:
        x = torch.randn(shape)
        assert_rel_close(compiled(x), model(x), 1e-5, str(shape))


def test_torch_export_with_dynamic_batch():
    model = small_model().eval()
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "myconv.conv2d.default" in targets
    for n in (1, 2, 7):
        x = torch.randn(n, 3, 16, 16)
        assert_rel_close(program.module()(x), model(x), 1e-6)


def test_meta_kernels_under_symbolic_shapes():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        y = torch.ops.myconv.conv2d(x, w, None, [2, 1], [1, 1], [1, 1], 2)
        grads = torch.ops.myconv.conv2d_backward(torch.ones_like(y), x, w, [2, 1], [1, 1], [1, 1], 2,
                                                 [True, True, True])
        cols = torch.ops.myconv.im2col(x, [3, 2], [1, 1], [1, 0], [1, 1])
        back = torch.ops.myconv.col2im(cols, [x.shape[2], x.shape[3]], [3, 2], [1, 1], [1, 0], [1, 1])
        return y, grads, back

    x, w = torch.randn(4, 6, 10, 9), torch.randn(8, 3, 3, 2)
    gm = make_fx(f, tracing_mode="symbolic")(x, w)
    vals = {str(n.target): n.meta["val"] for n in gm.graph.nodes if "myconv" in str(n.target)}
    y = vals["myconv.conv2d.default"]
    assert all(isinstance(d, torch.SymInt) for d in y.shape)  # N, C_out, H_out, W_out stay symbolic
    gi, gw, gb = vals["myconv.conv2d_backward.default"]
    assert gi.shape == vals["myconv.col2im.default"].shape  # both the input's (symbolic) shape
    assert isinstance(vals["myconv.im2col.default"].shape[2], torch.SymInt)
    # the traced graph runs on other sizes
    for shape in [(4, 6, 10, 9), (2, 6, 7, 12)]:
        x = torch.randn(shape)
        out, ref = gm(x, w), f(x, w)
        assert_rel_close(out[0], ref[0], 1e-6)
        assert_rel_close(out[2], ref[2], 1e-6)


# ---- autocast ---------------------------------------------------------------

def test_autocast_cpu_bfloat16_like_f_conv2d():
    x, w, b = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = myconv.conv2d(x, w, b, padding=1)
        ref = F.conv2d(x, w, b, padding=1)
        same = myconv.conv2d(x, w, b, padding="same")
    assert ours.dtype == ref.dtype == same.dtype == torch.bfloat16
    assert_rel_close(ours, F.conv2d(x, w, b, padding=1), 3e-2)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = myconv.conv2d(x, w, b, padding=1)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32


@cuda_only('autocast "cuda"')
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda(dtype):
    x, w = torch.randn(2, 3, 9, 9, device="cuda"), torch.randn(4, 3, 3, 3, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        ours, ref = myconv.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)
    assert ours.dtype == ref.dtype == dtype
    assert_rel_close(ours, F.conv2d(x.double(), w.double(), padding=1), 3e-2)


# ---- TorchScript ------------------------------------------------------------

def test_torchscript_script_save_load_in_fresh_process(tmp_path):
    model = small_model().eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 16, 16)
    assert_rel_close(scripted(x), model(x), 1e-6)
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x).detach(), tmp_path / "y.pt")
    code = (
        "import torch, myconv\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"x, y = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'y.pt')!r})\n"
        "assert torch.allclose(m(x), y, atol=1e-6), (m(x) - y).abs().max()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


# ---- ONNX -------------------------------------------------------------------

def onnx_run(proto, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def test_onnx_export_dynamo_gives_standard_conv_nodes(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from myconv import onnx_export

    model = small_model().eval()
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "model.onnx"
    onnx_export.export(model, (x,), str(path))
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 3 and not any("myconv" in n.domain for n in proto.graph.node)
    assert_rel_close(onnx_run(proto, x), model(x), 1e-5)


def test_onnx_export_torchscript_exporter(tmp_path):
    onnx = pytest.importorskip("onnx")
    import myconv.onnx_export  # noqa: F401  (registers the symbolic)

    model = small_model().eval()
    x = torch.randn(2, 3, 16, 16)
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17)
    proto = onnx.load_model_from_string(f.getvalue())
    assert [n.op_type for n in proto.graph.node].count("Conv") == 3
    assert_rel_close(onnx_run(proto, x), model(x), 1e-5)
