"""Every bad input raises a RuntimeError naming the problem, never crashes.

Calls that would read or write out of bounds (or divide by zero) if a check
were missing run in a subprocess, so a crash fails the test instead of
killing the test run.
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


def conv(x=X, w=W, b=B, stride=1, padding=0, dilation=1, groups=1):
    return lambda: torch.ops.myconv.conv2d(x, w, b, stride, padding, dilation, groups)


# name -> (call, fragment of the message users get)
BAD_CALLS = {
    "input_2d": (conv(x=torch.randn(8, 8)), "expected 3-D (unbatched) or 4-D (batched) input, but got input of size [8, 8]"),
    "input_5d": (conv(x=torch.randn(1, 2, 3, 8, 8)), "expected 3-D (unbatched) or 4-D (batched) input"),
    "weight_3d": (conv(w=torch.randn(4, 3, 3)), "expected 4-D weight of shape (out_channels, in_channels/groups, kH, kW), but got weight of size [4, 3, 3]"),
    "channel_mismatch": (conv(x=torch.randn(2, 5, 8, 8)), "given groups=1, weight of size [4, 3, 3, 3], expected input[2, 5, 8, 8] to have 3 channels, but got 5 channels instead"),
    "groups_channel_mismatch": (conv(groups=2, w=torch.randn(4, 3, 3, 3)), "expected input[2, 3, 8, 8] to have 6 channels"),
    "groups_zero": (conv(groups=0), "expected groups to be positive, but got groups=0"),
    "groups_negative": (conv(groups=-1), "expected groups to be positive, but got groups=-1"),
    "groups_not_dividing_out_channels": (conv(x=torch.randn(2, 6, 8, 8), w=torch.randn(5, 2, 3, 3), b=None, groups=3), "expected weight.size(0)=5 (out_channels) to be divisible by groups"),
    "stride_zero": (conv(stride=0), "expected stride to be positive, but got stride=[0, 0]"),
    "stride_negative": (conv(stride=[1, -2]), "expected stride to be positive, but got stride=[1, -2]"),
    "dilation_zero": (conv(dilation=[0, 1]), "expected dilation to be positive, but got dilation=[0, 1]"),
    "padding_negative": (conv(padding=[-1, 0]), "expected padding to be non-negative, but got padding=[-1, 0]"),
    "stride_three_values": (conv(stride=[1, 1, 1]), "expected stride to be a list of 2 ints, but got stride=[1, 1, 1]"),
    "kernel_larger_than_padded_input": (conv(x=torch.randn(2, 3, 2, 2)), "Kernel size can't be greater than actual input size"),
    "dilated_kernel_too_large": (conv(dilation=4), "Dilated kernel size: (9 x 9)"),
    "bias_wrong_length": (conv(b=torch.randn(3)), "expected bias to be 1-D with 4 elements (out_channels), but got bias of size [3]"),
    "bias_2d": (conv(b=torch.randn(4, 1)), "but got bias of size [4, 1]"),
    "empty_weight": (conv(w=torch.randn(0, 3, 3, 3), b=None), "expected weight's dimensions (out_channels, in_channels/groups, kH, kW) to be non-zero"),
    "empty_spatial_input": (conv(x=torch.randn(2, 3, 0, 8)), "expected input's non-batch dimensions (channels, height, width) to be non-zero"),
    "dtype_mismatch_weight": (conv(w=W.double()), "expected input and weight to have the same dtype, but got input of dtype Float and weight of dtype Double"),
    "dtype_mismatch_bias": (conv(b=B.double()), "expected input and bias to have the same dtype"),
    "integer_tensors": (conv(x=X.long(), w=W.long(), b=None), "expected input to be a floating-point tensor (float32, float64, float16 or bfloat16), but got input of dtype Long"),
    "bool_tensors": (conv(x=X.bool(), w=W.bool(), b=None), "but got input of dtype Bool"),
    "complex_tensors": (conv(x=X.cfloat(), w=W.cfloat(), b=None), "but got input of dtype ComplexFloat"),
    "device_mismatch": (conv(w=W.to("meta")), "expected input and weight to be on the same device, but got input on cpu and weight on meta"),
    "backward_grad_output_shape": (
        lambda: torch.ops.myconv.conv2d_backward(torch.randn(2, 4, 5, 6), X, W, [1, 1], [0, 0], [1, 1], 1, [True, True, True]),
        "expected grad_output of size [2, 4, 6, 6] (the size of conv2d's output), but got grad_output of size [2, 4, 5, 6]"),
    "im2col_kernel_zero": (lambda: torch.ops.myconv.im2col(X, [0, 3], [1, 1], [0, 0], [1, 1]), "expected kernel_size to be positive"),
    "im2col_kernel_too_large": (lambda: torch.ops.myconv.im2col(X, [9, 3], [1, 1], [0, 0], [1, 1]), "there are no sliding blocks"),
    "im2col_2d_input": (lambda: torch.ops.myconv.im2col(torch.randn(8, 8), [3, 3], [1, 1], [0, 0], [1, 1]), "expected a 3-D (C, H, W) or 4-D (N, C, H, W) input"),
    "col2im_not_divisible": (lambda: torch.ops.myconv.col2im(torch.randn(2, 10, 36), [8, 8], [3, 3], [1, 1], [0, 0], [1, 1]), "to be divisible by the product of kernel_size"),
    "col2im_wrong_block_count": (lambda: torch.ops.myconv.col2im(torch.randn(2, 9, 35), [8, 8], [3, 3], [1, 1], [0, 0], [1, 1]), "to match the calculated number of sliding blocks 6 * 6 = 36, but got input.size(2)=35"),
    "col2im_stride_zero": (lambda: torch.ops.myconv.col2im(torch.randn(2, 9, 36), [8, 8], [3, 3], [1, 1], [0, 0], [0, 1]), "expected stride to be positive"),
}

# Without their check these would divide by zero or touch memory out of bounds.
CRASH_PRONE = [
    "channel_mismatch", "groups_zero", "groups_not_dividing_out_channels", "stride_zero",
    "dilation_zero", "padding_negative", "kernel_larger_than_padded_input", "bias_wrong_length",
    "backward_grad_output_shape", "col2im_wrong_block_count", "col2im_stride_zero",
]


@pytest.mark.parametrize("name", sorted(set(BAD_CALLS) - set(CRASH_PRONE)))
def test_bad_input_raises(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(RuntimeError) as info:
        call()
    assert message in str(info.value)


_SUBPROCESS = """
import sys
sys.path.insert(0, {here!r})
from test_errors import BAD_CALLS
call, message = BAD_CALLS[{name!r}]
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


def test_a_failed_call_leaves_no_state_behind():
    for call, _ in BAD_CALLS.values():
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
