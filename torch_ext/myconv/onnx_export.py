"""ONNX export of myconv: ``myconv::conv1d`` / ``conv2d`` / ``conv3d`` become
standard ONNX ``Conv`` nodes (1, 2 or 3 spatial dimensions),
``myconv::conv_transpose1d`` / ``2d`` / ``3d`` ``ConvTranspose`` nodes.

After ``import myconv``, a plain ``torch.onnx.export(model, args, path)`` works
for models built from myconv's modules (and ``myconv.convert``) or calling
``myconv.conv1d`` ... ``myconv.conv_transpose3d``:

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

def _conv_pads(padding, kernel: Sequence[int], dilation: Sequence[int], dims: int) -> List[int]:
    """ONNX pads [begin of each axis..., end of each axis...] of a convolution's
    padding (ints, or 'same' / 'valid'; 'same' puts an odd extra zero at the end)."""
    if isinstance(padding, str):
        total = [0] * dims if padding == "valid" else [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return list(padding) + list(padding)


def _op(name: str, dims: int):
    return getattr(torch.ops.myconv, f"{name}{dims}d")


# ---- dynamo-based exporter: nodes emitted by myconv's modules and functions -------

def exporting() -> bool:
    """True while ``torch.onnx.export`` traces a model with the dynamo-based exporter."""
    return torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export()


def _node(op_type: str, dims: int, x: Tensor, weight: Tensor, bias: Optional[Tensor], attrs: dict,
          like: Tensor) -> Tensor:
    unbatched = x.dim() == dims + 1
    if unbatched:
        x, like = x.unsqueeze(0), like.unsqueeze(0)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = torch.onnx.ops.symbolic(op_type, inputs, attrs, dtype=like.dtype, shape=like.shape, version=OPSET)
    return y.squeeze(0) if unbatched else y


def conv_node(dims: int, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
              padding: Union[str, List[int]], dilation: List[int], groups: int) -> Tensor:
    """An ONNX ``Conv`` node of ``dims`` spatial dimensions in the exported graph
    (the op itself only gives the output's shape and dtype; it is dropped from
    the graph)."""
    op = _op("conv", dims)
    if isinstance(padding, str):
        like = op.padding(input, weight, bias, stride, padding, dilation, groups)
    else:
        like = op(input, weight, bias, stride, padding, dilation, groups)
    attrs = dict(strides=list(stride), pads=_conv_pads(padding, weight.shape[2:], dilation, dims),
                 dilations=list(dilation), group=groups)
    return _node("Conv", dims, input, weight, bias, attrs, like)


def conv_transpose_node(dims: int, input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                        padding: List[int], output_padding: List[int], groups: int,
                        dilation: List[int]) -> Tensor:
    """An ONNX ``ConvTranspose`` node of ``dims`` spatial dimensions in the exported graph."""
    like = _op("conv_transpose", dims)(input, weight, bias, stride, padding, output_padding, groups, dilation)
    attrs = dict(strides=list(stride), pads=_conv_pads(padding, (), dilation, dims), dilations=list(dilation),
                 group=groups, output_padding=list(output_padding))
    return _node("ConvTranspose", dims, input, weight, bias, attrs, like)


# ---- dynamo-based exporter: translations for direct torch.ops.myconv calls ---------

def _conv_onnx(dims: int):
    def translate(input, weight, bias=None, stride=(1,) * dims, padding=(0,) * dims, dilation=(1,) * dims,
                  groups=1):
        from onnxscript import opset18 as op

        unbatched = len(input.shape) == dims + 1
        x = op.Unsqueeze(input, [0]) if unbatched else input
        args = (x, weight) if bias is None else (x, weight, bias)
        y = op.Conv(*args, strides=list(stride), pads=_conv_pads(padding, (), dilation, dims),
                    dilations=list(dilation), group=groups)
        return op.Squeeze(y, [0]) if unbatched else y
    return translate


def _conv_transpose_onnx(dims: int):
    def translate(input, weight, bias=None, stride=(1,) * dims, padding=(0,) * dims, output_padding=(0,) * dims,
                  groups=1, dilation=(1,) * dims):
        from onnxscript import opset18 as op

        unbatched = len(input.shape) == dims + 1
        x = op.Unsqueeze(input, [0]) if unbatched else input
        args = (x, weight) if bias is None else (x, weight, bias)
        y = op.ConvTranspose(*args, strides=list(stride), pads=_conv_pads(padding, (), dilation, dims),
                             dilations=list(dilation), group=groups, output_padding=list(output_padding))
        return op.Squeeze(y, [0]) if unbatched else y
    return translate


def translation_table() -> Dict[Callable, Callable]:
    """``custom_translation_table`` for the dynamo-based ``torch.onnx.export``."""
    table = {}
    for dims in (1, 2, 3):
        table[_op("conv", dims).default] = _conv_onnx(dims)
        table[_op("conv_transpose", dims).default] = _conv_transpose_onnx(dims)
    return table


def export(model: torch.nn.Module, args: Sequence[Any], f, **kwargs):
    """``torch.onnx.export`` (dynamo-based) with myconv's translations added."""
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table.update(translation_table())
    kwargs.setdefault("opset_version", OPSET)
    return torch.onnx.export(model, tuple(args), f, custom_translation_table=table, dynamo=True, **kwargs)


