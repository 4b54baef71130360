"""ONNX export of myconv: ``myconv::conv2d`` becomes a standard ONNX ``Conv``.

The dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, the
default) takes translations per call::

    torch.onnx.export(model, args, "model.onnx",
                      custom_translation_table=myconv.onnx_export.translation_table())
    # or, the same: myconv.onnx_export.export(model, args, "model.onnx")

The TorchScript-based exporter (``dynamo=False``) uses a symbolic registered
by :func:`register_torchscript_symbolic` (called on import of this module).
``padding="same"`` decomposes into ``Pad`` + ``Conv`` on export.
Needs the ``onnxscript`` package (and ``onnx``).
"""
from typing import Any, Callable, Dict, Sequence

import torch

from . import _library  # noqa: F401  (loads the ops)

OPSET = 18


def _conv2d_onnx(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    from onnxscript import opset18 as op

    pads = [padding[0], padding[1], padding[0], padding[1]]
    unbatched = len(input.shape) == 3
    x = op.Unsqueeze(input, [0]) if unbatched else input
    args = (x, weight) if bias is None else (x, weight, bias)
    y = op.Conv(*args, strides=list(stride), pads=pads, dilations=list(dilation), group=groups)
    return op.Squeeze(y, [0]) if unbatched else y


def translation_table() -> Dict[Callable, Callable]:
    """``custom_translation_table`` for the dynamo-based ``torch.onnx.export``."""
    return {torch.ops.myconv.conv2d.default: _conv2d_onnx}


def export(model: torch.nn.Module, args: Sequence[Any], f, **kwargs):
    """``torch.onnx.export`` (dynamo-based) with myconv's translations added."""
    table = dict(kwargs.pop("custom_translation_table", None) or {})
    table.update(translation_table())
    kwargs.setdefault("opset_version", OPSET)
    return torch.onnx.export(model, tuple(args), f, custom_translation_table=table, dynamo=True, **kwargs)


def _conv2d_symbolic(g, input, weight, bias, stride, padding, dilation, groups):
    """Both overloads: int[2] padding, or 'same' / 'valid' (conv2d.padding)."""
    from torch.onnx import symbolic_helper as sym

    stride = sym._get_const(stride, "is", "stride")
    dilation = sym._get_const(dilation, "is", "dilation")
    groups = sym._get_const(groups, "i", "groups")
    if sym._is_value(padding) and padding.node().kind() == "onnx::Constant" and \
            padding.node().kindOf("value") == "s":
        mode = sym._get_const(padding, "s", "padding")
        kernel = sym._get_tensor_sizes(weight)[2:]
        total = [0, 0] if mode == "valid" else [d * (k - 1) for d, k in zip(dilation, kernel)]
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]  # extra zero at the end
    else:
        pads = list(sym._get_const(padding, "is", "padding")) * 2
    args = [input, weight]
    if not sym._is_none(bias):
        args.append(bias)
    return g.op("Conv", *args, strides_i=stride, pads_i=pads, dilations_i=dilation, group_i=groups)


def register_torchscript_symbolic(opset: int = 9) -> None:
    """Lets ``torch.onnx.export(..., dynamo=False)`` map ``myconv::conv2d`` to ``Conv``."""
    torch.onnx.register_custom_op_symbolic("myconv::conv2d", _conv2d_symbolic, opset)


register_torchscript_symbolic()
