"""The 1-D and 3-D ops in PyTorch's machinery: the modules as drop-ins for
nn.Conv1d / Conv3d / ConvTranspose1d / ConvTranspose3d, convert() on all six
convolution classes and their subclasses (torchvision's r3d_18), opcheck,
torch.compile, torch.export, TorchScript, autocast and ONNX (both exporters)."""
import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.library import opcheck

import myconv
from conftest import assert_rel_close

CLASSES = ["Conv1d", "Conv3d", "ConvTranspose1d", "ConvTranspose3d"]


def input_for(cls_name, n=3, c=4, dtype=torch.float64):
    size = (11,) if cls_name.endswith("1d") else (5, 6, 7)
    return torch.randn((n, c) + size, dtype=dtype, generator=torch.Generator().manual_seed(0))


def module_kwargs(cls_name):
    d = 1 if cls_name.endswith("1d") else 3
    kw = dict(stride=(2,) + (1, 2)[: d - 1], padding=(1,) * d, dilation=(1,) + (2, 1)[: d - 1], groups=2)
    if cls_name.startswith("ConvTranspose"):
        kw["output_padding"] = (1,) + (0, 1)[: d - 1]
    return kw


def forward_and_grads(model, x):
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.backward(torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1)))
    return [y, x.grad] + [p.grad for p in model.parameters()]


# ---- the modules ----------------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("cls_name", ["Conv1d", "Conv3d"])
def test_conv_modules_match_nn(cls_name, padding_mode):
    torch.manual_seed(0)
    ref = getattr(nn, cls_name)(4, 6, 3, padding_mode=padding_mode, dtype=torch.float64, **module_kwargs(cls_name))
    ours = getattr(myconv, cls_name)(4, 6, 3, padding_mode=padding_mode, dtype=torch.float64,
                                     **module_kwargs(cls_name))
    ours.load_state_dict(ref.state_dict())
    assert repr(ours) == repr(ref) and isinstance(ours, getattr(nn, cls_name))
    x = input_for(cls_name)
    for a, e in zip(forward_and_grads(ours, x), forward_and_grads(ref, x)):
        assert_rel_close(a, e, 1e-12)


@pytest.mark.parametrize("cls_name", ["ConvTranspose1d", "ConvTranspose3d"])
def test_transposed_modules_match_nn_with_output_size(cls_name):
    torch.manual_seed(0)
    kw = module_kwargs(cls_name)
    ref = getattr(nn, cls_name)(4, 6, 3, dtype=torch.float64, **kw)
    ours = getattr(myconv, cls_name)(4, 6, 3, dtype=torch.float64, **kw)
    ours.load_state_dict(ref.state_dict())
    assert repr(ours) == repr(ref) and isinstance(ours, getattr(nn, cls_name))
    x = input_for(cls_name)
    for a, e in zip(forward_and_grads(ours, x), forward_and_grads(ref, x)):
        assert_rel_close(a, e, 1e-12)
    # output_size picks the output padding, as in PyTorch
    size = [ref(x).shape[2 + i] - kw["output_padding"][i] for i in range(x.dim() - 2)]
    assert_rel_close(ours(x, output_size=size), ref(x, output_size=size), 1e-12)
    with pytest.raises(ValueError, match="padding mode is supported"):  # as nn's constructor says
        getattr(myconv, cls_name)(4, 6, 3, padding_mode="reflect")


@pytest.mark.parametrize("cls_name", CLASSES)
def test_modules_state_dicts_move_both_ways_and_script(cls_name, tmp_path):
    ref = getattr(nn, cls_name)(4, 6, 3, bias=False, **module_kwargs(cls_name)).double()
    ours = getattr(myconv, cls_name)(4, 6, 3, bias=False, **module_kwargs(cls_name)).double()
    ours.load_state_dict(ref.state_dict())
    back = getattr(nn, cls_name)(4, 6, 3, bias=False, **module_kwargs(cls_name)).double()
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.weight, ref.weight) and list(ours.state_dict()) == list(ref.state_dict())
    scripted = torch.jit.script(ours)
    x = input_for(cls_name)
    assert_rel_close(scripted(x), ref(x), 1e-12)


# ---- convert() ------------------------------------------------------------------------

