"""The device-, dtype- and compiler-specific fast paths of the MetaFormer blocks, behind one switch.

The blocks in :mod:`mmmetaformer.models.layers` call the functions here for every step whose fastest form depends
on where and how it runs: StarReLU, a channel Linear followed by StarReLU, the scaled residual, channel Linears and
the depthwise convolution. Each function chooses between

* the plain PyTorch expression of the math (``scale * relu(x) ** 2 + bias``, ``F.linear``, ``nn.Conv2d``, ...),
  taken whenever the fast paths are off and always under ``torch.compile`` (the compiler fuses it itself);
* autograd Functions with hand-written backwards that keep less for the backward (StarReLU saves ``relu(x)`` once
  instead of twice, the scaled residual saves only what its scales' gradients need): about half of timm's
  training memory for the StarReLU families, on every device;
* CPU-only forms (host scalars in one-pass ``addcmul`` kernels, fused Linear+StarReLU, 1x1 convolutions that oneDNN
  runs faster than the matrix product, a depthwise weight gradient as forward convolutions), taken only for
  tensors on the CPU: on a GPU the scalar read would synchronise the device every call.

The switch: ``MMMETAFORMER_FAST_PATHS=0`` in the environment, or :func:`fast_paths` as a context manager, turns
every fast path off (plain PyTorch math, same results up to rounding). :func:`fast_paths` can also make CPU tensors
take the branches of another device (``fast_paths(device='cuda')``), which is how the CPU test suite runs the
GPU branches.
"""
import os
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as module_hooks

ENV_SWITCH = 'MMMETAFORMER_FAST_PATHS'
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _enabled_by_environment() -> bool:
    value = os.environ.get(ENV_SWITCH, '1').strip().lower()
    if value not in ('0', '1', 'false', 'true', 'off', 'on', ''):
        raise ValueError(f'{ENV_SWITCH} must be 1/on/true or 0/off/false, got {value!r}')
    return value not in ('0', 'false', 'off')


class _Switch:
    enabled: bool = _enabled_by_environment()
    device: Optional[str] = None  # None: each tensor's own device type


def fast_paths_enabled() -> bool:
    """Whether the fast paths are on (``MMMETAFORMER_FAST_PATHS``, or the innermost :func:`fast_paths`)."""
    return _Switch.enabled


@contextmanager
def fast_paths(enabled: bool = True, device: Optional[str] = None) -> Iterator[None]:
    """Turn the fast paths on or off inside a ``with`` block (the previous setting comes back afterwards).

    Args:
        enabled: False runs the plain PyTorch math everywhere.
        device: take the branches of this device type (``'cpu'`` or ``'cuda'``) whatever device the tensors are
            on; None (default) follows each tensor. Meant for tests: ``fast_paths(device='cuda')`` runs the GPU
            branches on the CPU.

    Example:
        >>> with fast_paths(False):
        ...     loss = model(images).sum()  # plain PyTorch math
    """
    if device not in (None, 'cpu', 'cuda'):
        raise ValueError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    previous = _Switch.enabled, _Switch.device
    _Switch.enabled, _Switch.device = bool(enabled), device
    try:
        yield
    finally:
        _Switch.enabled, _Switch.device = previous


def _on_cpu(x: Tensor) -> bool:
    """Whether ``x`` takes the CPU branches (its device, unless :func:`fast_paths` names another)."""
    return (_Switch.device or x.device.type) == 'cpu'


def _hand_written_autograd() -> bool:
    """Whether the autograd Functions apply: fast paths on, gradients wanted, eager mode."""
    return _Switch.enabled and torch.is_grad_enabled() and not torch.compiler.is_compiling()


# ------------------------------------------------------------------------------------------------------ StarReLU
def _sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum()`` without the product tensor, accumulated in at least float32: a scalar gradient sums a
    whole activation, which overflows in loss-scaled fp16. ``a`` and ``b`` may differ in dtype (autocast)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return torch.dot(a.reshape(-1).to(dtype), b.reshape(-1).to(dtype))


def _star_relu_grads(grad: Tensor, relu: Tensor, scale: Tensor, needs_input_grad: tuple):
    """Gradients of ``scale * relu ** 2 + bias`` for its input, ``scale`` and ``bias`` from the saved ``relu``:
    d/dx = 2 * scale * grad * relu, d/dscale = sum(grad * relu^2), d/dbias = sum(grad)."""
    need_x, need_scale, need_bias = needs_input_grad
    twice_scale = 2 * scale.item() if _on_cpu(relu) else 0.0  # a host scalar costs a device sync on a GPU
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
    """``scale * relu ** 2 + bias`` in ``relu``'s dtype. Not ``square``: CUDA autocast runs it as ``pow`` in float32,
    which would double the size of the widest activation of the block."""
    bias = bias.to(relu.dtype)
    if _on_cpu(relu):  # one pass with a host scalar
        return torch.addcmul(bias, relu, relu, value=scale.item())
    return torch.addcmul(bias, relu, relu * scale.to(relu.dtype))


