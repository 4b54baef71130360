"""``myconv.Conv1d`` / ``Conv2d`` / ``Conv3d`` and ``myconv.ConvTranspose1d`` /
``2d`` / ``3d``, drop-ins for their ``torch.nn`` namesakes, and ``convert``."""
import copy
import importlib
from typing import Dict, List, Optional, Type

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _library  # noqa: F401  (loads the ops)
from . import onnx_export


class _ConvMixin:
    """The convolution of myconv's Conv1d / 2d / 3d (and of converted
    subclasses of nn.Conv1d / 2d / 3d): ``_conv_forward`` through
    ``torch.ops.myconv.convNd``; everything else is nn.ConvNd's."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if onnx_export.exporting():  # an ONNX Conv node
                return self._onnx_node(input, weight, bias)
        dims = len(self.kernel_size)
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            zeros: List[int] = [0] * dims
            if dims == 1:
                return torch.ops.myconv.conv1d(padded, weight, bias, self.stride, zeros, self.dilation, self.groups)
            if dims == 2:
                return torch.ops.myconv.conv2d(padded, weight, bias, self.stride, zeros, self.dilation, self.groups)
            return torch.ops.myconv.conv3d(padded, weight, bias, self.stride, zeros, self.dilation, self.groups)
        # A str padding selects the convNd.padding overload ('same' / 'valid').
        if dims == 1:
            return torch.ops.myconv.conv1d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if dims == 2:
            return torch.ops.myconv.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return torch.ops.myconv.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.jit.unused
    def _onnx_node(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        dims = len(self.kernel_size)
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = [0] * dims
        return onnx_export.conv_node(dims, input, weight, bias, list(self.stride), padding, list(self.dilation),
                                     self.groups)


class _ConvTransposeMixin:
    """The forward of myconv's ConvTranspose1d / 2d / 3d (and of converted
    subclasses of nn.ConvTranspose1d / 2d / 3d), with ``output_size`` as in
    PyTorch, through ``torch.ops.myconv.conv_transposeNd``."""

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        dims = len(self.kernel_size)
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose" + str(dims) + "d")
        assert isinstance(self.padding, tuple)
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              dims, self.dilation)
        if not torch.jit.is_scripting():  # (TorchScript skips this block)
            if onnx_export.exporting():  # an ONNX ConvTranspose node
                return onnx_export.conv_transpose_node(dims, input, self.weight, self.bias, list(self.stride),
                                                       list(self.padding), output_padding, self.groups,
                                                       list(self.dilation))
        if dims == 1:
            return torch.ops.myconv.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                                     output_padding, self.groups, self.dilation)
        if dims == 2:
            return torch.ops.myconv.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                                     output_padding, self.groups, self.dilation)
        return torch.ops.myconv.conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding,
                                                 output_padding, self.groups, self.dilation)


class Conv1d(_ConvMixin, nn.Conv1d):
    """:class:`torch.nn.Conv1d` whose convolution runs through ``torch.ops.myconv.conv1d``.

    Same constructor, parameters, ``repr`` and ``state_dict`` as ``nn.Conv1d``."""


class Conv2d(_ConvMixin, nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose convolution runs through
    ``torch.ops.myconv.conv2d``.

    Same constructor (``padding`` int / pair / ``"same"`` / ``"valid"``,
    ``padding_mode`` ``"zeros" | "reflect" | "replicate" | "circular"``,
    ``device``, ``dtype``), parameters, ``repr`` and ``state_dict`` as
    ``nn.Conv2d``: weights load both ways unchanged. Scriptable with
    ``torch.jit.script``.
    """


class Conv3d(_ConvMixin, nn.Conv3d):
    """:class:`torch.nn.Conv3d` whose convolution runs through ``torch.ops.myconv.conv3d``.

    Same constructor, parameters, ``repr`` and ``state_dict`` as ``nn.Conv3d``."""


class ConvTranspose1d(_ConvTransposeMixin, nn.ConvTranspose1d):
    """:class:`torch.nn.ConvTranspose1d` through ``torch.ops.myconv.conv_transpose1d``
    (same constructor, parameters, ``state_dict`` and ``forward(input, output_size=None)``)."""


class ConvTranspose2d(_ConvTransposeMixin, nn.ConvTranspose2d):
    """:class:`torch.nn.ConvTranspose2d` whose transposed convolution runs
    through ``torch.ops.myconv.conv_transpose2d``.

    Same constructor, parameters, ``repr`` and ``state_dict`` as
    ``nn.ConvTranspose2d``, and the same ``forward(input, output_size=None)``:
    ``output_size`` picks the output padding that gives that size.
    """


class ConvTranspose3d(_ConvTransposeMixin, nn.ConvTranspose3d):
    """:class:`torch.nn.ConvTranspose3d` through ``torch.ops.myconv.conv_transpose3d``
    (same constructor, parameters, ``state_dict`` and ``forward(input, output_size=None)``)."""