# ---- TorchScript-based exporter (dynamo=False) ---------------------------------------

def _conv_symbolic(dims: int):
    def symbolic(g, input, weight, bias, stride, padding, dilation, groups):
        """Both overloads: int[dims] padding, or 'same' / 'valid' (convNd.padding)."""
        from torch.onnx import symbolic_helper as sym

        stride = sym._get_const(stride, "is", "stride")
        dilation = sym._get_const(dilation, "is", "dilation")
        groups = sym._get_const(groups, "i", "groups")
        if sym._is_value(padding) and padding.node().kind() == "onnx::Constant" and \
                padding.node().kindOf("value") == "s":
            pads = _conv_pads(sym._get_const(padding, "s", "padding"), sym._get_tensor_sizes(weight)[2:], dilation,
                              dims)
        else:
            pads = _conv_pads(sym._get_const(padding, "is", "padding"), (), dilation, dims)
        args = [input, weight]
        if not sym._is_none(bias):
            args.append(bias)
        return g.op("Conv", *args, strides_i=stride, pads_i=pads, dilations_i=dilation, group_i=groups)
    return symbolic


def _conv_transpose_symbolic(dims: int):
    def symbolic(g, input, weight, bias, stride, padding, output_padding, groups, dilation):
        from torch.onnx import symbolic_helper as sym

        stride = sym._get_const(stride, "is", "stride")
        padding = sym._get_const(padding, "is", "padding")
        output_padding = sym._get_const(output_padding, "is", "output_padding")
        dilation = sym._get_const(dilation, "is", "dilation")
        groups = sym._get_const(groups, "i", "groups")
        args = [input, weight]
        if not sym._is_none(bias):
            args.append(bias)
        return g.op("ConvTranspose", *args, strides_i=stride, pads_i=_conv_pads(padding, (), dilation, dims),
                    dilations_i=dilation, group_i=groups, output_padding_i=output_padding)
    return symbolic


def register_torchscript_symbolic(opset: int = 9) -> None:
    """Lets ``torch.onnx.export(..., dynamo=False)`` map ``myconv::convNd`` to
    ``Conv`` and ``myconv::conv_transposeNd`` to ``ConvTranspose`` (done on
    ``import myconv``)."""
    for dims in (1, 2, 3):
        torch.onnx.register_custom_op_symbolic(f"myconv::conv{dims}d", _conv_symbolic(dims), opset)
        torch.onnx.register_custom_op_symbolic(f"myconv::conv_transpose{dims}d", _conv_transpose_symbolic(dims),
                                               opset)


register_torchscript_symbolic()
