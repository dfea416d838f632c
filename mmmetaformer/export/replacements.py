"""Export-friendly equivalents of torch modules the ONNX exporter cannot translate, swapped in only while exporting.

``nn.AdaptiveAvgPool2d`` (mmseg's UPerHead pyramid pooling, PSPHead) exports only when every input size is a
multiple of the output size and known when tracing: a 16x16 map pooled to 6x6, or any ``--dynamic`` export, fails.
:class:`MatrixAdaptiveAvgPool2d` computes the same windows (rows ``floor(i * H / out)`` to ``ceil((i + 1) * H /
out)``) as two averaging matrices built from the traced size: y = P_h x P_w^T, plain MatMul in the graph.
"""
import contextlib
from typing import Iterator, Optional, Tuple, Union

import torch
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


@contextlib.contextmanager
def exportable_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model``'s ``nn.AdaptiveAvgPool2d`` modules are replaced by their exportable
    equivalents; the originals are back afterwards (also after an error)."""
    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.AdaptiveAvgPool2d:
                swapped.append((parent, name, child))
    try:
        for parent, name, child in swapped:
            setattr(parent, name, MatrixAdaptiveAvgPool2d(child.output_size))
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
