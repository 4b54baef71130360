"""``myconv.Conv2d`` and ``myconv.ConvTranspose2d``, drop-ins for their
``torch.nn`` namesakes, and ``convert``."""
import copy
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _library  # noqa: F401  (loads the ops)
from . import onnx_export


class Conv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose convolution runs through
    ``torch.ops.myconv.conv2d``.

    Same constructor (``padding`` int / pair / ``"same"`` / ``"valid"``,
    ``padding_mode`` ``"zeros" | "reflect" | "replicate" | "circular"``,
    ``device``, ``dtype``), parameters, ``repr`` and ``state_dict`` as
    ``nn.Conv2d``: weights load both ways unchanged. Scriptable with
    ``torch.jit.script``.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            no_padding: List[int] = [0, 0]
            if not torch.jit.is_scripting():  # (TorchScript skips this block)
                if onnx_export.exporting():  # an ONNX Conv node
                    return onnx_export.conv2d_node(padded, weight, bias, list(self.stride), no_padding,
                                                   list(self.dilation), self.groups)
            return torch.ops.myconv.conv2d(
                padded, weight, bias, self.stride, no_padding, self.dilation, self.groups
            )
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if onnx_export.exporting():  # an ONNX Conv node
                return onnx_export.conv2d_node(input, weight, bias, list(self.stride),
                                               self.padding if isinstance(self.padding, str) else list(self.padding),
                                               list(self.dilation), self.groups)
        # A str padding selects the conv2d.padding overload ('same' / 'valid').
        return torch.ops.myconv.conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )


class ConvTranspose2d(nn.ConvTranspose2d):
    """:class:`torch.nn.ConvTranspose2d` whose transposed convolution runs
    through ``torch.ops.myconv.conv_transpose2d``.

    Same constructor, parameters, ``repr`` and ``state_dict`` as
    ``nn.ConvTranspose2d``, and the same ``forward(input, output_size=None)``:
    ``output_size`` picks the output padding that gives that size.
    """

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        assert isinstance(self.padding, tuple)
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if onnx_export.exporting():  # an ONNX ConvTranspose node
                return onnx_export.conv_transpose2d_node(input, self.weight, self.bias, list(self.stride),
                                                         list(self.padding), output_padding, self.groups,
                                                         list(self.dilation))
        return torch.ops.myconv.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
            self.dilation
        )


_CONVERSIONS = {nn.Conv2d: Conv2d, nn.ConvTranspose2d: ConvTranspose2d}


def convert(module: nn.Module, inplace: bool = True) -> nn.Module:
    """Makes every :class:`torch.nn.Conv2d` in ``module`` (the module itself
    included, at any depth: ``Sequential``, ``ModuleList``, ``ModuleDict``...)
    a :class:`myconv.Conv2d`, and every :class:`torch.nn.ConvTranspose2d` a
    :class:`myconv.ConvTranspose2d`.

    The converted layers keep their parameters, buffers and hooks (the very
    same tensors), so outputs, gradients, optimizers and ``state_dict`` carry
    on unchanged. Subclasses of ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (which
    may override ``forward``) are left alone.

    Args:
        module: the model.
        inplace: convert ``module`` itself (default) or a deep copy of it.

    Returns:
        The converted module.
    """
    if not inplace:
        module = copy.deepcopy(module)
    for m in module.modules():
        if type(m) in _CONVERSIONS:
            m.__class__ = _CONVERSIONS[type(m)]
    return module
