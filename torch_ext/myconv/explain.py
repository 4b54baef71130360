"""What a convolution call runs: ``myconv.explain()`` and ``MYCONV_VERBOSE``.

``explain`` returns the plans the library makes for a call's passes (the
forward, and the backward autograd would run) without running them; the plans
are made by the library itself (``csrc/pass_plan.cpp``), this module only
passes the arguments and reads the answer. ``set_verbose`` (or
``MYCONV_VERBOSE=1`` / ``2`` in the environment) logs one line per call
through the ``"myconv"`` logger.
"""
import atexit
import ctypes
import json
import logging
import sys
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import _library
from .functional import _ints

__all__ = ["Explanation", "explain", "get_verbose", "set_verbose"]

logger = logging.getLogger("myconv")

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d) + _TRANSPOSED


class Explanation(dict):
    """The plans of one call, as a dict (``explanation["forward"]``,
    ``explanation["backward"]``: lists of pass plans, each with its ``path``,
    ``engine``, ``tiles``, ``workers``, ``workspace`` ... and a one-line
    ``summary``), readable when printed."""

    def __str__(self) -> str:
        head = (f"myconv.explain: {self['op']} on {self['device']}, {self['dtype']}, input {tuple(self['input'])}, "
                f"weight {tuple(self['weight'])}, stride {tuple(self['stride'])}, padding {tuple(self['padding'])}, "
                f"dilation {tuple(self['dilation'])}, groups {self['groups']}; {self['threads']} threads, "
                f"workspace limit {self['workspace_limit'] / 2**20:.1f} MiB")
        lines = [head]
        for part in ("forward", "backward"):
            lines.append(f"{part}:")
            for plan in self[part]:
                lines.append(f"  {plan['computes']:<11} {plan['summary']}")
        return "\n".join(lines)

    __repr__ = __str__


def _module_args(module: nn.Module, input: Tensor):
    """A convolution module's call as explain's arguments: (input as the op
    sees it, weight, bias, stride, padding, dilation, groups, transposed,
    output_padding)."""
    if not isinstance(module, _CONVS):
        raise TypeError(f"myconv.explain: expected a convolution module (nn.Conv1d/2d/3d, nn.ConvTranspose1d/2d/3d "
                        f"or myconv's), but got {type(module).__name__}")
    transposed = isinstance(module, _TRANSPOSED)
    padding = module.padding
    if module.padding_mode != "zeros":
        if transposed:
            raise ValueError(f"myconv.explain: only 'zeros' padding mode is supported for {type(module).__name__}")
        # the module pads the input itself first: that input's shape, on the meta device
        input = torch.nn.functional.pad(input.to("meta"), module._reversed_padding_repeated_twice,
                                        mode=module.padding_mode)
        padding = 0
    return (input, module.weight, module.bias, module.stride, padding, module.dilation, module.groups, transposed,
            getattr(module, "output_padding", 0))


