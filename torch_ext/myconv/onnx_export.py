"""ONNX export of myconv: ``myconv::conv2d`` becomes a standard ONNX ``Conv``,
``myconv::conv_transpose2d`` a ``ConvTranspose``.

After ``import myconv``, a plain ``torch.onnx.export(model, args, path)`` works
for models built from ``myconv.Conv2d`` / ``myconv.ConvTranspose2d`` (and
``myconv.convert``) or calling ``myconv.conv2d`` / ``myconv.conv_transpose2d``:

* dynamo-based exporter (``dynamo=True``, the default): torch has no global
  registry of translations, so during such an export myconv's modules and
  functions emit the ONNX node themselves (``torch.onnx.ops.symbolic``);
* TorchScript-based exporter (``dynamo=False``): symbolics registered on import.

Models that call ``torch.ops.myconv.*`` directly need the translation table
with the dynamo-based exporter::

    torch.onnx.export(model, args, "model.onnx",
                      custom_translation_table=myconv.onnx_export.translation_table())
    # or, the same: myconv.onnx_export.export(model, args, "model.onnx")

``padding="same"`` becomes explicit (possibly asymmetric) pads. The
dynamo-based exporter needs ``onnxscript`` (and ``onnx``).
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from . import _library  # noqa: F401  (loads the ops)

OPSET = 18


# ---- pads -----------------------------------------------------------------------------

def _conv_pads(padding, kernel: Sequence[int], dilation: Sequence[int]) -> List[int]:
    """ONNX pads [top, left, bottom, right] of conv2d's padding (ints or
    'same' / 'valid'; 'same' puts an odd extra zero at the bottom / right)."""
    if isinstance(padding, str):
        total = [0, 0] if padding == "valid" else [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return [padding[0], padding[1], padding[0], padding[1]]


# ---- dynamo-based exporter: nodes emitted by myconv's modules and functions -------

def exporting() -> bool:
    """True while ``torch.onnx.export`` traces a model with the dynamo-based exporter."""
    return torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export()


def _node(op_type: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], attrs: dict, like: Tensor) -> Tensor:
    unbatched = x.dim() == 3
    if unbatched:
        x, like = x.unsqueeze(0), like.unsqueeze(0)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = torch.onnx.ops.symbolic(op_type, inputs, attrs, dtype=like.dtype, shape=like.shape, version=OPSET)
    return y.squeeze(0) if unbatched else y


def conv2d_node(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                padding: Union[str, List[int]], dilation: List[int], groups: int) -> Tensor:
    """An ONNX ``Conv`` node in the exported graph (the op itself only gives
    the output's shape and dtype; it is dropped from the graph)."""
    if isinstance(padding, str):
        like = torch.ops.myconv.conv2d.padding(input, weight, bias, stride, padding, dilation, groups)
    else:
        like = torch.ops.myconv.conv2d(input, weight, bias, stride, padding, dilation, groups)
    attrs = dict(strides=list(stride), pads=_conv_pads(padding, weight.shape[2:], dilation), dilations=list(dilation),
                 group=groups)
    return _node("Conv", input, weight, bias, attrs, like)


def conv_transpose2d_node(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                          padding: List[int], output_padding: List[int], groups: int,
                          dilation: List[int]) -> Tensor:
    """An ONNX ``ConvTranspose`` node in the exported graph."""
    like = torch.ops.myconv.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                                             dilation)
    attrs = dict(strides=list(stride), pads=[padding[0], padding[1], padding[0], padding[1]],
                 dilations=list(dilation), group=groups, output_padding=list(output_padding))
    return _node("ConvTranspose", input, weight, bias, attrs, like)


# ---- dynamo-based exporter: translations for direct torch.ops.myconv calls ---------

