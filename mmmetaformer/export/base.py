"""The interface every export wrapper follows (see the package docstring for the whole convention)."""
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from ..errors import UserError

INPUT_NAME = 'input'
# Names of the input's dynamic axes under ``--dynamic``; outputs that follow the input use the same names.
BATCH, HEIGHT, WIDTH = 'batch', 'height', 'width'
INPUT_AXES = (BATCH, HEIGHT, WIDTH)


class ExportError(UserError, RuntimeError):
    """The model cannot be exported as asked; the message names the config and, where known, the module."""


class ExportModule(nn.Module):
    """A whole mm model as one traceable graph: ``forward(input)`` takes the raw image batch (float32 (N, 3, H, W),
    unnormalised, channel order as loaded) and returns a tuple of tensors named by ``output_names``.

    Subclasses set ``output_names`` and ``output_axes`` (for each output, its axes that vary: with the input under
    ``--dynamic`` when named by an input axis, e.g. ``{'scores': {0: BATCH}}``, with the data in every export when
    named otherwise, e.g. the number of detections), ``dynamic_batch`` (False when the graph only handles N = 1)
    and ``fixed_size_reason`` (why a traced graph holds only for the traced input size, if it does: ``--dynamic``
    is then refused with it).
    """
    output_names: Tuple[str, ...] = ()
    output_axes: Dict[str, Dict[int, str]] = {}
    dynamic_batch: bool = True
    fixed_size_reason: Optional[str] = None

    def forward(self, input: Tensor) -> Tuple[Tensor, ...]:  # noqa: A002  (the graph input's name)
        raise NotImplementedError

    def dynamic_axes(self, dynamic: bool) -> Dict[str, Dict[int, str]]:
        """``torch.onnx.export``'s ``dynamic_axes``, also the graph's declared output shapes (every other axis has
        its traced size): the outputs' data-dependent axes; with ``dynamic`` also the input's H and W (and N when
        ``dynamic_batch``) and the outputs' axes that follow them."""
        input_axes = {}
        if dynamic:
            input_axes = {2: HEIGHT, 3: WIDTH, **({0: BATCH} if self.dynamic_batch else {})}
        varying = set(input_axes.values())
        outputs = {name: {axis: label for axis, label in axes.items() if label in varying or label not in INPUT_AXES}
                   for name, axes in self.output_axes.items()}
        return {name: axes for name, axes in {INPUT_NAME: input_axes, **outputs}.items() if axes}
