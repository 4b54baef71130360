"""myconv.explain() and MYCONV_VERBOSE: the plans a call makes, shown before
(explain) and as it runs (verbose), and checked against what the call does:
the workspace a plan declares is the peak the call holds, the path and engine
a verbose line names are the ones a test forces."""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import myconv
from conftest import cuda_plan_on_cpu


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


# (name, input, weight, explain's keywords, the op's call)
LAYERS = {
    "3x3": (lambda: (t(4, 32, 20, 20), t(48, 32, 3, 3)), dict(padding=1)),
    "3x3 stride 2": (lambda: (t(4, 32, 20, 20), t(48, 32, 3, 3)), dict(stride=2, padding=1)),
    "1x1": (lambda: (t(4, 64, 14, 14), t(32, 64, 1, 1)), dict()),
    "depthwise": (lambda: (t(2, 32, 16, 16), t(32, 1, 3, 3)), dict(padding=1, groups=32)),
    "grouped": (lambda: (t(2, 128, 10, 10), t(128, 32, 3, 3)), dict(padding=1, groups=4)),
    "deep, batch 1": (lambda: (t(1, 256, 7, 7), t(512, 256, 3, 3)), dict(padding=1)),
    "channels_last": (lambda: (t(4, 32, 20, 20).to(memory_format=torch.channels_last), t(48, 32, 3, 3)),
                      dict(padding=1)),
    "1-D": (lambda: (t(4, 16, 300), t(24, 16, 5)), dict(padding=2, dilation=2)),
    "3-D": (lambda: (t(2, 8, 6, 10, 10), t(16, 8, 3, 3, 3)), dict(padding=1)),
}


def _run_forward(x, w, kw):
    dims = w.dim() - 2
    return getattr(myconv, f"conv{dims}d")(x, w, None, **kw)


def _backward(x, w, kw, mask):
    dims = w.dim() - 2
    ints = lambda v: [v] * dims if isinstance(v, int) else list(v)  # noqa: E731
    y = _run_forward(x, w, kw)
    op = getattr(torch.ops.myconv, f"conv{dims}d_backward")
    return op(torch.ones_like(y), x, w, ints(kw.get("stride", 1)), ints(kw.get("padding", 0)),
              ints(kw.get("dilation", 1)), kw.get("groups", 1), mask)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_plan_declares_the_workspace_its_pass_holds(name):
    make, kw = LAYERS[name]
    x, w = make()
    e = myconv.explain(x, w, **kw)
    (forward,) = e["forward"]
    grad_input, grad_weight = e["backward"]
    assert [p["computes"] for p in (forward, grad_input, grad_weight)] == ["output", "grad_input", "grad_weight"]
    _run_forward(x, w, kw)
    assert torch.ops.myconv._last_workspace_peak() == forward["workspace"]["total"]
    _backward(x, w, kw, [True, False, False])
    assert torch.ops.myconv._last_workspace_peak() == grad_input["workspace"]["total"]
    _backward(x, w, kw, [False, True, False])
    assert torch.ops.myconv._last_workspace_peak() == grad_weight["workspace"]["total"]
    for plan in (forward, grad_input, grad_weight):
        assert plan["workspace"]["total"] <= plan["workspace"]["limit"] == myconv.get_workspace_limit()


def test_the_paths_follow_the_shapes():
    def paths(name):
        make, kw = LAYERS[name]
        e = myconv.explain(*make(), **kw)
        return {p["path"] for p in e["forward"] + e["backward"]}

    assert paths("3x3") == {"columns"}
    assert paths("1x1") == {"gemm_on_views"}
    assert paths("depthwise") == {"direct_grouped"}
    assert paths("grouped") == {"columns"}
    e = myconv.explain(*LAYERS["channels_last"][0](), padding=1)
    assert {p["layout"] for p in e["forward"] + e["backward"]} == {"channels_last"}
    e = myconv.explain(*LAYERS["deep, batch 1"][0](), padding=1)
    assert e["forward"][0]["output_channel_blocks"]["count"] > 1  # one tile: the output channels are cut


def test_meta_and_fake_tensors_give_the_plan_of_real_ones():
    x, w = t(8, 64, 28, 28), t(64, 64, 3, 3)
    real = myconv.explain(x, w, padding=1)
    meta = myconv.explain(x.to("meta"), w.to("meta"), padding=1)
    assert meta == real
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = myconv.explain(mode.from_tensor(x), mode.from_tensor(w), padding=1)
    assert fake == real


