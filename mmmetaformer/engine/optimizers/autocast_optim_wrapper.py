"""Mixed precision on the CPU, where mmengine's ``AmpOptimWrapper`` refuses to run."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from ...registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """Mixed precision without loss scaling, for bfloat16 (which has float32's range): runs the forward pass under
    ``torch.autocast`` on the model's device. mmengine's ``AmpOptimWrapper`` refuses to run without a GPU; this is
    what ``tools/train.py --amp`` uses on the CPU."""

    def __init__(self, *args, dtype: str = 'bfloat16', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type=device, dtype=self.cast_dtype):
            yield
