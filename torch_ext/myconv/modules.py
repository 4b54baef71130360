"""``myconv.Conv2d``, a drop-in for :class:`torch.nn.Conv2d`, and ``convert``."""
import copy
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _library  # noqa: F401  (loads the ops)


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
            return torch.ops.myconv.conv2d(
                padded, weight, bias, self.stride, no_padding, self.dilation, self.groups
            )
        # A str padding selects the conv2d.padding overload ('same' / 'valid').
        return torch.ops.myconv.conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )


def convert(module: nn.Module, inplace: bool = True) -> nn.Module:
    """Makes every :class:`torch.nn.Conv2d` in ``module`` (the module itself
    included, at any depth: ``Sequential``, ``ModuleList``, ``ModuleDict``...)
    a :class:`myconv.Conv2d`.

    The converted layers keep their parameters, buffers and hooks (the very
    same tensors), so outputs, gradients, optimizers and ``state_dict`` carry
    on unchanged. Subclasses of ``nn.Conv2d`` (which may override ``forward``)
    are left alone.

    Args:
        module: the model.
        inplace: convert ``module`` itself (default) or a deep copy of it.

    Returns:
        The converted module.
    """
    if not inplace:
        module = copy.deepcopy(module)
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return module