def test_modules_and_string_padding():
    x = t(2, 16, 12, 12)
    conv = myconv.Conv2d(16, 8, 3, padding="same", bias=True)
    by_module = myconv.explain(conv, x)
    assert by_module == myconv.explain(x, conv.weight, conv.bias, padding="same")
    assert by_module["padding"] == [1, 1]
    # torch.nn's modules too (what myconv.convert would run), and padding modes that pad the input first
    reflect = torch.nn.Conv2d(16, 8, 3, padding=2, padding_mode="reflect")
    e = myconv.explain(reflect, x)
    assert e["input"] == [2, 16, 16, 16] and e["padding"] == [0, 0]
    up = torch.nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1, output_padding=1)
    e = myconv.explain(up, x)
    assert e["op"] == "conv_transpose2d"
    assert e == myconv.explain(x, up.weight, up.bias, stride=2, padding=1, output_padding=1, transposed=True)
    assert [p["pass"] for p in e["forward"] + e["backward"]] == ["grad_input", "forward", "grad_weight"]
    y = myconv.conv_transpose2d(x, up.weight, up.bias, stride=2, padding=1, output_padding=1)
    assert torch.ops.myconv._last_workspace_peak() == e["forward"][0]["workspace"]["total"]
    # backward's convolution runs on the output's gradient
    assert e["backward"][0]["problem"]["input_size"] == [1, *y.shape[2:]]


def test_explain_checks_its_arguments_as_the_op_does():
    x, w = t(2, 16, 12, 12), t(8, 4, 3, 3)
    with pytest.raises(RuntimeError) as op_error:
        torch.ops.myconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError) as explain_error:
        myconv.explain(x, w, padding=1)
    assert str(explain_error.value).splitlines()[0] == str(op_error.value).splitlines()[0]
    with pytest.raises(TypeError, match="convolution module"):
        myconv.explain(torch.nn.Linear(2, 2), x)


def test_printed_it_reads_one_line_per_pass():
    e = myconv.explain(*LAYERS["3x3"][0](), padding=1)
    text = str(e)
    assert text.startswith("myconv.explain: conv2d on cpu, float32, input (4, 32, 20, 20)")
    for plan in e["forward"] + e["backward"]:
        assert plan["summary"] in text
    assert json.loads(json.dumps(e)) == e  # plain data


@pytest.mark.skipif(not myconv.cuda_built(), reason="myconv built without CUDA")
def test_the_cuda_plan_is_shown_without_a_gpu():
    x, w = t(16, 64, 28, 28), t(64, 64, 3, 3)
    e = myconv.explain(x.to("meta"), w.to("meta"), padding=1, device="cuda")
    assert e["device"] == "cuda"
    for plan in e["forward"] + e["backward"]:
        assert plan["engine"].startswith("cublas/")
        assert plan["workers"] == 1 and plan["tiles"]["tiles_per_image"] == 1
    # the CPU replay of the CUDA plan cuts the work the same way
    with cuda_plan_on_cpu():
        replay = myconv.explain(x, w, padding=1)
    for a, b in zip(e["forward"] + e["backward"], replay["forward"] + replay["backward"]):
        assert (a["tiles"], a["items"], a["path"]) == (b["tiles"], b["items"], b["path"])
        assert b["engine"] == "cublas-replay"


def test_autotune_state_is_shown():
    x, w = t(2, 32, 24, 24), t(32, 32, 3, 3)
    torch.ops.myconv._clear_autotune_cache()
    myconv.set_autotune(True)
    try:
        assert myconv.explain(x, w, padding=1)["forward"][0]["autotune"] == "pending"
        myconv.conv2d(x, w, padding=1)
        tuned = myconv.explain(x, w, padding=1)["forward"][0]
        assert tuned["autotune"] == "tuned"
        myconv.conv2d(x, w, padding=1)
        assert torch.ops.myconv._last_workspace_peak() == tuned["workspace"]["total"]
    finally:
        myconv.set_autotune(False)
        torch.ops.myconv._clear_autotune_cache()
    assert myconv.explain(x, w, padding=1)["forward"][0]["autotune"] == "off"


# ---- MYCONV_VERBOSE ---------------------------------------------------------------------

@pytest.fixture
def verbose_lines(caplog):
    """Turns verbose level 1 on; yields a function returning the lines logged so far."""
    caplog.set_level(logging.INFO, logger="myconv")
    before = myconv.get_verbose()

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "myconv"]

    yield lines
    myconv.set_verbose(before)


