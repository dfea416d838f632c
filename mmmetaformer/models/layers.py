"""Building blocks shared by every MetaFormer: norms, activations, scales, MLPs.

All blocks work on channels-last tensors (B, H, W, C), the layout of the official MetaFormer baselines: the MLPs
are plain GEMMs and the channel norm is a single ``layer_norm`` call.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as module_hooks

from ..registry import MODELS, build_module

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
        if x.dtype in _LOW_PRECISION:
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


def _sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum()`` without the product tensor, accumulated in float32 (or float64) also for fp16/bf16 inputs:
    a scalar gradient sums a whole activation, and loss-scaled fp16 overflows."""
    if a.dtype in _LOW_PRECISION:
        a, b = a.float(), b.float()
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _star_relu_grads(grad: Tensor, relu: Tensor, scale: Tensor, needs_input_grad: tuple):
    """Gradients of ``scale * relu ** 2 + bias`` for its input, ``scale`` and ``bias`` from the saved ``relu``:
    d/dx = 2 * scale * grad * relu, d/dscale = sum(grad * relu^2), d/dbias = sum(grad)."""
    need_x, need_scale, need_bias = needs_input_grad
    twice_scale = 2 * scale.item() if relu.device.type == 'cpu' else 0.0  # no device sync on the CPU
    if twice_scale != 0.0:  # 2 * scale * grad * relu in one pass
        grad_x = torch.addcmul(grad.new_zeros(()), grad, relu, value=twice_scale)
        grad_scale = _sum_of_products(grad_x, relu).div_(twice_scale) if need_scale else None
    else:
        grad_relu = grad * relu
        grad_scale = _sum_of_products(grad_relu, relu) if need_scale else None
        grad_x = grad_relu.mul_(2 * scale)
    grad_scale = grad_scale.reshape(1).to(scale.dtype) if need_scale else None
    grad_bias = grad.sum(dtype=torch.promote_types(grad.dtype, torch.float32)).reshape(1).to(scale.dtype) \
        if need_bias else None
    return (grad_x.to(relu.dtype) if need_x else None), grad_scale, grad_bias


