"""An mm data preprocessor's test-time work on the packed ``inputs``, as graph operations.

At test time the three libraries' preprocessors do, per image batch, in this order:

- channel flip (``bgr_to_rgb`` / ``rgb_to_bgr`` of mmengine's ``ImgDataPreprocessor`` and mmseg's
  ``SegDataPreProcessor``, ``to_rgb`` of mmpretrain's ``ClsDataPreprocessor``) of 3-channel images;
- conversion to float and ``(x - mean) / std``;
- padding at the bottom and right with the pad value (after normalisation, so in normalised units):
  mmengine / mmdet and mmpretrain pad to a multiple of ``pad_size_divisor``; mmseg pads only when the preprocessor
  has a ``test_cfg``, to ``test_cfg.size`` (no padding where the image is larger) or to a multiple of
  ``test_cfg.size_divisor`` (its training-time ``size`` / ``size_divisor`` are not used at test time).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ExportError

Size = Union[int, Tensor]  # image sizes are Python ints when run, 0-dim tensors while traced for ONNX


def _shortfall(target: Size, size: Size) -> Size:
    """``max(target - size, 0)``, for ints and for traced sizes (a Python ``max`` would freeze a traced size)."""
    gap = target - size
    return gap.clamp(min=0) if isinstance(gap, Tensor) else max(gap, 0)


def _round_up(size: Size, divisor: int) -> Size:
    return (size + divisor - 1) // divisor * divisor


class GraphPreprocessor(nn.Module):
    """Channel flip, normalisation and padding of a raw float image batch (N, 3, H, W), as the model's data
    preprocessor does them at test time. Build it with :meth:`from_data_preprocessor`.

    Args:
        mean, std: per-channel normalisation (None: no normalisation).
        flip_channels: reverse the channel order of 3-channel input (BGR <-> RGB).
        pad_size_divisor: pad H and W at the bottom/right up to a multiple of this (1: none).
        pad_size: pad up to this (H, W) where the image is smaller (mmseg's ``test_cfg.size``).
        pad_value: the value of padded pixels, in normalised units.
    """

    def __init__(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 flip_channels: bool = False, pad_size_divisor: int = 1, pad_size: Optional[Tuple[int, int]] = None,
                 pad_value: float = 0.0) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError('GraphPreprocessor needs both mean and std, or neither')
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer('mean', torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
            self.register_buffer('std', torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.flip_channels = flip_channels
        self.pad_size_divisor = int(pad_size_divisor or 1)
        self.pad_size = tuple(pad_size) if pad_size is not None else None
        self.pad_value = float(pad_value)

    @classmethod
    def from_data_preprocessor(cls, preprocessor: nn.Module) -> 'GraphPreprocessor':
        """The test-time behaviour of mmengine's ``ImgDataPreprocessor`` (mmdet's ``DetDataPreprocessor``), mmseg's
        ``SegDataPreProcessor`` or mmpretrain's ``ClsDataPreprocessor`` (and their subclasses)."""
        classes = {c.__name__ for c in type(preprocessor).__mro__}
        if preprocessor.__class__.__name__ == 'BaseDataPreprocessor':
            return cls()  # only moves data to the device
        normalize = getattr(preprocessor, '_enable_normalize', False)
        mean = preprocessor.mean.flatten().tolist() if normalize else None
        std = preprocessor.std.flatten().tolist() if normalize else None
        if 'SegDataPreProcessor' in classes:
            test_cfg = preprocessor.test_cfg or {}
            return cls(mean, std, preprocessor._channel_conversion, test_cfg.get('size_divisor') or 1,
                       test_cfg.get('size'), preprocessor.pad_val)
        if 'ClsDataPreprocessor' in classes:
            return cls(mean, std, preprocessor.to_rgb, preprocessor.pad_size_divisor, None, preprocessor.pad_value)
        if 'ImgDataPreprocessor' in classes:
            return cls(mean, std, preprocessor._channel_conversion, preprocessor.pad_size_divisor, None,
                       preprocessor.pad_value)
        raise ExportError(f'cannot export the data preprocessor {type(preprocessor).__name__}: known are '
                          f'mmengine\'s ImgDataPreprocessor (mmdet\'s DetDataPreprocessor), mmseg\'s '
                          f'SegDataPreProcessor and mmpretrain\'s ClsDataPreprocessor')

    @property
    def pads(self) -> bool:
        """Whether some input sizes get padded."""
        return self.pad_size is not None or self.pad_size_divisor > 1

    def padded_size(self, height: Size, width: Size) -> Tuple[Size, Size]:
        """The (H, W) of the preprocessed batch for an input of (height, width)."""
        if self.pad_size is not None:
            height = height + _shortfall(self.pad_size[0], height)
            width = width + _shortfall(self.pad_size[1], width)
        if self.pad_size_divisor > 1:
            height, width = _round_up(height, self.pad_size_divisor), _round_up(width, self.pad_size_divisor)
        return height, width

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        x = input.float()
        if self.flip_channels:  # the graph input always has 3 channels
            x = x[:, [2, 1, 0]]
        if self.normalize:
            x = (x - self.mean) / self.std
        if not self.pads:
            return x
        height, width = x.shape[-2:]
        padded_height, padded_width = self.padded_size(height, width)
        return F.pad(x, (0, padded_width - width, 0, padded_height - height), 'constant', self.pad_value)

    def extra_repr(self) -> str:
        return (f'normalize={self.normalize}, flip_channels={self.flip_channels}, '
                f'pad_size_divisor={self.pad_size_divisor}, pad_size={self.pad_size}, pad_value={self.pad_value}')
