"""``myconv.Conv2d``: a drop-in for :class:`torch.nn.Conv2d`."""
from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

from .functional import conv2d


class Conv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose convolution runs through
    ``torch.ops.myconv.conv2d``.

    Same constructor, parameters, ``state_dict`` and ``repr`` as ``nn.Conv2d``,
    so weights load both ways unchanged.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, weight, bias, self.stride, _pair(0), self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
