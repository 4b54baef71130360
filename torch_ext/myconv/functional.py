"""Functional API with the signatures of ``torch.nn.functional``."""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from . import _library  # noqa: F401  (loads the ops)
from . import onnx_export

_size_2_t = Union[int, Tuple[int, int], Sequence[int]]


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: _size_2_t = 1,
    padding: Union[str, _size_2_t] = 0,
    dilation: _size_2_t = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution, drop-in for :func:`torch.nn.functional.conv2d`.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in / groups, kH, kW)``.
        bias: ``(C_out,)`` or None.
        stride, dilation: an int or a pair.
        padding: an int, a pair, ``"valid"`` (no padding) or ``"same"`` (output
            as large as the input; stride 1 only; an odd total puts the extra
            zero at the bottom / right, as PyTorch does).
        groups: number of blocked connections from input to output channels.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or ``(C_out, H_out, W_out)`` when unbatched),
        computed as im2col + GEMM by ``torch.ops.myconv.conv2d``.
    """
    if not torch.jit.is_scripting():  # (TorchScript skips this block)
        if onnx_export.exporting():  # an ONNX Conv node
            return onnx_export.conv2d_node(input, weight, bias, _pair(stride),
                                           padding if isinstance(padding, str) else _pair(padding),
                                           _pair(dilation), groups)
    if isinstance(padding, str):
        return torch.ops.myconv.conv2d.padding(
            input, weight, bias, _pair(stride), padding, _pair(dilation), groups
        )
    return torch.ops.myconv.conv2d(
        input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups
    )


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: _size_2_t = 1,
    padding: _size_2_t = 0,
    output_padding: _size_2_t = 0,
    groups: int = 1,
    dilation: _size_2_t = 1,
) -> Tensor:
    """2-D transposed convolution, drop-in for :func:`torch.nn.functional.conv_transpose2d`.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_in, C_out / groups, kH, kW)``.
        bias: ``(C_out,)`` or None.
        stride, padding, output_padding, dilation: an int or a pair; each
            ``output_padding`` entry must be smaller than the stride or the
            dilation of its axis.
        groups: number of blocked connections from input to output channels.

    Returns:
        ``(N, C_out, H_out, W_out)`` with ``H_out = (H - 1) * stride - 2 * padding
        + dilation * (kH - 1) + output_padding + 1``, computed as conv2d's input
        gradient (GEMM, then col2im) by ``torch.ops.myconv.conv_transpose2d``.
    """
    args = (_pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation))
    if not torch.jit.is_scripting():  # (TorchScript skips this block)
        if onnx_export.exporting():  # an ONNX ConvTranspose node
            return onnx_export.conv_transpose2d_node(input, weight, bias, *args)
    return torch.ops.myconv.conv_transpose2d(input, weight, bias, *args)


def im2col(
    input: Tensor,
    kernel_size: _size_2_t,
    dilation: _size_2_t = 1,
    padding: _size_2_t = 0,
    stride: _size_2_t = 1,
) -> Tensor:
    """Sliding blocks to columns, drop-in for :func:`torch.nn.functional.unfold`:
    ``(N, C, H, W) -> (N, C*kH*kW, L)``, unbatched ``(C, H, W) -> (C*kH*kW, L)``."""
    return torch.ops.myconv.im2col(
        input, _pair(kernel_size), _pair(dilation), _pair(padding), _pair(stride)
    )


def col2im(
    input: Tensor,
    output_size: _size_2_t,
    kernel_size: _size_2_t,
    dilation: _size_2_t = 1,
    padding: _size_2_t = 0,
    stride: _size_2_t = 1,
) -> Tensor:
    """Columns back to an image, summing overlaps; drop-in for
    :func:`torch.nn.functional.fold`: ``(N, C*kH*kW, L) -> (N, C, H, W)``,
    unbatched ``(C*kH*kW, L) -> (C, H, W)``."""
    return torch.ops.myconv.col2im(
        input,
        _pair(output_size),
        _pair(kernel_size),
        _pair(dilation),
        _pair(padding),
        _pair(stride),
    )