class AudioNet(nn.Module):
    """A small 1-D encoder-decoder (wav2vec-style strided convolutions, a
    dilated layer, a transposed upsampler)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv1d(1, 8, 10, stride=5), nn.GELU(), nn.Conv1d(8, 8, 3, stride=2),
                                     nn.GELU(), nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=2))
        self.decoder = nn.ConvTranspose1d(8, 1, 4, stride=2, padding=1)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class OwnForward(nn.Conv3d):
    """A subclass with its own forward: left alone by convert."""

    def forward(self, x):
        return super().forward(x) * 2


class KeepsForward(nn.Conv3d):
    """A subclass that keeps nn.Conv3d's forward (like torchvision's Conv3DSimple)."""

    def extra_method(self):
        return "kept"


class KeepsForwardT(nn.ConvTranspose3d):
    pass


class VideoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = KeepsForward(3, 4, 3, padding=1)
        self.b = OwnForward(4, 4, 1)
        self.c = nn.Conv2d(4, 4, 1)
        self.d = KeepsForwardT(4, 2, 2, stride=2)

    def forward(self, x):
        y = self.b(self.a(x))
        n, c, d, h, w = y.shape
        y = self.c(y.transpose(1, 2).reshape(n * d, c, h, w)).reshape(n, d, c, h, w).transpose(1, 2)
        return self.d(y)


def test_convert_covers_all_six_classes_and_matches():
    torch.manual_seed(0)
    model = nn.ModuleList([nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.Conv3d(2, 3, 3), nn.ConvTranspose1d(2, 3, 3),
                           nn.ConvTranspose2d(2, 3, 3), nn.ConvTranspose3d(2, 3, 3)])
    converted = myconv.convert(copy.deepcopy(model))
    for m, ref in zip(converted, model):
        assert type(m) is getattr(myconv, type(ref).__name__)
        assert m.weight is not ref.weight and torch.equal(m.weight, ref.weight)


def test_convert_a_1d_model_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    ref = AudioNet().double()
    ours = myconv.convert(copy.deepcopy(ref))
    assert sum(isinstance(m, (myconv.Conv1d, myconv.ConvTranspose1d)) for m in ours.modules()) == 4
    x = torch.randn(2, 1, 400, dtype=torch.float64)
    for a, e in zip(forward_and_grads(ours, x), forward_and_grads(ref, x)):
        assert_rel_close(a, e, 1e-11)


def test_convert_subclasses_that_keep_the_forward():
    torch.manual_seed(0)
    ref = VideoNet().double()
    ours = myconv.convert(ref, inplace=False)
    assert isinstance(ours.a, KeepsForward) and isinstance(ours.a, myconv.modules._ConvMixin)
    assert ours.a.extra_method() == "kept" and type(ours.a).__name__ == "KeepsForward"
    assert isinstance(ours.d, KeepsForwardT) and isinstance(ours.d, myconv.modules._ConvTransposeMixin)
    assert type(ours.b) is OwnForward  # its own forward: left alone
    assert type(ours.c) is myconv.Conv2d
    x = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    for a, e in zip(forward_and_grads(ours, x), forward_and_grads(ref, x)):
        assert_rel_close(a, e, 1e-11)
    # converting again changes nothing; the converted class is made once
    assert type(myconv.convert(copy.deepcopy(ours)).a) is type(ours.a)


@pytest.mark.parametrize("lazy", [nn.LazyConv1d, nn.LazyConv2d, nn.LazyConv3d, nn.LazyConvTranspose1d,
                                  nn.LazyConvTranspose2d, nn.LazyConvTranspose3d], ids=lambda c: c.__name__)
def test_convert_lazy_convolutions_become_myconvs_on_their_first_call(lazy):
    dims = int(lazy.__name__[-2])
    m = myconv.convert(lazy(4, 3))
    x = torch.randn((2, 3) + (5,) * dims)
    y = m(x)
    assert type(m) is getattr(myconv, lazy.__name__.replace("Lazy", ""))
    ref = getattr(nn, lazy.__name__.replace("Lazy", ""))(3, 4, 3)
    ref.load_state_dict(m.state_dict())
    assert_rel_close(y, ref(x), 1e-5)


def test_converted_classes_of_local_subclasses_work_and_names_are_probed_safely():
    def make():
        class Local(nn.Conv1d):
            pass
        return Local(2, 3, 3)

    m = myconv.convert(make())
    assert isinstance(m, myconv.modules._ConvMixin) and type(m).__name__ == "Local"
    assert m(torch.randn(1, 2, 5)).shape == (1, 3, 3)
    for name in ("Converted_zz", "Converted_00ff", "Converted_" + b"nowhere:X".hex()):
        assert not hasattr(myconv.modules, name)


def test_converted_subclass_pickles_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = myconv.convert(VideoNet().double())
    x = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    torch.save((x, model(x).detach()), tmp_path / "xy.pt")
    again = pickle.loads(pickle.dumps(model))
    assert type(again.a) is type(model.a)
    code = (
        "import sys, torch, myconv\n"
        f"sys.path.insert(0, {str(__import__('os').path.dirname(__file__))!r})\n"
        f"m = torch.load({str(path)!r}, weights_only=False)\n"
        f"x, y = torch.load({str(tmp_path / 'xy.pt')!r})\n"
        "assert isinstance(m.a, myconv.modules._ConvMixin), type(m.a).__mro__\n"
        "assert torch.allclose(m(x), y, atol=1e-12)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_convert_torchvision_r3d_18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.video.r3d_18(weights=None).double().eval()
    ours = myconv.convert(ref, inplace=False)
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) > 0 and all(isinstance(m, myconv.modules._ConvMixin) for m in convs)
    assert any(type(m).__name__ == "Conv3DSimple" for m in convs)
    x = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    ours_out, ref_out = forward_and_grads(ours, x), forward_and_grads(ref, x)
    for a, e in zip(ours_out, ref_out):
        assert_rel_close(a, e, 1e-10)


# ---- opcheck ----------------------------------------------------------------------------

def _t(*shape, grad=False):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


SAMPLES = {
    "conv1d": [(_t(2, 4, 9, grad=True), _t(6, 2, 3, grad=True), _t(6, grad=True), [2], [1], [2], 2),
               (_t(4, 9, grad=True), _t(6, 4, 3, grad=True), None, [1], [0], [1], 1)],
    "conv3d": [(_t(2, 4, 4, 5, 4, grad=True), _t(6, 2, 3, 2, 3, grad=True), _t(6, grad=True), [2, 1, 1], [1, 0, 1],
                [1, 2, 1], 2),
               (_t(2, 4, 4, 5, 4, grad=True).contiguous(memory_format=torch.channels_last_3d),
                _t(4, 1, 3, 3, 3, grad=True), None, [1, 1, 1], [1, 1, 1], [1, 1, 1], 4),
               (_t(0, 2, 3, 3, 3, grad=True), _t(3, 2, 2, 2, 2, grad=True), _t(3), [1] * 3, [0] * 3, [1] * 3, 1)],
    "conv_transpose1d": [(_t(2, 4, 7, grad=True), _t(4, 3, 3, grad=True), _t(6, grad=True), [2], [1], [1], 2, [1])],
    "conv_transpose3d": [(_t(2, 4, 3, 4, 3, grad=True), _t(4, 3, 3, 2, 3, grad=True), _t(6, grad=True), [2, 1, 2],
                          [1, 0, 1], [1, 0, 0], 2, [1, 2, 1])],
}


@pytest.mark.parametrize("name, args", [(n, a) for n, samples in SAMPLES.items() for a in samples],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, args):
    opcheck(getattr(torch.ops.myconv, name).default, args)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_opcheck_padding_overload(dims, padding):
    x, w = _t((2, 4) + (6,) * dims, grad=True), _t((6, 2) + (2,) * dims, grad=True)
    opcheck(getattr(torch.ops.myconv, f"conv{dims}d").padding, (x, w, None, [1] * dims, padding, [1] * dims, 2))


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "requires_grad"])
def test_opcheck_backward(dims, grad):
    x, w = _t((2, 4) + (5,) * dims, grad=grad), _t((6, 2) + (3,) * dims, grad=grad)
    gy = _t((2, 6) + (3,) * dims, grad=grad)
    opcheck(getattr(torch.ops.myconv, f"conv{dims}d_backward").default,
            (gy, x, w, [1] * dims, [0] * dims, [1] * dims, 2, [True, True, True]))


# ---- compile, export, autocast, TorchScript, ONNX -----------------------------------------

def video_model():
    torch.manual_seed(0)
    return myconv.convert(nn.Sequential(
        nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)), nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding="same", groups=8), nn.ReLU(),
        nn.Conv3d(8, 4, 1), nn.ConvTranspose3d(4, 2, 2, stride=2),
    ))


def audio_model():
    return myconv.convert(AudioNet())


@pytest.mark.parametrize("make, shape", [(video_model, (2, 3, 4, 12, 12)), (audio_model, (2, 1, 200))],
                         ids=["3d", "1d"])
def test_torch_compile_fullgraph_forward_and_backward(make, shape):
    torch._dynamo.reset()
    model = make()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(shape, requires_grad=True)
    y, y_ref = compiled(x), model(x)
    assert_rel_close(y, y_ref, 1e-5)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert_rel_close(gx, gx_ref, 1e-5)


@pytest.mark.parametrize("make, shape, target", [(video_model, (2, 3, 4, 12, 12), "myconv.conv3d.default"),
                                                 (audio_model, (2, 1, 200), "myconv.conv1d.default")],
                         ids=["3d", "1d"])
def test_torch_export(make, shape, target):
    model = make().eval()
    x = torch.randn(shape)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert target in targets
    for n in (1, 3):
        x = torch.randn((n,) + shape[1:])
        assert_rel_close(program.module()(x), model(x), 1e-6)


def test_autocast_cpu_bfloat16_like_f():
    x3, w3 = torch.randn(2, 3, 4, 6, 6), torch.randn(4, 3, 3, 3, 3)
    x1, w1 = torch.randn(2, 3, 20), torch.randn(4, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pairs = [(myconv.conv3d(x3, w3, padding=1), F.conv3d(x3, w3, padding=1)),
                 (myconv.conv1d(x1, w1), F.conv1d(x1, w1)),
                 (myconv.conv_transpose3d(x3, w3.transpose(0, 1), stride=2),
                  F.conv_transpose3d(x3, w3.transpose(0, 1), stride=2))]
    for ours, ref in pairs:
        assert ours.dtype == ref.dtype == torch.bfloat16
        assert_rel_close(ours, ref.float(), 3e-2)


@pytest.mark.parametrize("make, shape", [(video_model, (2, 3, 4, 12, 12)), (audio_model, (2, 1, 200))],
                         ids=["3d", "1d"])
def test_torchscript_save_load_in_a_fresh_process(make, shape, tmp_path):
    model = make().eval()
    scripted = torch.jit.script(model)
    x = torch.randn(shape)
    assert_rel_close(scripted(x), model(x), 1e-6)
    torch.jit.save(scripted, str(tmp_path / "m.pt"))
    torch.save((x, model(x).detach()), tmp_path / "xy.pt")
    code = (
        "import torch, myconv\n"
        f"m = torch.jit.load({str(tmp_path / 'm.pt')!r})\n"
        f"x, y = torch.load({str(tmp_path / 'xy.pt')!r})\n"
        "assert torch.allclose(m(x), y, atol=1e-5), (m(x) - y).abs().max()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def onnx_run(proto, x):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("make, shape, convs", [(video_model, (2, 3, 4, 12, 12), (3, 1)),
                                                (audio_model, (2, 1, 200), (3, 1))], ids=["3d", "1d"])
def test_onnx_export_plain_call(make, shape, convs, dynamo):
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = make().eval()
    x = torch.randn(shape)
    f = io.BytesIO()
    if dynamo:
        program = torch.onnx.export(model, (x,), dynamo=True)
        proto = program.model_proto
    else:
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17)
        proto = onnx.load_model_from_string(f.getvalue())
    ops = [n.op_type for n in proto.graph.node]
    assert (ops.count("Conv"), ops.count("ConvTranspose")) == convs
    assert not any("myconv" in n.domain for n in proto.graph.node)
    assert_rel_close(onnx_run(proto, x), model(x), 1e-5)


@pytest.mark.parametrize("dims", [1, 3])
def test_onnx_translation_table_for_direct_op_calls(dims, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from myconv import onnx_export

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn((4, 3) + (3,) * dims))
            self.t = nn.Parameter(torch.randn((4, 2) + (2,) * dims))

        def forward(self, x):
            y = getattr(torch.ops.myconv, f"conv{dims}d")(x, self.w, None, [1] * dims, [1] * dims, [1] * dims, 1)
            return getattr(torch.ops.myconv, f"conv_transpose{dims}d")(y, self.t, None, [2] * dims, [0] * dims,
                                                                        [0] * dims, 1, [1] * dims)

    model = Direct().eval()
    x = torch.randn((2, 3) + (6,) * dims)
    path = tmp_path / "m.onnx"
    onnx_export.export(model, (x,), str(path))
    proto = onnx.load(str(path))
    assert sorted(n.op_type for n in proto.graph.node if "Conv" in n.op_type) == ["Conv", "ConvTranspose"]
    assert_rel_close(onnx_run(proto, x), model(x), 1e-5)