def _conv2d_onnx(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    from onnxscript import opset18 as op

    unbatched = len(input.shape) == 3
    x = op.Unsqueeze(input, [0]) if unbatched else input
    args = (x, weight) if bias is None else (x, weight, bias)
    y = op.Conv(*args, strides=list(stride), pads=[padding[0], padding[1], padding[0], padding[1]],
                dilations=list(dilation), group=groups)
    return op.Squeeze(y, [0]) if unbatched else y


def _conv_transpose2d_onnx(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                           groups=1, dilation=(1, 1)):
    from onnxscript import opset18 as op

    unbatched = len(input.shape) == 3
    x = op.Unsqueeze(input, [0]) if unbatched else input
    args = (x, weight) if bias is None else (x, weight, bias)
    y = op.ConvTranspose(*args, strides=list(stride), pads=[padding[0], padding[1], padding[0], padding[1]],
                         dilations=list(dilation), group=groups, output_padding=list(output_padding))
    return op.Squeeze(y, [0]) if unbatched else y


def translation_table() -> Dict[Callable, Callable]:
    """``custom_translation_table`` for the dynamo-based ``torch.onnx.export``."""
    return {torch.ops.myconv.conv2d.default: _conv2d_onnx,
            torch.ops.myconv.conv_transpose2d.default: _conv_transpose2d_onnx}


def export(model: torch.nn.Module, args: Sequence[Any], f, **kwargs):
    """``torch.onnx.export`` (dynamo-based) with myconv's translations added."""
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table.update(translation_table())
    kwargs.setdefault("opset_version", OPSET)
    return torch.onnx.export(model, tuple(args), f, custom_translation_table=table, dynamo=True, **kwargs)


# ---- TorchScript-based exporter (dynamo=False) ---------------------------------------

def _conv2d_symbolic(g, input, weight, bias, stride, padding, dilation, groups):
    """Both overloads: int[2] padding, or 'same' / 'valid' (conv2d.padding)."""
    from torch.onnx import symbolic_helper as sym

    stride = sym._get_const(stride, "is", "stride")
    dilation = sym._get_const(dilation, "is", "dilation")
    groups = sym._get_const(groups, "i", "groups")
    if sym._is_value(padding) and padding.node().kind() == "onnx::Constant" and \
            padding.node().kindOf("value") == "s":
        pads = _conv_pads(sym._get_const(padding, "s", "padding"), sym._get_tensor_sizes(weight)[2:], dilation)
    else:
        pads = _conv_pads(sym._get_const(padding, "is", "padding"), (), dilation)
    args = [input, weight]
    if not sym._is_none(bias):
        args.append(bias)
    return g.op("Conv", *args, strides_i=stride, pads_i=pads, dilations_i=dilation, group_i=groups)


def _conv_transpose2d_symbolic(g, input, weight, bias, stride, padding, output_padding, groups, dilation):
    from torch.onnx import symbolic_helper as sym

    stride = sym._get_const(stride, "is", "stride")
    padding = sym._get_const(padding, "is", "padding")
    output_padding = sym._get_const(output_padding, "is", "output_padding")
    dilation = sym._get_const(dilation, "is", "dilation")
    groups = sym._get_const(groups, "i", "groups")
    args = [input, weight]
    if not sym._is_none(bias):
        args.append(bias)
    return g.op("ConvTranspose", *args, strides_i=stride, pads_i=list(padding) * 2, dilations_i=dilation,
                group_i=groups, output_padding_i=output_padding)


def register_torchscript_symbolic(opset: int = 9) -> None:
    """Lets ``torch.onnx.export(..., dynamo=False)`` map ``myconv::conv2d`` to
    ``Conv`` and ``myconv::conv_transpose2d`` to ``ConvTranspose`` (done on
    ``import myconv``)."""
    torch.onnx.register_custom_op_symbolic("myconv::conv2d", _conv2d_symbolic, opset)
    torch.onnx.register_custom_op_symbolic("myconv::conv_transpose2d", _conv_transpose2d_symbolic, opset)


register_torchscript_symbolic()
