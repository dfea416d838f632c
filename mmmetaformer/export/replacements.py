"""Export-friendly equivalents of modules that do not export (or not at every size), swapped in only while
exporting (:func:`exportable_modules`).

- ``nn.AdaptiveAvgPool2d`` (mmseg's UPerHead pyramid pooling, PSPHead) exports only when every input size is a
  multiple of the output size and known when tracing: a 16x16 map pooled to 6x6, or any ``--dynamic`` export,
  fails. :class:`MatrixAdaptiveAvgPool2d` computes the same windows (rows ``floor(i * H / out)`` to
  ``ceil((i + 1) * H / out)``) as two averaging matrices built from the traced size: y = P_h x P_w^T.
- mmseg's ``Upsample`` (Semantic FPN's scale heads) computes its output size with Python ``int()``, which freezes
  the traced size into the graph: a dynamic export would upsample every other input size to the traced one's
  sizes. :class:`TracedSizeUpsample` computes the same size with tensor operations.
"""
import contextlib
from typing import Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _averaging_matrix(size: Union[int, Tensor], out: int, like: Tensor) -> Tensor:
    """(out, size): row i averages the inputs of adaptive pooling window i."""
    index = torch.arange(out, device=like.device).unsqueeze(1)
    start = index * size // out
    end = ((index + 1) * size + out - 1) // out
    position = torch.arange(size, device=like.device).unsqueeze(0)
    window = ((position >= start) & (position < end)).to(like.dtype)
    return window / (end - start).to(like.dtype)


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as matrix products, for any (also traced) input size."""

    def __init__(self, output_size: Union[int, Tuple[Optional[int], Optional[int]]]) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        out_h, out_w = (o if o is not None else s for o, s in zip(self.output_size, (height, width)))
        if (out_h, out_w) == (1, 1):
            return x.mean((-2, -1), keepdim=True)
        rows = _averaging_matrix(height, out_h, x)
        cols = _averaging_matrix(width, out_w, x)
        return rows @ x @ cols.transpose(0, 1)


class TracedSizeUpsample(nn.Module):
    """mmseg's ``Upsample``: resize to ``size``, or to ``int(side * scale_factor)`` computed on the traced size."""

    def __init__(self, size=None, scale_factor=None, mode: str = 'nearest', align_corners: Optional[bool] = None):
        super().__init__()
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: Tensor) -> Tensor:
        size = self.size
        if not size:
            factors = self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor, ) * 2
            # .long() truncates as int() does (sizes are positive)
            size = [(side * factor).long() if isinstance(side, Tensor) else int(side * factor)
                    for side, factor in zip(x.shape[-2:], factors)]
        return F.interpolate(x, size, None, self.mode, self.align_corners)


def _replacement(module: nn.Module) -> Optional[nn.Module]:
    """The exportable equivalent of ``module``, or None where it exports as it is."""
    if type(module) is nn.AdaptiveAvgPool2d:
        return MatrixAdaptiveAvgPool2d(module.output_size)
    if type(module).__name__ == 'Upsample' and type(module).__module__.startswith('mmseg.'):
        return TracedSizeUpsample(module.size, module.scale_factor, module.mode, module.align_corners)
    return None


@contextlib.contextmanager
def exportable_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s modules that do not export are replaced by their exportable equivalents; the
    originals are back afterwards (also after an error)."""
    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            replacement = _replacement(child)
            if replacement is not None:
                swapped.append((parent, name, child, replacement))
    try:
        for parent, name, _, replacement in swapped:
            setattr(parent, name, replacement)
        yield model
    finally:
        for parent, name, child, _ in swapped:
            setattr(parent, name, child)