def explain(input: Union[Tensor, nn.Module], weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
            stride=1, padding: Union[int, tuple, str] = 0, dilation=1, groups: int = 1, *, transposed: bool = False,
            output_padding=0, device: Optional[Union[str, torch.device]] = None) -> Explanation:
    """The plans myconv makes for a convolution call, without running it.

    ``explain(x, weight, bias, stride=..., padding=..., dilation=..., groups=...)``
    takes the arguments of ``myconv.conv1d/2d/3d`` (the dimensionality comes
    from the weight); with ``transposed=True`` (and ``output_padding``) those of
    ``conv_transpose1d/2d/3d`` (note their order: groups before dilation there,
    keywords here). ``explain(module, x)`` takes a convolution module (myconv's
    or ``torch.nn``'s) and its input. Tensors may be real, meta or fake: only
    their sizes, strides and dtype are read. ``device`` chooses whose plan is
    shown (default: the tensors' device; the CPU for meta tensors), so
    ``device="cuda"`` shows the GPU's plan on any machine with a CUDA build.

    Returns an :class:`Explanation`: a dict with the call (``op``,
    ``device``, ``dtype``, shapes, ``workspace_limit``, torch's ``threads``), and
    ``forward`` / ``backward``, the plans of the passes (what each
    ``computes``: ``output``, ``grad_input``, ``grad_weight``), each with
    ``path`` (``columns``: im2col + GEMM; ``gemm_on_views``: 1x1 GEMMs on the
    tensors; ``direct_grouped``: direct kernels, no columns), ``layout``,
    ``engine``, ``gemm`` (batch, m, n, k of one item's strided-batched GEMM,
    and its ``calls``: one per group where the GEMMs run image by image),
    ``tiles``,
    ``channel_blocks``, ``chunks``, ``items``, ``workers``, ``workspace``
    (bytes, with the ``total`` a call holds at most), ``autotune`` and a
    one-line ``summary``. Printed, it reads one line per pass.

    The backward's plans assume the output's gradient comes in the output's
    layout (channels-last for a channels-last output); a gradient in another
    layout (an expanded ``ones``, say) runs channels-first.
    """
    if isinstance(input, nn.Module):
        if weight is None:
            raise TypeError("myconv.explain(module, input): expected the module's input")
        input, weight, bias, stride, padding, dilation, groups, transposed, output_padding = _module_args(
            input, weight)
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("myconv.explain: expected (input, weight, ...) tensors, or (module, input)")
    dims = weight.dim() - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"myconv.explain: expected a weight of 3, 4 or 5 dimensions, but got {weight.dim()}")
    op = f"conv_transpose{dims}d" if transposed else f"conv{dims}d"
    padding_mode = padding if isinstance(padding, str) else ""
    padding = [0] * dims if isinstance(padding, str) else _ints(padding, dims)
    out = torch.ops.myconv._explain(op, input, weight, bias, _ints(stride, dims), padding, padding_mode,
                                    _ints(dilation, dims), groups, _ints(output_padding, dims),
                                    None if device is None else str(torch.device(device).type))
    result = Explanation(json.loads(out))
    result["threads"] = torch.get_num_threads()
    return result


# ---- MYCONV_VERBOSE -----------------------------------------------------------

def _log_line(level: int, line: bytes) -> None:
    if logger.level == logging.NOTSET and not logger.isEnabledFor(logging.INFO):
        _show_lines()  # verbose was turned on without set_verbose (torch.ops, C++): lines must be seen
    logger.info(line.decode("utf-8", "replace"))


_SINK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)(_log_line)
_lib = ctypes.CDLL(_library.library_path())
_lib.myconv_set_verbose_sink.argtypes = [ctypes.c_void_p]
_lib.myconv_set_verbose_sink(ctypes.cast(_SINK, ctypes.c_void_p))
# back to stderr before the interpreter goes away (a later call must not reach Python)
atexit.register(_lib.myconv_set_verbose_sink, None)


def _show_lines() -> None:
    """Verbose lines must be seen: INFO on the "myconv" logger, and a stderr
    handler unless the program has configured logging (a handler here or on
    the root logger)."""
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def get_verbose() -> int:
    """The verbose level: 0 (off), 1 or 2."""
    return torch.ops.myconv._get_verbose()


def set_verbose(level: int) -> None:
    """Logs one line per convolution call through the ``"myconv"`` logger
    (level 1): the op, shapes, dtype, device, and for each pass its path,
    layout, GEMM engine, tiles, work items, workers and workspace; level 2
    adds the call's time (measured after a device synchronisation on CUDA,
    which slows the call). 0 turns it off (the default, or
    ``MYCONV_VERBOSE`` from the environment); off, a call pays one flag
    check. Without logging configured, lines go to stderr."""
    torch.ops.myconv._set_verbose(int(level))
    if level > 0:
        _show_lines()


if get_verbose() > 0:  # MYCONV_VERBOSE from the environment
    _show_lines()
