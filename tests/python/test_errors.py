"""The bad-input catalogue: every invalid call raises a RuntimeError naming the
problem, before any allocation or kernel launch, and never crashes.

Calls that would read or write out of bounds (or divide by zero) if a check
were missing run in a subprocess, so a crash fails the test instead of killing
the run. docs/reliability.md lists the catalogue with the exact messages
(`python tests/python/test_errors.py` prints it); a test keeps the two in sync.
"""
import os
import subprocess
import sys

import pytest
import torch

import myconv

X = torch.randn(2, 3, 8, 8)
W = torch.randn(4, 3, 3, 3)
B = torch.randn(4)
BIG = 2**62


def conv(x=X, w=W, b=B, stride=1, padding=0, dilation=1, groups=1):
    return lambda: torch.ops.myconv.conv2d(x, w, b, stride, padding, dilation, groups)


def backward(gy, mask=(True, True, True)):
    return lambda: torch.ops.myconv.conv2d_backward(gy, X, W, [1, 1], [0, 0], [1, 1], 1, list(mask))


TW = torch.randn(3, 2, 3, 3)


def tconv(x=X, w=TW, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    return lambda: torch.ops.myconv.conv_transpose2d(x, w, b, pair(stride), pair(padding), pair(output_padding),
                                                     groups, pair(dilation))


# 1-D and 3-D: X1 (2, 3, 10), W1 (4, 3, 3); X3 (2, 3, 6, 6, 6), W3 (4, 3, 3, 3, 3);
# transposed: TW1 (3, 2, 3), TW3 (3, 2, 3, 3, 3).
X1, W1, TW1 = torch.randn(2, 3, 10), torch.randn(4, 3, 3), torch.randn(3, 2, 3)
X3, W3, TW3 = torch.randn(2, 3, 6, 6, 6), torch.randn(4, 3, 3, 3, 3), torch.randn(3, 2, 3, 3, 3)


def conv_nd(dims, x=None, w=None, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = {1: X1, 3: X3}[dims] if x is None else x
    w = {1: W1, 3: W3}[dims] if w is None else w
    lst = lambda v: [v] * dims if isinstance(v, int) else list(v)  # noqa: E731
    op = getattr(torch.ops.myconv, f"conv{dims}d")
    if isinstance(padding, str):
        return lambda: op.padding(x, w, b, lst(stride), padding, lst(dilation), groups)
    return lambda: op(x, w, b, lst(stride), lst(padding), lst(dilation), groups)


def tconv_nd(dims, x=None, w=None, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    x = {1: X1, 3: X3}[dims] if x is None else x
    w = {1: TW1, 3: TW3}[dims] if w is None else w
    lst = lambda v: [v] * dims if isinstance(v, int) else list(v)  # noqa: E731
    return lambda: getattr(torch.ops.myconv, f"conv_transpose{dims}d")(x, w, b, lst(stride), lst(padding),
                                                                       lst(output_padding), groups, lst(dilation))


def im2col(x=X, k=(3, 3), d=(1, 1), p=(0, 0), s=(1, 1)):
    return lambda: torch.ops.myconv.im2col(x, list(k), list(d), list(p), list(s))


def col2im(cols, size=(8, 8), k=(3, 3), d=(1, 1), p=(0, 0), s=(1, 1)):
    return lambda: torch.ops.myconv.col2im(cols, list(size), list(k), list(d), list(p), list(s))


# name -> (what the user did, the call, the start of the message they get)
# X: (2, 3, 8, 8) float32, W: (4, 3, 3, 3), B: (4,)
BAD_CALLS = {
    "input_2d": ("input of 2 dims", conv(x=torch.randn(8, 8)),
                 "myconv::conv2d: expected 3-D (unbatched) or 4-D (batched) input, but got input of size [8, 8]"),
    "input_5d": ("input of 5 dims", conv(x=torch.randn(1, 2, 3, 8, 8)),
                 "myconv::conv2d: expected 3-D (unbatched) or 4-D (batched) input, but got input of size [1, 2, 3, 8, 8]"),
    "weight_3d": ("weight of 3 dims", conv(w=torch.randn(4, 3, 3)),
                  "myconv::conv2d: expected 4-D weight of shape (out_channels, in_channels/groups, kH, kW), but got weight of size [4, 3, 3]"),
    "channel_mismatch": ("input with 5 channels, weight expecting 3", conv(x=torch.randn(2, 5, 8, 8)),
                         "myconv::conv2d: given groups=1, weight of size [4, 3, 3, 3], expected input[2, 5, 8, 8] to have 3 channels, but got 5 channels instead"),
    "groups_channel_mismatch": ("groups=2 with weight of 3 input channels per group, input of 3", conv(groups=2),
                                "myconv::conv2d: given groups=2, weight of size [4, 3, 3, 3], expected input[2, 3, 8, 8] to have 6 channels, but got 3 channels instead"),
    "groups_zero": ("groups=0", conv(groups=0), "myconv::conv2d: expected groups to be positive, but got groups=0"),
    "groups_negative": ("groups=-1", conv(groups=-1), "myconv::conv2d: expected groups to be positive, but got groups=-1"),
    "groups_not_dividing_out_channels": ("5 output channels, groups=3", conv(x=torch.randn(2, 6, 8, 8), w=torch.randn(5, 2, 3, 3), b=None, groups=3),
                                         "myconv::conv2d: given groups=3, expected weight.size(0)=5 (out_channels) to be divisible by groups"),
    "stride_zero": ("stride=0", conv(stride=0), "myconv::conv2d: expected stride to be positive, but got stride=[0, 0]"),
    "stride_negative": ("stride=[1, -2]", conv(stride=[1, -2]), "myconv::conv2d: expected stride to be positive, but got stride=[1, -2]"),
    "dilation_zero": ("dilation=[0, 1]", conv(dilation=[0, 1]), "myconv::conv2d: expected dilation to be positive, but got dilation=[0, 1]"),
    "padding_negative": ("padding=[-1, 0]", conv(padding=[-1, 0]), "myconv::conv2d: expected padding to be non-negative, but got padding=[-1, 0]"),
    "stride_three_values": ("stride=[1, 1, 1]", conv(stride=[1, 1, 1]), "myconv::conv2d: expected stride to be a list of 2 ints, but got stride=[1, 1, 1]"),
    "padding_one_value_list": ("padding=[1] (a list of one)", conv(padding=[1]), "myconv::conv2d: expected padding to be a list of 2 ints, but got padding=[1]"),
    "kernel_larger_than_padded_input": ("2x2 input, 3x3 kernel", conv(x=torch.randn(2, 3, 2, 2)),
                                        "myconv::conv2d: calculated padded input size per channel: (2 x 2). Dilated kernel size: (3 x 3). Kernel size can't be greater than actual input size"),
    "dilated_kernel_too_large": ("dilation=4 makes the 3x3 kernel 9x9 on an 8x8 input", conv(dilation=4),
                                 "myconv::conv2d: calculated padded input size per channel: (8 x 8). Dilated kernel size: (9 x 9)."),
    "bias_wrong_length": ("bias of 3 for 4 output channels", conv(b=torch.randn(3)),
                          "myconv::conv2d: given weight of size [4, 3, 3, 3], expected bias to be 1-D with 4 elements (out_channels), but got bias of size [3]"),
    "bias_2d": ("bias of shape (4, 1)", conv(b=torch.randn(4, 1)),
                "myconv::conv2d: given weight of size [4, 3, 3, 3], expected bias to be 1-D with 4 elements (out_channels), but got bias of size [4, 1]"),
    "empty_weight": ("weight with 0 output channels", conv(w=torch.randn(0, 3, 3, 3), b=None),
                     "myconv::conv2d: expected weight's dimensions (out_channels, in_channels/groups, kH, kW) to be non-zero, but got weight of size [0, 3, 3, 3]"),
    "empty_kernel": ("weight with a 0-wide kernel", conv(w=torch.randn(4, 3, 3, 0)),
                     "myconv::conv2d: expected weight's dimensions (out_channels, in_channels/groups, kH, kW) to be non-zero, but got weight of size [4, 3, 3, 0]"),
    "empty_spatial_input": ("input of height 0", conv(x=torch.randn(2, 3, 0, 8)),
                            "myconv::conv2d: expected input's non-batch dimensions (channels, height, width) to be non-zero, but got input of size [2, 3, 0, 8]"),
    "dtype_mismatch_weight": ("float32 input, float64 weight", conv(w=W.double()),
                              "myconv::conv2d: expected input and weight to have the same dtype, but got input of dtype Float and weight of dtype Double"),
    "dtype_mismatch_bias": ("float64 bias", conv(b=B.double()),
                            "myconv::conv2d: expected input and bias to have the same dtype, but got input of dtype Float and bias of dtype Double"),
    "integer_tensors": ("int64 tensors", conv(x=X.long(), w=W.long(), b=None),
                        "myconv::conv2d: expected input to be a floating-point tensor (float32, float64, float16 or bfloat16), but got input of dtype Long"),
    "bool_tensors": ("bool tensors", conv(x=X.bool(), w=W.bool(), b=None),
                     "myconv::conv2d: expected input to be a floating-point tensor (float32, float64, float16 or bfloat16), but got input of dtype Bool"),
    "complex_tensors": ("complex64 tensors", conv(x=X.cfloat(), w=W.cfloat(), b=None),
                        "myconv::conv2d: expected input to be a floating-point tensor (float32, float64, float16 or bfloat16), but got input of dtype ComplexFloat"),
    "device_mismatch": ("CPU input, meta weight", conv(w=W.to("meta")),
                        "myconv::conv2d: expected input and weight to be on the same device, but got input on cpu and weight on meta"),
    "sparse_input": ("sparse COO input", conv(x=X.to_sparse()),
                     "Could not run 'myconv::conv2d' with arguments from the 'SparseCPU' backend."),
    "quantized_input": ("quantized (quint8) input and weight",
                        lambda: conv(x=torch.quantize_per_tensor(X, 0.1, 0, torch.quint8),
                                     w=torch.quantize_per_tensor(W, 0.1, 0, torch.qint8), b=None)(),
                        "Could not run 'myconv::conv2d' with arguments from the 'QuantizedCPU' backend."),
    "padding_overflows_int64": ("padding=2**62", conv(padding=BIG),
                                "myconv::conv2d: padding=4611686018427387904 and dilation=1 with kernel size 3 and input size 8 overflow int64 (padded input or dilated kernel larger than 2^63 - 1)"),
    "dilation_overflows_int64": ("dilation=2**62", conv(dilation=BIG),
                                 "myconv::conv2d: padding=0 and dilation=4611686018427387904 with kernel size 3 and input size 8 overflow int64"),
    "output_numel_overflows_int64": ("padding=2**31: a (2, 4, 2^32, 2^32) output", conv(padding=2**31),
                                     "myconv::conv2d: the output of size [2, 4, 4294967302, 4294967302] would have more than 2^63 - 1 elements"),
    "padding_string_invalid": ("padding='full'", lambda: torch.ops.myconv.conv2d(X, W, B, [1, 1], "full", [1, 1], 1),
                               "myconv::conv2d: Invalid padding string: 'full' (expected 'same' or 'valid')"),
    "padding_same_strided": ("padding='same' with stride 2", lambda: torch.ops.myconv.conv2d(X, W, B, [2, 2], "same", [1, 1], 1),
                             "myconv::conv2d: padding='same' is not supported for strided convolutions, but got stride=[2, 2]"),
    "backward_grad_output_shape": ("grad_output of the wrong size", backward(torch.randn(2, 4, 5, 6)),
                                   "myconv::conv2d_backward: expected grad_output of size [2, 4, 6, 6] (the size of conv2d's output), but got grad_output of size [2, 4, 5, 6]"),
    "backward_grad_output_dtype": ("float64 grad_output", backward(torch.randn(2, 4, 6, 6, dtype=torch.float64)),
                                   "myconv::conv2d_backward: expected input and grad_output to have the same dtype, but got input of dtype Float and grad_output of dtype Double"),
    "im2col_kernel_zero": ("im2col, kernel_size=[0, 3]", im2col(k=(0, 3)), "myconv::im2col: expected kernel_size to be positive, but got kernel_size=[0, 3]"),
    "im2col_kernel_too_large": ("im2col, 9x3 kernel on 8x8", im2col(k=(9, 3)),
                                "myconv::im2col: given input with spatial size (8, 8), kernel_size=[9, 3], dilation=[1, 1], padding=[0, 0], the dilated kernel does not fit the padded input: there are no sliding blocks"),
    "im2col_2d_input": ("im2col of a 2-D tensor", im2col(x=torch.randn(8, 8)),
                        "myconv::im2col: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with non-zero C, H, W, but got input of size [8, 8]"),
    "col2im_not_divisible": ("col2im, 10 rows for a 3x3 kernel", col2im(torch.randn(2, 10, 36)),
                             "myconv::col2im: expected input.size(1)=10 to be divisible by the product of kernel_size=[3, 3]"),
    "col2im_wrong_block_count": ("col2im, 35 columns where 36 blocks fit", col2im(torch.randn(2, 9, 35), size=(8, 8)),
                                 "myconv::col2im: given output_size=[8, 8], kernel_size=[3, 3], dilation=[1, 1], padding=[0, 0], stride=[1, 1], expected input.size(2) to match the calculated number of sliding blocks 6 * 6 = 36, but got input.size(2)=35"),
    "col2im_output_size_zero": ("col2im, output_size=[0, 8]", col2im(torch.randn(2, 9, 36), size=(0, 8)),
                                "myconv::col2im: expected output_size to be a list of 2 positive ints, but got output_size=[0, 8]"),
    "col2im_stride_zero": ("col2im, stride=[0, 1]", col2im(torch.randn(2, 9, 36), s=(0, 1)),
                           "myconv::col2im: expected stride to be positive, but got stride=[0, 1]"),
    "workspace_limit_zero": ("set_workspace_limit(0)", lambda: myconv.set_workspace_limit(0),
                             "myconv: expected a positive workspace limit, but got 0 bytes"),
    # conv_transpose2d: TW is (3, 2, 3, 3) (in_channels 3, out_channels/groups 2)
    "transpose_output_padding": ("conv_transpose2d with output_padding=2, stride 2, dilation 1",
                                 tconv(output_padding=2, stride=2),
                                 "myconv::conv_transpose2d: output padding must be smaller than either stride or dilation, but got output_padding_height: 2 output_padding_width: 2 stride_height: 2 stride_width: 2 dilation_height: 1 dilation_width: 1"),
    "transpose_channel_mismatch": ("conv_transpose2d, input with 4 channels, weight for 3", tconv(x=torch.randn(2, 4, 8, 8)),
                                   "myconv::conv_transpose2d: given transposed=1, weight of size [3, 2, 3, 3], expected input[2, 4, 8, 8] to have 3 channels, but got 4 channels instead"),
    "transpose_groups_not_dividing": ("conv_transpose2d, groups=2 with 3 input channels", tconv(groups=2),
                                      "myconv::conv_transpose2d: given groups=2, expected weight.size(0)=3 (in_channels) to be divisible by groups"),
    "transpose_output_too_small": ("conv_transpose2d of a 1x1 input with padding 3", tconv(x=torch.randn(1, 3, 1, 1), padding=3),
                                   "myconv::conv_transpose2d: Given input size per channel: (1 x 1). Calculated output size per channel: (-3 x -3). Output size is too small"),
    "transpose_bias_wrong_length": ("conv_transpose2d, bias of 5 for 2 output channels", tconv(b=torch.randn(5)),
                                    "myconv::conv_transpose2d: given transposed=1, weight of size [3, 2, 3, 3], expected bias to be 1-D with 2 elements (out_channels), but got bias of size [5]"),
    "transpose_output_padding_negative": ("conv_transpose2d with output_padding=-1", tconv(output_padding=-1),
                                          "myconv::conv_transpose2d: expected output_padding to be non-negative, but got output_padding=[-1, -1]"),
    # conv1d / conv3d / conv_transpose1d / conv_transpose3d: the same checks, N-d
    "conv1d_input_4d": ("conv1d of a 4-D input", conv_nd(1, x=X),
                        "myconv::conv1d: expected 2-D (unbatched) or 3-D (batched) input, but got input of size [2, 3, 8, 8]"),
    "conv3d_weight_4d": ("conv3d with a 4-D weight", conv_nd(3, w=W),
                         "myconv::conv3d: expected 5-D weight of shape (out_channels, in_channels/groups, kT, kH, kW), but got weight of size [4, 3, 3, 3]"),
    "conv3d_stride_two_values": ("conv3d, stride=[1, 1]", conv_nd(3, stride=[1, 1]),
                                 "myconv::conv3d: expected stride to be a list of 3 ints, but got stride=[1, 1]"),
    "conv1d_padding_two_values": ("conv1d, padding=[1, 1]", conv_nd(1, padding=[1, 1]),
                                  "myconv::conv1d: expected padding to be a list of 1 int, but got padding=[1, 1]"),
    "conv1d_kernel_too_large": ("conv1d, 10 samples, kernel 3 dilated by 5", conv_nd(1, dilation=5),
                                "myconv::conv1d: calculated padded input size per channel: (10). Dilated kernel size: (11). Kernel size can't be greater than actual input size"),
    "conv3d_kernel_too_large": ("conv3d, 2x6x6 input, 3x3x3 kernel", conv_nd(3, x=torch.randn(2, 3, 2, 6, 6)),
                                "myconv::conv3d: calculated padded input size per channel: (2 x 6 x 6). Dilated kernel size: (3 x 3 x 3). Kernel size can't be greater than actual input size"),
    "conv3d_channel_mismatch": ("conv3d, input with 5 channels, weight expecting 3",
                                conv_nd(3, x=torch.randn(2, 5, 6, 6, 6)),
                                "myconv::conv3d: given groups=1, weight of size [4, 3, 3, 3, 3], expected input[2, 5, 6, 6, 6] to have 3 channels, but got 5 channels instead"),
    "conv1d_groups_not_dividing": ("conv1d, 4 output channels, groups=3", conv_nd(1, x=torch.randn(2, 3, 10), w=torch.randn(4, 1, 3), groups=3),
                                   "myconv::conv1d: given groups=3, expected weight.size(0)=4 (out_channels) to be divisible by groups"),
    "conv3d_empty_spatial_input": ("conv3d, input of depth 0", conv_nd(3, x=torch.randn(2, 3, 0, 6, 6)),
                                   "myconv::conv3d: expected input's non-batch dimensions (channels, depth, height, width) to be non-zero, but got input of size [2, 3, 0, 6, 6]"),
    "conv3d_padding_same_strided": ("conv3d, padding='same' with stride 2", conv_nd(3, padding="same", stride=2),
                                    "myconv::conv3d: padding='same' is not supported for strided convolutions, but got stride=[2, 2, 2]"),
    "conv3d_output_numel_overflows_int64": ("conv3d, padding=2**21: a (2, 4, 2^22, 2^22, 2^22) output",
                                            conv_nd(3, padding=2**21),
                                            "myconv::conv3d: the output of size [2, 4, 4194308, 4194308, 4194308] would have more than 2^63 - 1 elements"),
    "conv3d_backward_grad_output_shape": ("conv3d_backward, grad_output of the wrong size",
                                          lambda: torch.ops.myconv.conv3d_backward(torch.randn(2, 4, 4, 4, 5), X3, W3, [1] * 3, [0] * 3, [1] * 3, 1, [True] * 3),
                                          "myconv::conv3d_backward: expected grad_output of size [2, 4, 4, 4, 4] (the size of conv3d's output), but got grad_output of size [2, 4, 4, 4, 5]"),
    "transpose3d_output_padding": ("conv_transpose3d with output_padding=2, stride 2, dilation 1",
                                   tconv_nd(3, output_padding=2, stride=2),
                                   "myconv::conv_transpose3d: output padding must be smaller than either stride or dilation, but got output_padding_depth: 2 output_padding_height: 2 output_padding_width: 2 stride_depth: 2 stride_height: 2 stride_width: 2 dilation_depth: 1 dilation_height: 1 dilation_width: 1"),
    "transpose1d_output_too_small": ("conv_transpose1d of 1 sample with padding 3", tconv_nd(1, x=torch.randn(1, 3, 1), padding=3),
                                     "myconv::conv_transpose1d: Given input size per channel: (1). Calculated output size per channel: (-3). Output size is too small"),
    "transpose3d_channel_mismatch": ("conv_transpose3d, input with 4 channels, weight for 3",
                                     tconv_nd(3, x=torch.randn(2, 4, 6, 6, 6)),
                                     "myconv::conv_transpose3d: given transposed=1, weight of size [3, 2, 3, 3, 3], expected input[2, 4, 6, 6, 6] to have 3 channels, but got 4 channels instead"),
}

# Without their check these would divide by zero or touch memory out of bounds.
CRASH_PRONE = [
    "transpose_channel_mismatch", "transpose_output_padding", "transpose_output_too_small",
    "channel_mismatch", "groups_zero", "groups_not_dividing_out_channels", "stride_zero",
    "dilation_zero", "padding_negative", "kernel_larger_than_padded_input", "bias_wrong_length",
    "padding_overflows_int64", "dilation_overflows_int64", "backward_grad_output_shape",
    "col2im_wrong_block_count", "col2im_stride_zero", "conv1d_kernel_too_large", "conv3d_kernel_too_large",
    "conv3d_channel_mismatch", "conv3d_backward_grad_output_shape", "transpose3d_output_padding",
    "transpose1d_output_too_small", "transpose3d_channel_mismatch",
]


def message_of(call) -> str:
    """First line of the error (first sentence of the dispatcher's long ones)."""
    try:
        call()
    except RuntimeError as e:
        return str(e).splitlines()[0].split(" This could be because")[0]
    raise AssertionError("no error raised")


@pytest.mark.parametrize("name", sorted(set(BAD_CALLS) - set(CRASH_PRONE)))
def test_bad_input_raises(name):
    _, call, message = BAD_CALLS[name]
    with pytest.raises(RuntimeError) as info:
        call()
    assert message in str(info.value)


_SUBPROCESS = """
import sys
sys.path.insert(0, {here!r})
from test_errors import BAD_CALLS
_, call, message = BAD_CALLS[{name!r}]
try:
    call()
except RuntimeError as e:
    sys.exit(0 if message in str(e) else 3)
sys.exit(2)
"""


@pytest.mark.parametrize("name", CRASH_PRONE)
def test_crash_prone_bad_input_raises_in_subprocess(name):
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS.format(here=here, name=name)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.returncode != 2, "no error was raised"
    assert proc.returncode == 0, f"unexpected message: {proc.stderr[-2000:]}"


def test_catalogue_is_large_and_documented():
    assert len(BAD_CALLS) >= 20
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "reliability.md")).read()
    missing = [name for name, (_, _, message) in BAD_CALLS.items() if message not in doc]
    assert not missing, f"not in docs/reliability.md (regenerate with python tests/python/test_errors.py): {missing}"


def test_a_failed_call_leaves_no_state_behind():
    for _, call, _ in BAD_CALLS.values():
        with pytest.raises(RuntimeError):
            call()
    out = myconv.conv2d(X, W, B, padding=1)
    assert torch.allclose(out, torch.nn.functional.conv2d(X, W, B, padding=1), atol=1e-5)


def test_nan_and_inf_propagate_like_f_conv2d():
    x = X.clone()
    x[0, 0, 2, 2] = float("nan")
    x[1, 1, 5, 5] = float("inf")
    ours = myconv.conv2d(x, W, B, padding=1)
    ref = torch.nn.functional.conv2d(x, W, B, padding=1)
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours.isinf(), ref.isinf())
    assert torch.equal(ours.isfinite(), ref.isfinite())


def test_meta_tensors_are_valid_input():
    # Not an error: meta tensors get shapes only, from the same checks.
    y = torch.ops.myconv.conv2d(X.to("meta"), W.to("meta"), None, [2, 1], [1, 1], [1, 1], 1)
    assert y.device.type == "meta" and y.shape == (2, 4, 4, 8)


def markdown() -> str:
    rows = ["| # | the call | message |", "|---|---|---|"]
    for i, (name, (what, call, _)) in enumerate(BAD_CALLS.items(), 1):
        rows.append(f"| {i} | {what} (`{name}`) | `{message_of(call)}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