def test_verbose_logs_one_line_per_call_naming_the_forced_path(verbose_lines):
    x, w = t(2, 16, 12, 12, dtype=torch.float64), t(8, 16, 3, 3, dtype=torch.float64)
    myconv.set_verbose(1)
    saved = myconv.get_cpu_gemm_engine()
    try:
        myconv.set_cpu_gemm_engine("aten")
        myconv.conv2d(x, w, padding=1)
        myconv.conv2d(x, w[:, :2].contiguous(), padding=1, groups=8)  # 2 channels a group: direct kernels
        myconv.conv2d(x, w[:, :, :1, :1].contiguous())  # 1x1: GEMMs on the tensors
    finally:
        myconv.set_cpu_gemm_engine(saved)
    lines = verbose_lines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("myconv::conv2d cpu float64 input=(2, 16, 12, 12) weight=(8, 16, 3, 3) stride=(1, 1) "
                               "padding=(1, 1)")
    assert "forward path=columns layout=channels_first engine=aten" in lines[0]
    assert "forward path=direct_grouped" in lines[1]
    assert "forward path=gemm_on_views" in lines[2]
    assert myconv.explain(x, w, padding=1)["forward"][0]["summary"].replace("engine=onednn", "engine=aten") \
        .replace("engine=blas", "engine=aten") in lines[0]
    assert "time=" not in lines[0]


def test_verbose_lines_follow_the_backward_and_level_2_adds_the_time(verbose_lines):
    x, w = t(2, 16, 12, 12).requires_grad_(), t(8, 16, 3, 3).requires_grad_()
    myconv.set_verbose(2)
    myconv.conv2d(x, w, padding=1).sum().backward()
    myconv.set_verbose(0)
    myconv.conv2d(x, w, padding=1)  # off: nothing
    lines = verbose_lines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("myconv::conv2d ") and lines[1].startswith("myconv::conv2d_backward ")
    assert " | grad_input path=" in lines[1] and " | grad_weight path=" in lines[1]
    assert all(" | time=" in line and line.endswith("ms") for line in lines)


def test_verbose_level_is_checked():
    with pytest.raises(RuntimeError, match="verbose level"):
        myconv.set_verbose(3)


def test_myconv_verbose_from_the_environment_prints_to_stderr():
    code = ("import torch, myconv; x = torch.randn(1, 3, 8, 8); w = torch.randn(4, 3, 3, 3);"
            "myconv.conv_transpose2d(torch.randn(1, 4, 6, 6), w); myconv.conv2d(x, w)")
    env = dict(os.environ, MYCONV_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("myconv::")]
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("myconv::conv_transpose2d cpu float32 input=(1, 4, 6, 6)")
    assert "grad_input path=columns" in lines[0]
    assert lines[1].startswith("myconv::conv2d cpu float32 input=(1, 3, 8, 8)")


def test_an_empty_batch_has_a_plan_with_no_work():
    e = myconv.explain(t(0, 16, 8, 8), t(8, 16, 3, 3), padding=1)
    assert all(plan["items"] == 0 and plan["tiles"]["count"] == 0 for plan in e["forward"] + e["backward"])


def test_packed_weight_blocks_are_counted_only_where_they_are_copied():
    # channels-last grad_input cut into blocks of part of a group's channels packs each block's weight
    # columns, unless they are contiguous already (one output channel of a 1x1 kernel)
    for out_channels, kernel in ((1, 1), (2, 1), (1, 3)):
        x = t(1, 256, 8, 8).to(memory_format=torch.channels_last)
        w = t(out_channels, 256, kernel, kernel)
        (plan,) = [p for p in myconv.explain(x, w, padding=kernel // 2)["backward"] if p["computes"] == "grad_input"]
        assert plan["channel_blocks"]["count"] > 1
        copied = out_channels * kernel * kernel > 1
        assert (plan["workspace"]["packed_weight"] > 0) == copied
        _backward(x, w, dict(padding=kernel // 2), [True, False, False])  # the pass asserts it made what was planned
        assert torch.ops.myconv._last_workspace_peak() == plan["workspace"]["total"]


def test_verbose_set_through_the_op_still_shows_its_lines(capfd):
    # a level set without myconv.set_verbose (torch.ops, or C++'s myconv::set_verbose) still shows lines
    code = ("import logging, torch, myconv; torch.ops.myconv._set_verbose(1);"
            "myconv.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "myconv::conv2d cpu float32" in out.stderr
