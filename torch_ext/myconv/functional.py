"""Functional API with the signatures of ``torch.nn.functional``: convolutions
of 1, 2 and 3 spatial dimensions, their transposes, and im2col / col2im."""
from collections.abc import Iterable
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.modules.utils import _pair

from . import _library  # noqa: F401  (loads the ops)
from . import onnx_export

_size_any_t = Union[int, Sequence[int]]
_size_2_t = Union[int, Tuple[int, int], Sequence[int]]


# The ops, looked up once (torch.ops attribute lookups cost a tiny call
# noticeable time).
_CONV = {d: getattr(torch.ops.myconv, f"conv{d}d") for d in (1, 2, 3)}
_CONV_TRANSPOSE = {d: getattr(torch.ops.myconv, f"conv_transpose{d}d") for d in (1, 2, 3)}


def _ints(value, dims: int) -> list:
    """An int, or a sequence of them, as a list of ``dims`` ints: what
    ``torch.nn.modules.utils._ntuple(dims)`` gives, at a fraction of its cost."""
    if isinstance(value, int):
        return [value] * dims
    if isinstance(value, Iterable):
        return list(value)
    return [value] * dims


def _conv(dims: int, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation,
          groups: int) -> Tensor:
    stride, dilation = _ints(stride, dims), _ints(dilation, dims)
    padding = padding if isinstance(padding, str) else _ints(padding, dims)
    if onnx_export.exporting():  # an ONNX Conv node
        return onnx_export.conv_node(dims, input, weight, bias, stride, padding, dilation, groups)
    op = _CONV[dims]
    if isinstance(padding, str):
        return op.padding(input, weight, bias, stride, padding, dilation, groups)
    return op(input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(dims: int, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding,
                    output_padding, groups: int, dilation) -> Tensor:
    args = (_ints(stride, dims), _ints(padding, dims), _ints(output_padding, dims), groups, _ints(dilation, dims))
    if onnx_export.exporting():  # an ONNX ConvTranspose node
        return onnx_export.conv_transpose_node(dims, input, weight, bias, *args)
    return _CONV_TRANSPOSE[dims](input, weight, bias, *args)


def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any_t = 1,
           padding: Union[str, _size_any_t] = 0, dilation: _size_any_t = 1, groups: int = 1) -> Tensor:
    """1-D convolution, drop-in for :func:`torch.nn.functional.conv1d`.

    input ``(N, C_in, L)`` or unbatched ``(C_in, L)``; weight
    ``(C_out, C_in / groups, kW)``; padding an int, a 1-tuple, ``"valid"`` or
    ``"same"``. Computed as im2col + GEMM by ``torch.ops.myconv.conv1d``.
    """
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


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
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any_t = 1,
           padding: Union[str, _size_any_t] = 0, dilation: _size_any_t = 1, groups: int = 1) -> Tensor:
    """3-D convolution, drop-in for :func:`torch.nn.functional.conv3d`.

    input ``(N, C_in, D, H, W)`` or unbatched ``(C_in, D, H, W)``; weight
    ``(C_out, C_in / groups, kT, kH, kW)``; padding an int, a triple,
    ``"valid"`` or ``"same"``. Computed as vol2col (im2col with a depth axis)
    + GEMM by ``torch.ops.myconv.conv3d``; channels_last_3d inputs stay
    channels-last.
    """
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any_t = 1,
                     padding: _size_any_t = 0, output_padding: _size_any_t = 0, groups: int = 1,
                     dilation: _size_any_t = 1) -> Tensor:
    """1-D transposed convolution, drop-in for :func:`torch.nn.functional.conv_transpose1d`
    (weight ``(C_in, C_out / groups, kW)``)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


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
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _size_any_t = 1,
                     padding: _size_any_t = 0, output_padding: _size_any_t = 0, groups: int = 1,
                     dilation: _size_any_t = 1) -> Tensor:
    """3-D transposed convolution, drop-in for :func:`torch.nn.functional.conv_transpose3d`
    (weight ``(C_in, C_out / groups, kT, kH, kW)``)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)


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
