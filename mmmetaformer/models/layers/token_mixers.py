"""Token mixers: the only part that differs between MetaFormer families.

Every mixer is registered in ``mmmetaformer.registry.MODELS``, is built with ``dim`` (the stage width) plus its own
arguments, and maps a channels-last tensor (B, H, W, C) to one of the same shape. A new mixer registered the same
way can be used from a config: ``token_mixers=[dict(type='Pooling'), ..., dict(type='MyMixer', k=3)]``.
"""
import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import MODELS
from .blocks import ChannelLinear, DepthwiseConv2d, StarReLU


@MODELS.register_module()
class IdentityMixer(nn.Module):
    """No token mixing at all (IdentityFormer, first stages of RandFormer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


@MODELS.register_module()
class Pooling(nn.Module):
    """PoolFormer's mixer: ``avgpool(x) - x`` with a stride-1 window that ignores padding."""

    def __init__(self, dim: int, pool_size: int = 3) -> None:
        super().__init__()
        if pool_size % 2 != 1:
            raise ValueError(f'Pooling needs an odd pool_size to keep the token grid, got {pool_size}')
        self.pool_size = pool_size

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), self.pool_size, 1, self.pool_size // 2,
                              count_include_pad=False)
        return pooled.permute(0, 2, 3, 1).sub_(x)  # in place: avg_pool2d's backward needs no output

    def extra_repr(self) -> str:
        return f'pool_size={self.pool_size}'


@MODELS.register_module()
class SepConv(nn.Module):
    """Inverted separable convolution (ConvFormer): Linear -> StarReLU -> depthwise kxk conv -> Linear."""

    def __init__(self, dim: int, expansion_ratio: float = 2.0, kernel_size: int = 7, bias: bool = False) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = ChannelLinear(dim, hidden, bias=bias)
        self.act1 = StarReLU(inplace=True)
        self.dwconv = DepthwiseConv2d(hidden, kernel_size, padding=kernel_size // 2, bias=bias)
        self.pwconv2 = ChannelLinear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.pwconv1(x))
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.pwconv2(x)


@MODELS.register_module()
class Attention(nn.Module):
    """Multi-head self-attention over all tokens (CAFormer), without bias or positional embedding."""

    def __init__(self, dim: int, head_dim: int = 32, num_heads: int = None, qkv_bias: bool = False,
                 proj_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads or max(dim // head_dim, 1)
        inner = self.num_heads * head_dim
        self.qkv = ChannelLinear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = ChannelLinear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, height, width, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))


@MODELS.register_module()
class RandomMixing(nn.Module):
    """RandFormer's mixer: a frozen random row-stochastic N x N matrix applied over the N = H*W tokens.

    The stored matrix belongs to the grid it was made for (``num_tokens``, a square grid: 196 = 14x14 in stage 3
    and 49 = 7x7 in stage 4 at 224 input); on that grid the mixer is exactly the official one. On any other grid
    the matrix is resampled: viewed as a kernel K[out_y, out_x, in_y, in_x], the input-token axes and then the
    output-token axes are bilinearly interpolated (align_corners=False) to the new grid, and each row is divided by
    its sum. Interpolation of non-negative weights stays non-negative, so the result is again a proper mixing
    (every output token is a convex combination of input tokens) with the same spatial structure. Resampled
    matrices are cached per grid and dropped whenever the stored matrix changes (under ``torch.compile`` the
    compiled graph resamples instead).
    """

    def __init__(self, dim: int, num_tokens: int = 196) -> None:
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f'RandomMixing needs a square token grid, got num_tokens={num_tokens}')
        self.base_grid = (side, side)
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1),
                                          requires_grad=False)
        self._cache: Dict[Tuple, Tensor] = {}

    def mixing_matrix(self, height: int, width: int) -> Tensor:
        """The (H*W, H*W) mixing matrix for an H x W token grid."""
        if (height, width) == self.base_grid:
            return self.random_matrix
        matrix = self.random_matrix
        if torch.compiler.is_compiling():  # the cache key (version, data_ptr) would break the graph: resample in it
            return self._resample(matrix.detach().float(), height, width).to(matrix.dtype)
        # Tensor._version (private; torch has no public counter of in-place changes) drops the cache when the
        # stored matrix is changed in place, e.g. by load_state_dict; inference tensors keep no counter. Pinned by
        # tests/test_models/test_random_mixing.py::test_cache_is_dropped_when_the_matrix_changes.
        version = -1 if matrix.is_inference() else matrix._version
        key = (height, width, matrix.device, matrix.dtype, version, matrix.data_ptr())
        cached = self._cache.get(key)
        if cached is None:
            self._cache.clear()
            with torch.no_grad():
                cached = self._resample(matrix.float(), height, width).to(matrix.dtype)
            self._cache[key] = cached
        return cached

    def _resample(self, matrix: Tensor, height: int, width: int) -> Tensor:
        base_h, base_w = self.base_grid
        n_base, n_new = base_h * base_w, height * width
        # input-token axes: (n_base out, 1, base_h, base_w) -> (n_base, n_new)
        cols = F.interpolate(matrix.reshape(n_base, 1, base_h, base_w), size=(height, width), mode='bilinear',
                             align_corners=False).reshape(n_base, n_new)
        # output-token axes: (n_new in, 1, base_h, base_w) -> (n_new, n_new), then back to (out, in)
        rows = F.interpolate(cols.t().reshape(n_new, 1, base_h, base_w), size=(height, width), mode='bilinear',
                             align_corners=False).reshape(n_new, n_new).t()
        return (rows / rows.sum(dim=1, keepdim=True)).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        matrix = self.mixing_matrix(height, width)
        if matrix.dtype != x.dtype:
            matrix = matrix.to(x.dtype)
        return torch.matmul(matrix, x.reshape(batch, height * width, channels)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f'num_tokens={self.random_matrix.shape[0]}, base_grid={self.base_grid}'
