"""Building blocks shared by every MetaFormer: norms, activations, scales, MLPs.

All blocks work on channels-last tensors (B, H, W, C), the layout of the official MetaFormer baselines: the MLPs
are plain GEMMs and the channel norm is a single ``layer_norm`` call. Where the fastest form of a step depends on
the device, the dtype or the compiler, the block calls :mod:`mmmetaformer.models.layers.fast_paths`, which also
holds the switch back to plain PyTorch math.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import MODELS, build_module
from . import fast_paths
from .fast_paths import LOW_PRECISION


class _FP32Norm(nn.Module):
    """A norm whose statistics are always computed in float32, also under fp16/bf16 autocast.

    Low-precision statistics over a whole feature map are what made PoolFormer diverge under native AMP.
    """

    def __init__(self, num_channels: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def _normalize(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in LOW_PRECISION:
            with torch.autocast(x.device.type, enabled=False):
                return self._normalize(x.float(), torch.float32).to(x.dtype)
        return self._normalize(x, x.dtype)

    def _affine(self, dtype: torch.dtype):
        """Weight and bias in the dtype of the computation (float32 also for a model cast with ``.half()``)."""
        return self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype)

    def extra_repr(self) -> str:
        return f'{self.num_channels}, bias={self.bias is not None}, eps={self.eps}'


@MODELS.register_module()
class ChannelLayerNorm(_FP32Norm):
    """LayerNorm over the channels of a (B, H, W, C) tensor (ConvFormer/CAFormer blocks, v2 stem/downsampling)."""

    def _normalize(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return F.layer_norm(x, (self.num_channels, ), *self._affine(dtype), self.eps)


@MODELS.register_module()
class ModifiedLayerNorm(_FP32Norm):
    """The paper's MLN: normalizes each sample over tokens and channels, GroupNorm(1, C), per-channel affine.

    Used by PoolFormer v1 (with bias, eps 1e-5) and by IdentityFormer/RandFormer/PoolFormerV2 (no bias, eps 1e-6).
    """

    def _normalize(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        # The (B, C, H, W) view of a channels-last tensor has channels_last strides: group_norm runs its
        # channels-last kernel without a copy.
        return F.group_norm(x.permute(0, 3, 1, 2), 1, *self._affine(dtype), self.eps).permute(0, 2, 3, 1)


def build_norm(cfg: dict, num_channels: int) -> nn.Module:
    """Build a norm from a config such as ``dict(type='ChannelLayerNorm', bias=False, eps=1e-6)``."""
    return build_module(cfg, num_channels=num_channels)


@MODELS.register_module()
class StarReLU(nn.Module):
    """StarReLU: ``scale * relu(x) ** 2 + bias`` with learnable scalars.

    With ``inplace=True`` and no gradient needed (inference), the result overwrites ``x``: the MLP's hidden
    activations are the largest tensors of the model, and not allocating them again is most of the speed-up.
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.scale = nn.Parameter(torch.full((1, ), scale_value))
        self.bias = nn.Parameter(torch.full((1, ), bias_value))

    def forward(self, x: Tensor) -> Tensor:
        return fast_paths.star_relu(x, self.scale, self.bias, self.inplace)


@MODELS.register_module()
class SquaredReLU(nn.Module):
    """SquaredReLU: ``relu(x) ** 2`` (the activation of the MlpHead)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


MODELS.register_module('GELU', module=nn.GELU)


class Scale(nn.Module):
    """Learnable per-channel scale (layer scale and res scale): a holder of the parameter ``scale``, which the
    block's residual applies itself (:func:`~mmmetaformer.models.layers.fast_paths.scaled_residual`, one fused
    step for both scales). It has no ``forward``: the module is never called, so hooks on it would never run."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim, ), float(init_value)))

    def extra_repr(self) -> str:
        return f'{self.scale.numel()}'


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample: zero whole residual branches with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    """Stochastic depth (module form of :func:`drop_path`)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class ChannelLinear(nn.Linear):
    """A Linear layer over the channels of a (B, H, W, C) tensor; state-dict compatible with ``nn.Linear``. It may
    run as a 1x1 convolution where that is faster (see
    :func:`~mmmetaformer.models.layers.fast_paths.channel_linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        return fast_paths.channel_linear(x, self.weight, self.bias)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (stride 1, zero padding, same state dict) whose CPU float32 training may take a
    faster weight gradient (see :func:`~mmmetaformer.models.layers.fast_paths.depthwise_conv`)."""

    def __init__(self, channels: int, kernel_size: int, padding: int, bias: bool = False) -> None:
        super().__init__(channels, channels, kernel_size, padding=padding, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return fast_paths.depthwise_conv(x, self.weight, self.bias, self.padding)


class Mlp(nn.Module):
    """Channel MLP of a MetaFormer block: Linear -> act -> dropout -> Linear -> dropout."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, act_cfg: Optional[dict] = None, bias: bool = False,
                 drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = ChannelLinear(dim, hidden, bias=bias)
        self.act = build_module(act_cfg or dict(type='StarReLU', inplace=True))
        self.drop1 = nn.Dropout(drop)
        self.fc2 = ChannelLinear(hidden, dim, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class MlpHead(nn.Module):
    """The MLP classifier of ConvFormer/CAFormer: Linear -> SquaredReLU -> LayerNorm -> dropout -> Linear."""

    def __init__(self, dim: int, num_classes: int, mlp_ratio: float = 4.0, head_dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = SquaredReLU()
        self.norm = nn.LayerNorm(hidden)
        self.head_dropout = nn.Dropout(head_dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.head_dropout(self.norm(self.act(self.fc1(x)))))