_CONVERSIONS: Dict[type, type] = {
    nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d,
    nn.ConvTranspose1d: ConvTranspose1d, nn.ConvTranspose2d: ConvTranspose2d, nn.ConvTranspose3d: ConvTranspose3d,
}
# The methods of nn's class that a subclass must not override to be converted.
_KEPT = {nn.Conv1d: "_conv_forward", nn.Conv2d: "_conv_forward", nn.Conv3d: "_conv_forward",
         nn.ConvTranspose1d: "forward", nn.ConvTranspose2d: "forward", nn.ConvTranspose3d: "forward"}
_converted: Dict[type, type] = {}
_PREFIX = "Converted_"


def _converted_name(cls: type) -> str:
    # A name of this module that finds the class again in a new process
    # (pickle looks classes up by module and name): the subclass's module and
    # qualified name, hex-encoded.
    return _PREFIX + f"{cls.__module__}:{cls.__qualname__}".encode().hex()


def _conversion_of(cls: type) -> Optional[Type]:
    """The class a module of class ``cls`` becomes: myconv's for nn's six
    convolution classes; for a subclass of one that keeps its forward (and
    ``_conv_forward``), the subclass with myconv's convolution mixed in
    (made once, cached); None otherwise."""
    if cls in _CONVERSIONS:
        return _CONVERSIONS[cls]
    if issubclass(cls, (_ConvMixin, _ConvTransposeMixin)):
        return None  # converted already
    base = next((b for b in cls.__mro__ if b in _CONVERSIONS), None)
    if base is None or cls.forward is not base.forward or getattr(cls, _KEPT[base]) is not getattr(base, _KEPT[base]):
        return None  # not a convolution, or its own forward
    if cls not in _converted:
        mixin = _ConvTransposeMixin if base.__name__.startswith("ConvTranspose") else _ConvMixin
        name = _converted_name(cls)
        namespace = {"__module__": __name__, "__qualname__": name, "__doc__": cls.__doc__}
        if getattr(cls, "cls_to_become", None) is not None:
            # a lazy convolution becomes, on its first call, the converted
            # version of the class it would have become
            namespace["cls_to_become"] = _conversion_of(cls.cls_to_become)
        converted = type(cls.__name__, (mixin, cls), namespace)
        _converted[cls] = converted
        if _find_class(cls.__module__, cls.__qualname__) is cls:
            globals()[name] = converted  # picklable (by name) where the original is
    return _converted[cls]


def _find_class(module: str, qualname: str) -> Optional[type]:
    """The class a pickle would find by module and qualified name, or None."""
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found if isinstance(found, type) else None
    except Exception:  # not importable, a local class, ...
        return None


def __getattr__(name: str):
    """Recreates a converted subclass by its name (when unpickling a model
    that ``convert`` changed in another process)."""
    if name.startswith(_PREFIX):
        try:
            module, _, qualname = bytes.fromhex(name[len(_PREFIX):]).decode().partition(":")
        except ValueError:  # not a name convert() made (UnicodeDecodeError is a ValueError)
            module = qualname = ""
        cls = _find_class(module, qualname) if module else None
        converted = _conversion_of(cls) if cls is not None else None
        if converted is not None and globals().get(name) is converted:
            return converted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def convert(module: nn.Module, inplace: bool = True) -> nn.Module:
    """Makes every convolution in ``module`` (the module itself included, at
    any depth: ``Sequential``, ``ModuleList``, ``ModuleDict``...) run through
    myconv: ``nn.Conv1d`` / ``Conv2d`` / ``Conv3d`` become ``myconv.Conv1d`` /
    ``Conv2d`` / ``Conv3d``, ``nn.ConvTranspose1d`` / ``2d`` / ``3d`` become
    ``myconv.ConvTranspose1d`` / ``2d`` / ``3d``.

    Subclasses of these that keep PyTorch's ``forward`` (and ``_conv_forward``),
    such as torchvision's ``Conv3DSimple``, are converted too: they keep their
    class (``isinstance`` and their own methods still work) with myconv's
    convolution mixed in; lazy ones (``nn.LazyConv2d``...) become the converted
    class on their first call. Subclasses that override ``forward`` (or
    ``_conv_forward``) are left alone.

    The converted layers keep their parameters, buffers and hooks (the very
    same tensors), so outputs, gradients, optimizers and ``state_dict`` carry
    on unchanged.

    Args:
        module: the model.
        inplace: convert ``module`` itself (default) or a deep copy of it.

    Returns:
        The converted module.
    """
    if not inplace:
        module = copy.deepcopy(module)
    for m in module.modules():
        converted = _conversion_of(type(m))
        if converted is not None:
            m.__class__ = converted
    return module