class _StarReLUFunction(torch.autograd.Function):
    """StarReLU that keeps ``relu(x)`` for the backward instead of ``x`` and the square (``x`` is freed): one saved
    tensor instead of autograd's two."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        relu = torch.relu(x)
        ctx.save_for_backward(relu, scale)
        return _star_relu_from_relu(relu, scale, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        relu, scale = ctx.saved_tensors
        return _star_relu_grads(grad, relu, scale, ctx.needs_input_grad)


def star_relu(x: Tensor, scale: Tensor, bias: Tensor, inplace: bool = False) -> Tensor:
    """``scale * relu(x) ** 2 + bias``. Without autograd and with ``inplace=True`` the result overwrites ``x``."""
    if not _Switch.enabled or torch.compiler.is_compiling():
        return scale * torch.relu(x).square() + bias
    if not torch.is_grad_enabled():
        out = x.relu_() if inplace else torch.relu(x)
        return out.square_().mul_(scale).add_(bias)
    return _StarReLUFunction.apply(x, scale, bias)


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


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _has_global_module_hooks() -> bool:
    return bool(module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks
                or module_hooks._global_backward_hooks or module_hooks._global_backward_pre_hooks)


def _cpu_fp32_training(x: Tensor, weight: Tensor) -> bool:
    """Whether the CPU-only training Functions apply: fast paths on, float32 eager autograd on the CPU (autocast
    keeps the plain ops)."""
    return (_hand_written_autograd() and _on_cpu(x) and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type))


def fuses_linear_star_relu(x: Tensor, linear: nn.Linear, act: nn.Module) -> bool:
    """Whether ``act(linear(x))`` runs as one fused Function (float32 CPU training; ``act`` must be a StarReLU).

    Hooked modules (Grad-CAM targets, feature recorders) must see their own calls, so hooks turn the fusion off.
    """
    return (_cpu_fp32_training(x, linear.weight) and not _has_hooks(linear) and not _has_hooks(act)
            and not _has_global_module_hooks())


def linear_star_relu(x: Tensor, linear: nn.Linear, scale: Tensor, act_bias: Tensor) -> Tensor:
    """``scale * relu(linear(x)) ** 2 + act_bias`` as one autograd Function (see :func:`fuses_linear_star_relu`)."""
    return _LinearStarReLUFunction.apply(x, linear.weight, linear.bias, scale, act_bias)


# ------------------------------------------------------------------------------------------------ scaled residual
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
    """``x * res_scale + branch * layer_scale`` over channels-last tensors; a scale of None is 1.

    With autograd: one Function (one output allocation, saves only what the scale gradients need). Without: computed
    in the branch's fresh output tensor (no new allocation; large fresh tensors cost page faults on the CPU).
    """
    if layer_scale is None and res_scale is None:
        return x + branch
    if not _Switch.enabled or torch.compiler.is_compiling():
        return (x if res_scale is None else x * res_scale) + (branch if layer_scale is None else branch * layer_scale)
    if torch.is_grad_enabled():
        return _ScaledResidualFunction.apply(x, branch, layer_scale, res_scale)
    scales = [s for s in (layer_scale, res_scale) if s is not None]
    if branch.data_ptr() == x.data_ptr() or any(t.dtype != branch.dtype for t in [x] + scales):
        return _ScaledResidualFunction.apply(x, branch, layer_scale, res_scale)  # in place would change the dtype
    if layer_scale is not None:
        branch.mul_(layer_scale)
    return branch.addcmul_(x, res_scale) if res_scale is not None else branch.add_(x)


# ------------------------------------------------------------------------------------------------ channel layers
NARROW_CHANNELS = 64


def channel_linear(x: Tensor, linear: nn.Linear) -> Tensor:
    """A Linear over the last axis of a (B, H, W, C) tensor, as a 1x1 convolution on the channels-last view where
    that is faster.

    On the CPU, where oneDNN beats the matrix product: in inference always (10-20% faster), in training only for
    layers with a side of at most ``NARROW_CHANNELS`` channels (the tall-skinny products of the first stage, which
    then trains 5-6% faster; for wider layers the matrix product's backward wins). On a GPU, in float32 without
    autocast, where cuDNN may use TF32 (see :func:`_conv_runs_tf32_on_gpu`).
    """
    if _Switch.enabled and x.dim() == 4 and not torch.compiler.is_compiling() and (
            _conv_beats_linear_on_cpu(x, linear) if _on_cpu(x) else _conv_runs_tf32_on_gpu(x)):
        weight = linear.weight[:, :, None, None]
        return F.conv2d(x.permute(0, 3, 1, 2), weight, linear.bias).permute(0, 2, 3, 1)
    return F.linear(x, linear.weight, linear.bias)


def _conv_beats_linear_on_cpu(x: Tensor, linear: nn.Linear) -> bool:
    return not torch.is_grad_enabled() or min(linear.in_features, linear.out_features) <= NARROW_CHANNELS


def _conv_runs_tf32_on_gpu(x: Tensor) -> bool:
    """float32 on a GPU: PyTorch's defaults let cuDNN convolutions use TF32 tensor cores but not matrix products,
    so a 1x1 convolution is the faster form of the same Linear (the form timm's models take). Follows the two
    settings: with ``torch.backends.cudnn.allow_tf32 = False`` (or TF32 matrix products allowed) it is a Linear."""
    return (x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)
            and torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32)


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


def depthwise_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A stride-1 depthwise ``conv`` on an NCHW(-strided) tensor; float32 CPU training takes the faster weight
    gradient of :class:`_DepthwiseConvFunction`, everything else ``nn.Conv2d``'s own forward."""
    if _cpu_fp32_training(x, conv.weight):
        return _DepthwiseConvFunction.apply(x, conv.weight, conv.bias, conv.padding)
    return conv._conv_forward(x, conv.weight, conv.bias)