def _star_relu_from_relu(relu: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    if relu.device.type == 'cpu':  # one pass: bias + scale * relu * relu
        return torch.addcmul(bias.to(relu.dtype), relu, relu, value=scale.item())
    return relu.square().mul_(scale).add_(bias)


class _StarReLUFunction(torch.autograd.Function):
    """StarReLU that keeps ``relu(x)`` for the backward instead of ``x`` (same memory: ``x`` is freed); on the CPU
    the forward is two passes over the activation instead of four and the input gradient one pass."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        relu = torch.relu(x)
        ctx.save_for_backward(relu, scale)
        return _star_relu_from_relu(relu, scale, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        relu, scale = ctx.saved_tensors
        return _star_relu_grads(grad, relu, scale, ctx.needs_input_grad)


class _LinearStarReLUFunction(torch.autograd.Function):
    """``StarReLU(linear(x))`` for float32 training on the CPU. The ReLU overwrites the fresh product in place
    (the pre-activation is never needed again), which saves allocating and writing another tensor the size of
    the block's widest activation; the backward is the same math as ``F.linear`` then :class:`_StarReLUFunction`.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], scale: Tensor, act_bias: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        relu = (rows.mm(weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())).relu_()
        ctx.save_for_backward(rows, weight, relu, scale)
        ctx.input_shape = x.shape
        return _star_relu_from_relu(relu, scale, act_bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, weight, relu, scale = ctx.saved_tensors
        need_x, need_weight, need_bias, need_scale, need_act_bias = ctx.needs_input_grad
        grad_pre, grad_scale, grad_act_bias = _star_relu_grads(
            grad.reshape(relu.shape), relu, scale, (need_x or need_weight or need_bias, need_scale, need_act_bias))
        grad_x = grad_pre.mm(weight).reshape(ctx.input_shape) if need_x else None
        grad_weight = grad_pre.t().mm(rows) if need_weight else None
        grad_bias = grad_pre.sum(0) if need_bias else None
        return grad_x, grad_weight, grad_bias, grad_scale, grad_act_bias


def _has_global_module_hooks() -> bool:
    return bool(module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks
                or module_hooks._global_backward_hooks or module_hooks._global_backward_pre_hooks)


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _cpu_fp32_training(x: Tensor, weight: Tensor) -> bool:
    """Whether the hand-written CPU training Functions apply: float32 eager autograd on the CPU (autocast and
    ``torch.compile`` keep the plain ops)."""
    return (torch.is_grad_enabled() and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling())


def _fusable(x: Tensor, linear: nn.Linear, act: nn.Module) -> bool:
    # Hooked modules (Grad-CAM targets, feature recorders) must see their own calls: the fused path skips them.
    return (isinstance(act, StarReLU) and _cpu_fp32_training(x, linear.weight)
            and not _has_hooks(linear) and not _has_hooks(act) and not _has_global_module_hooks())


def linear_act(x: Tensor, linear: nn.Linear, act: nn.Module) -> Tensor:
    """``act(linear(x))``; a StarReLU after a channel Linear in float32 CPU training runs fused (see
    :class:`_LinearStarReLUFunction`)."""
    if _fusable(x, linear, act):
        return _LinearStarReLUFunction.apply(x, linear.weight, linear.bias, act.scale, act.bias)
    return act(linear(x))


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
        if torch.compiler.is_compiling():  # the compiler fuses the plain expression itself
            return self.scale * torch.relu(x).square() + self.bias
        if not torch.is_grad_enabled():
            out = x.relu_() if self.inplace else torch.relu(x)
            return out.square_().mul_(self.scale).add_(self.bias)
        return _StarReLUFunction.apply(x, self.scale, self.bias)


@MODELS.register_module()
class SquaredReLU(nn.Module):
    """SquaredReLU: ``relu(x) ** 2`` (the activation of the MlpHead)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


MODELS.register_module('GELU', module=nn.GELU)


class Scale(nn.Module):
    """Learnable per-channel scale (layer scale and res scale)."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim, ), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class _ScaledResidualFunction(torch.autograd.Function):
    """``x * res_scale + branch * layer_scale`` (either scale may be None) with one output allocation; saves only
    the inputs that the scales' gradients need."""

    @staticmethod
    def forward(ctx, x: Tensor, branch: Tensor, layer_scale: Optional[Tensor], res_scale: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x if res_scale is not None and res_scale.requires_grad else None,
                              branch if layer_scale is not None and layer_scale.requires_grad else None,
                              layer_scale, res_scale)
        ctx.dtypes = x.dtype, branch.dtype
        if res_scale is None:
            return torch.addcmul(x, branch, layer_scale)
        if layer_scale is None:
            return torch.addcmul(branch, x, res_scale)
        out = torch.mul(x, res_scale)
        return out.addcmul_(branch, layer_scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, branch, layer_scale, res_scale = ctx.saved_tensors
        x_dtype, branch_dtype = ctx.dtypes
        grad_x = grad_branch = grad_layer_scale = grad_res_scale = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad if res_scale is None else grad * res_scale).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_branch = (grad if layer_scale is None else grad * layer_scale).to(branch_dtype)
        if ctx.needs_input_grad[2]:
            grad_layer_scale = _sum_over_all_but_channels(grad, branch).to(layer_scale.dtype)
        if ctx.needs_input_grad[3]:
            grad_res_scale = _sum_over_all_but_channels(grad, x).to(res_scale.dtype)
        return grad_x, grad_branch, grad_layer_scale, grad_res_scale


def _sum_over_all_but_channels(grad: Tensor, x: Tensor) -> Tensor:
    dtype = torch.promote_types(torch.promote_types(grad.dtype, x.dtype), torch.float32)
    return (grad * x).reshape(-1, x.shape[-1]).sum(0, dtype=dtype)


def scaled_residual(x: Tensor, branch: Tensor, layer_scale: Optional[Tensor], res_scale: Optional[Tensor]) -> Tensor:
    """``x * res_scale + branch * layer_scale`` over channels-last tensors; a scale of None is 1."""
    if layer_scale is None and res_scale is None:
        return x + branch
    return _ScaledResidualFunction.apply(x, branch, layer_scale, res_scale)


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
    """A Linear layer over the channels of a (B, H, W, C) tensor; state-dict compatible with ``nn.Linear``.

    On the CPU it runs as a 1x1 convolution on the channels-last view where oneDNN beats the matrix product: in
    inference always (10-20% faster), in training only for layers with a side of at most 64 channels (the
    tall-skinny products of the first stage, which then trains 5-6% faster; for wider layers the matrix product's
    backward wins).
    """

    NARROW_CHANNELS = 64

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.device.type == 'cpu' and (
                not torch.is_grad_enabled() or min(self.in_features, self.out_features) <= self.NARROW_CHANNELS):
            weight = self.weight[:, :, None, None]
            return F.conv2d(x.permute(0, 3, 1, 2), weight, self.bias).permute(0, 2, 3, 1)
        return F.linear(x, self.weight, self.bias)


class _DepthwiseConvFunction(torch.autograd.Function):
    """Stride-1 depthwise convolution whose weight gradient runs as forward depthwise convolutions.

    oneDNN has no depthwise kernel for the channels-last weight gradient: it runs a grouped kernel padded to 16x16
    channel blocks, about 10x slower than the forward at the models' shapes. The weight gradient is itself a
    depthwise convolution per sample, of the input with the output gradient as kernel (``k x k`` outputs per
    channel), which oneDNN's fast forward kernel computes; the samples' results are summed.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Tuple[int, int]) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad = grad.contiguous(memory_format=torch.channels_last)
        channels, padding = weight.shape[0], ctx.padding
        grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], list(padding), [1, 1], False,
                                                     [0, 0], channels, [True, False, False])[0] if need_x else None
        grad_weight = None
        if need_weight:
            for sample in range(x.shape[0]):  # x[i] convolved with grad[i] as a (C, 1, H, W) kernel: (1, C, k, k)
                part = F.conv2d(x[sample:sample + 1], grad[sample].unsqueeze(1), padding=padding, groups=channels)
                grad_weight = part if grad_weight is None else grad_weight.add_(part)
            grad_weight = torch.zeros_like(weight) if grad_weight is None else grad_weight.reshape(weight.shape)
        grad_bias = grad.sum((0, 2, 3)) if need_bias else None
        return grad_x, grad_weight, grad_bias, None


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (stride 1, same state dict) whose CPU float32 training takes the faster weight
    gradient of :class:`_DepthwiseConvFunction`; everything else runs as ``nn.Conv2d``."""

    def __init__(self, channels: int, kernel_size: int, padding: int, bias: bool = False) -> None:
        super().__init__(channels, channels, kernel_size, padding=padding, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if _cpu_fp32_training(x, self.weight):
            return _DepthwiseConvFunction.apply(x, self.weight, self.bias, self.padding)
        return super().forward(x)


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
        return self.drop2(self.fc2(self.drop1(linear_act(x, self.fc1, self.act))))


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
