"""The device-, dtype-, layout- and compiler-specific forms of the MetaFormer blocks' steps, chosen in one place.

The blocks in :mod:`mmmetaformer.models.layers` call the functions here for every step that has more than one form:
StarReLU, the scaled residual, the channel Linears and the depthwise convolution. :func:`choose_form` is the one
function that picks the form of a call, from :data:`FORMS`:

* the plain PyTorch expression of the math (``scale * relu(x) ** 2 + bias``, ``F.linear``, ``F.conv2d``), taken
  whenever the fast paths are off, always under ``torch.compile`` (the compiler fuses it itself) and while tracing
  (an exported graph holds the official operators);
* autograd Functions with hand-written backwards that keep less for the backward (StarReLU saves ``relu(x)`` once
  instead of twice, the scaled residual saves only what its scales' gradients need): about half of timm's
  training memory for the StarReLU families, on every device. StarReLU reads its scalars on the host where that
  is free (CPU tensors: one-pass kernels) and keeps them on the device elsewhere (a host read would synchronise a
  GPU every call);
* forms whose speed depends on the machine: a channel Linear as a matrix product, as a 1x1 convolution on the
  channels-last view, or as a 1x1 convolution on a channels-first copy (timm's form); a depthwise convolution with
  the library's weight gradient or with the weight gradient as per-sample forward convolutions. The first call of
  such a layer for a new shape times the candidates (forward, plus backward when gradients are on, on the first
  samples of the batch) and keeps the fastest, as cuDNN's benchmark mode does; in a distributed run rank 0
  measures and broadcasts its choice.

Every form computes the same math up to rounding, in at least the precision of timm's expression: fp16/bf16
products and sums are formed in float32 and rounded once.

On other devices than the CPU and CUDA GPUs (the ``meta`` device that counts MACs from shapes alone, for one) the
plain math runs.

Settings, read at every call:

* ``MMMETAFORMER_FAST_PATHS=0`` (or ``off``/``false``) runs the plain math everywhere; ``1``/``on``/``true`` or unset:
  fast paths on;
* ``MMMETAFORMER_FAST_PATH_FORMS=channel_linear=linear,depthwise_conv=conv`` forces forms by operation;
* ``MMMETAFORMER_FAST_PATH_MEASURE=0`` turns the timing off: each measured operation then takes its first form
  (the plain one), unless forced;
* :func:`use_fast_paths` overrides those it names inside a ``with`` block, and can make CPU tensors take the
  branches of another device (``use_fast_paths(device='cuda')``: how the CPU test suite runs the GPU branches).
"""
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import InvalidSettingError

ENV_SWITCH = 'MMMETAFORMER_FAST_PATHS'
ENV_FORMS = 'MMMETAFORMER_FAST_PATH_FORMS'
ENV_MEASURE = 'MMMETAFORMER_FAST_PATH_MEASURE'
LOW_PRECISION = (torch.float16, torch.bfloat16)
_TRUE, _FALSE = ('1', 'true', 'on', ''), ('0', 'false', 'off')

# Every operation with more than one form and its forms; the first is the plain PyTorch math.
FORMS: Dict[str, Tuple[str, ...]] = {
    'star_relu': ('plain', 'host_scalar', 'device_scalar'),
    'scaled_residual': ('plain', 'fused'),
    'channel_linear': ('linear', 'conv_channels_last', 'conv_channels_first'),
    'depthwise_conv': ('conv', 'weight_grad_as_forward'),
}
# Operations whose form is chosen by timing the candidates on the machine (the others follow fixed rules).
MEASURED = ('channel_linear', 'depthwise_conv')
# Timing of the candidates: the best of this many interleaved rounds (the first also sets up oneDNN's/cuDNN's
# kernels for the shape), on the first samples of the batch that hold at least MEASURED_ELEMENTS input elements
# (at least one sample): the forms' ranking follows the per-sample shape, and start-up stays below a training step.
ROUNDS = 2
MEASURED_ELEMENTS = 2 ** 17
_clock: Callable[[], float] = time.perf_counter


# ------------------------------------------------------------------------------------------------------ settings
def _parse_bool(name: str, value: str) -> bool:
    value = value.strip().lower()
    if value not in _TRUE + _FALSE:
        raise InvalidSettingError(f'{name} must be one of {", ".join(v for v in _TRUE + _FALSE if v)} (or empty), '
                                  f'got {value!r}')
    return value in _TRUE


@lru_cache(maxsize=16)
def _parse_forms(value: str) -> Dict[str, str]:
    forms = {}
    for item in filter(None, (part.strip() for part in value.split(','))):
        operation, _, form = (part.strip() for part in item.partition('='))
        if operation not in FORMS or form not in FORMS[operation]:
            accepted = '; '.join(f'{op}={"|".join(names)}' for op, names in FORMS.items())
            raise InvalidSettingError(f'{ENV_FORMS} takes comma-separated operation=form pairs among: {accepted}; '
                                      f'got {item!r}')
        forms[operation] = form
    return forms


@dataclass(frozen=True)
class Settings:
    """The settings in force: fast paths on, the device whose branches run (None: each tensor's), forced forms by
    operation, whether forms are measured."""
    enabled: bool = True
    device: Optional[str] = None
    forms: Dict[str, str] = field(default_factory=dict)
    measure: bool = True


_override: Dict[str, object] = {}  # what the innermost use_fast_paths() sets, over the environment


def current_settings() -> Settings:
    """The settings in force now: the environment (read at every call), overridden by :func:`use_fast_paths`.

    Raises:
        InvalidSettingError: an environment variable holds a value that is not accepted (the message lists those
            that are).
    """
    settings = Settings(enabled=_parse_bool(ENV_SWITCH, os.environ.get(ENV_SWITCH, '1')),
                        forms=_parse_forms(os.environ.get(ENV_FORMS, '')),
                        measure=_parse_bool(ENV_MEASURE, os.environ.get(ENV_MEASURE, '1')))
    if not _override:
        return settings
    forms = {**settings.forms, **_override.get('forms', {})}
    return replace(settings, **{**_override, 'forms': forms})


def fast_paths_enabled() -> bool:
    """Whether the fast paths are on (``MMMETAFORMER_FAST_PATHS``, or the innermost :func:`use_fast_paths`)."""
    return current_settings().enabled


@contextmanager
def use_fast_paths(enabled: Optional[bool] = None, device: Optional[str] = None,
                   forms: Optional[Dict[str, str]] = None, measure: Optional[bool] = None) -> Iterator[None]:
    """Set the fast paths inside a ``with`` block (the previous settings come back afterwards). What a call does
    not name keeps the setting in force: the environment's, or an enclosing block's.

    Args:
        enabled: True turns the fast paths on, False runs the plain PyTorch math everywhere; None (default) keeps
            the setting in force (``MMMETAFORMER_FAST_PATHS=0`` still runs the plain math inside
            ``use_fast_paths(forms=...)``).
        device: take the branches of this device type (``'cpu'`` or ``'cuda'``) whatever device the tensors are
            on; None (default) keeps an enclosing block's choice, and outside any each tensor's own device.
            ``use_fast_paths(device='cuda')`` runs the GPU branches on the CPU (how the tests cover them).
        forms: force forms by operation, e.g. ``{'channel_linear': 'conv_channels_first'}`` (names in
            :data:`FORMS`), added to those forced already; a forced form applies wherever it computes the same
            math, the others are chosen as usual.
        measure: False: no timing, each measured operation takes its first form unless forced; True: timing;
            None (default): the setting in force.

    Example:
        >>> with use_fast_paths(False):
        ...     loss = model(images).sum()  # plain PyTorch math
    """
    if device not in (None, 'cpu', 'cuda'):
        raise InvalidSettingError(f"device must be None, 'cpu' or 'cuda', got {device!r}")
    for operation, form in (forms or {}).items():
        if form not in FORMS.get(operation, ()):
            raise InvalidSettingError(f'unknown form {operation}={form}; the forms are {FORMS}')
    global _override
    previous = _override
    named = dict(enabled=None if enabled is None else bool(enabled), device=device,
                 measure=None if measure is None else bool(measure))
    _override = {**previous, **{name: value for name, value in named.items() if value is not None},
                 'forms': {**previous.get('forms', {}), **(forms or {})}}
    try:
        yield
    finally:
        _override = previous


# ------------------------------------------------------------------------------------------------------ dispatch
_measured: Dict[tuple, str] = {}
_measuring_seconds = 0.0  # wall time spent choosing measured forms (timing, and waiting for rank 0's choice)


def measured_forms() -> Dict[tuple, str]:
    """The forms chosen by timing so far: ``(operation, device, dtype, autocast dtype, grad, shapes) -> form``."""
    return dict(_measured)


def measuring_seconds() -> float:
    """The wall time that choosing the measured forms has taken since the start (or the last
    :func:`forget_measured_forms`): the start-up cost of the timing."""
    return _measuring_seconds


def forget_measured_forms() -> None:
    """Drop the timed choices and the time they took: the next call of each layer measures again."""
    global _measuring_seconds
    _measured.clear()
    _measuring_seconds = 0.0


def _device_type(x: Tensor, settings: Settings) -> str:
    return settings.device or x.device.type


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _conv_math_equals_matmul_math(x: Tensor, device: str) -> bool:
    """Whether a 1x1 convolution computes a float32 Linear in the precision of the matrix product. On a GPU, cuDNN
    convolutions use TF32 unless ``torch.backends.cudnn.allow_tf32`` is off, and matrix products only when
    ``torch.backends.cuda.matmul.allow_tf32`` (``torch.set_float32_matmul_precision``) allows it: the conv form is
    a candidate only where both settings agree, so float32 follows the user's choice for the matrix product."""
    if device == 'cpu' or x.dtype != torch.float32 or _autocast_dtype(x) is not None:
        return True
    return torch.backends.cudnn.allow_tf32 == torch.backends.cuda.matmul.allow_tf32


def _candidates(operation: str, x: Tensor, settings: Settings) -> Sequence[str]:
    """The forms of ``operation`` that compute the same math for this call, the fixed rule's choice first."""
    plain = FORMS[operation][0]
    if not settings.enabled or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return (plain, )  # the compiler fuses the plain math itself; a traced (ONNX) graph holds the official ops
    device = _device_type(x, settings)
    if device not in ('cpu', 'cuda'):
        return (plain, )  # the meta device (shapes only, e.g. counting MACs) and devices without tuned forms
    if operation == 'star_relu':
        own = 'host_scalar' if device == 'cpu' else 'device_scalar'
        return (own, ) + tuple(form for form in FORMS[operation] if form != own)
    if operation == 'scaled_residual':
        return ('fused', plain)
    if operation == 'channel_linear':
        return FORMS[operation] if x.dim() == 4 and _conv_math_equals_matmul_math(x, device) else (plain, )
    if operation == 'depthwise_conv':  # the per-sample weight gradient: float32 eager training on the CPU
        if (device == 'cpu' and torch.is_grad_enabled() and x.dtype == torch.float32
                and _autocast_dtype(x) is None):
            return FORMS[operation]
        return (plain, )
    raise KeyError(operation)


def choose_form(operation: str, x: Tensor, *args) -> str:
    """The form that ``operation`` (a key of :data:`FORMS`) takes for input ``x``: the one place where the blocks'
    choice of form depends on the device, the dtype, the layout, autocast, gradient mode or the compiler. (Inside a
    form, the hand-written autograd Functions run only where gradients are needed; without them the same math is
    computed in place.)

    Among the forms that compute the same math here, a form forced by :func:`use_fast_paths` or
    ``MMMETAFORMER_FAST_PATH_FORMS`` wins; then, for a measured operation (:data:`MEASURED`), the fastest form timed
    on the first call with these dtypes, shapes and layout (``args``: the layer's other arguments, as its forms
    take them); otherwise the fixed rule's choice.
    """
    global _measuring_seconds
    settings = current_settings()
    candidates = _candidates(operation, x, settings)
    forced = settings.forms.get(operation)
    if forced in candidates:
        return forced
    if len(candidates) == 1 or operation not in MEASURED:
        return candidates[0]
    if not settings.measure:
        return FORMS[operation][0]
    key = _measurement_key(operation, x, args, settings)
    form = _measured.get(key)
    if form is None:
        start = _clock()
        form = _measured[key] = _agreed_across_ranks(
            lambda: _fastest(candidates, FORM_FUNCTIONS[operation], x, args))
        _measuring_seconds += _clock() - start
    return form


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _measurement_key(operation: str, x: Tensor, args: tuple, settings: Settings) -> tuple:
    tensors = [t for t in (x, ) + args if isinstance(t, Tensor)]
    # In a distributed run the ranks may see other image sizes (detection): the key keeps only the layer's own
    # shapes, so every rank reaches the same keys in the same order and takes part in each broadcast.
    shapes = tuple(tuple(t.shape) for t in tensors[1:]) if _distributed() else \
        tuple((tuple(t.shape), t.stride()) for t in tensors)
    return (operation, _device_type(x, settings), x.dtype, _autocast_dtype(x), torch.is_grad_enabled(), shapes)


def _agreed_across_ranks(measure: Callable[[], str]) -> str:
    """``measure()`` on rank 0, broadcast to every rank of an initialised process group (so all ranks compute
    alike); ``measure()`` itself outside a distributed run."""
    if not _distributed():
        return measure()
    choice = [measure() if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(choice, src=0)
    return choice[0]


def _fastest(forms: Sequence[str], functions: Dict[str, Callable], x: Tensor, args: tuple) -> str:
    """The form whose call (with its backward when gradients are on) takes the least time on the first samples of
    these inputs: the best of :data:`ROUNDS` interleaved rounds; a tie goes to the earlier form."""
    grad = torch.is_grad_enabled()
    samples = min(x.shape[0], max(1, math.ceil(MEASURED_ELEMENTS / max(x[:1].numel(), 1))))
    inputs = [t.detach().requires_grad_(grad and t.is_floating_point()) if isinstance(t, Tensor) else t
              for t in (x[:samples], ) + tuple(args)]
    leaves = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    best = {form: math.inf for form in forms}
    for _ in range(ROUNDS):
        for form in forms:
            _synchronize(x)
            start = _clock()
            out = functions[form](*inputs)
            if leaves:
                torch.autograd.grad(out, leaves, torch.ones_like(out))
            _synchronize(x)
            best[form] = min(best[form], _clock() - start)
    return min(forms, key=lambda form: best[form])


def _synchronize(x: Tensor) -> None:
    if x.device.type == 'cuda':
        torch.cuda.synchronize(x.device)


# ------------------------------------------------------------------------------------------------------ StarReLU
def _differentiable_once(backward: Callable) -> Callable:
    """Mark a hand-written backward that is not differentiable again: asking for its graph (``create_graph=True``,
    the first step of a second derivative) raises an error that names the way out, instead of giving a gradient
    whose own derivative would be silently wrong."""

    def checked(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f'{type(ctx).__name__[:-len("Backward")]} (mmmetaformer fast paths) is differentiable once: for a '
                f'second derivative (create_graph=True) run the plain math, with use_fast_paths(False) or '
                f'{ENV_SWITCH}=0')
        return backward(ctx, *grads)
    return checked


def _wide_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype in which products of these tensors are formed: their promotion, at least float32."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _star_relu_from_relu(relu: Tensor, scale: Tensor, bias: Tensor, host_scalar: bool,
                         out: Optional[Tensor] = None) -> Tensor:
    """``scale * relu ** 2 + bias`` written in ``relu``'s dtype (into ``out``, which may be ``relu``), computed
    in float32 or wider and rounded once: no overflow where the result fits, the scale and bias never rounded to
    fp16/bf16."""
    out = torch.empty_like(relu) if out is None else out
    if host_scalar:  # one pass with a host scalar (the kernel computes fp16/bf16 in float32)
        return torch.addcmul(bias, relu, relu, value=scale.item(), out=out)
    scaled = relu * scale if relu.dtype == _wide_dtype(relu, scale) else relu.to(_wide_dtype(relu, scale)) * scale
    return torch.addcmul(bias, relu, scaled, out=out)


def _sum_of_products(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum()`` without the product tensor, in at least float32."""
    dtype = _wide_dtype(a, b)
    return torch.dot(a.reshape(-1).to(dtype), b.reshape(-1).to(dtype))


def _star_relu_grads(grad: Tensor, relu: Tensor, scale: Tensor, needs_input_grad: Sequence[bool],
                     host_scalar: bool):
    """Gradients of ``scale * relu ** 2 + bias`` for its input, ``scale`` and ``bias`` from the saved ``relu``:
    d/dx = 2 * scale * grad * relu, d/dscale = sum(grad * relu^2), d/dbias = sum(grad). ``grad * relu`` is formed in
    float32 (or wider) and scaled there: a loss-scaled fp16 gradient times an activation overflows fp16, and the
    scale's gradient is summed from it without dividing by the scale."""
    need_x, need_scale, need_bias = needs_input_grad[:3]
    wide = _wide_dtype(grad, relu)
    grad_relu = grad * relu if grad.dtype == wide else grad.to(wide).mul_(relu)
    grad_scale = _sum_of_products(grad_relu, relu).reshape(1).to(scale.dtype) if need_scale else None
    grad_bias = grad.sum(dtype=wide).reshape(1).to(scale.dtype) if need_bias else None
    grad_x = None
    if need_x:
        grad_x = grad_relu.mul_(2 * scale.item() if host_scalar else 2 * scale.to(wide)).to(relu.dtype)
    return grad_x, grad_scale, grad_bias


class _StarReLUFunction(torch.autograd.Function):
    """StarReLU that keeps ``relu(x)`` for the backward instead of ``x`` and the square (``x`` is freed): one saved
    tensor instead of autograd's two. Differentiable once: a second derivative would need ``x``, so asking for one
    raises an error (the plain math, ``use_fast_paths(False)``, has it)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, bias: Tensor, host_scalar: bool) -> Tensor:
        relu = torch.relu(x)
        ctx.save_for_backward(relu, scale)
        ctx.host_scalar = host_scalar
        return _star_relu_from_relu(relu, scale, bias, host_scalar)

    @staticmethod
    @_differentiable_once
    def backward(ctx, grad: Tensor):
        relu, scale = ctx.saved_tensors
        return _star_relu_grads(grad, relu, scale, ctx.needs_input_grad, ctx.host_scalar) + (None, )


def star_relu(x: Tensor, scale: Tensor, bias: Tensor, inplace: bool = False) -> Tensor:
    """``scale * relu(x) ** 2 + bias``. Without autograd and with ``inplace=True`` the result overwrites ``x``."""
    form = choose_form('star_relu', x)
    if form == 'plain':
        return scale * torch.relu(x) ** 2 + bias
    host_scalar = form == 'host_scalar'
    if torch.is_grad_enabled():
        return _StarReLUFunction.apply(x, scale, bias, host_scalar)
    relu = x.relu_() if inplace else torch.relu(x)
    return _star_relu_from_relu(relu, scale, bias, host_scalar, out=relu)


# ------------------------------------------------------------------------------------------------ scaled residual
class _ScaledResidualFunction(torch.autograd.Function):
    """``x * res_scale + branch * layer_scale`` (either scale may be None) with one output allocation; saves only
    the inputs that the scales' gradients need. Its backward is made of differentiable operations on the saved
    inputs, so a double backward is correct."""

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
    """``(grad * x)`` summed over every axis but the last, the product formed in at least float32."""
    wide = _wide_dtype(grad, x)
    return (grad.to(wide) * x).reshape(-1, x.shape[-1]).sum(0)


def scaled_residual(x: Tensor, branch: Tensor, layer_scale: Optional[Tensor], res_scale: Optional[Tensor]) -> Tensor:
    """``x * res_scale + branch * layer_scale`` over channels-last tensors; a scale of None is 1.

    With autograd: one Function (one output allocation, saves only what the scale gradients need). Without: computed
    in the branch's fresh output tensor (no new allocation; large fresh tensors cost page faults on the CPU).
    """
    if layer_scale is None and res_scale is None:
        return x + branch
    if choose_form('scaled_residual', x) == 'plain':
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
def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return F.linear(x, weight, bias)


def _conv_channels_last(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The Linear as a 1x1 convolution of the (B, C, H, W) view of the (B, H, W, C) tensor (no copy)."""
    return F.conv2d(x.permute(0, 3, 1, 2), weight[:, :, None, None], bias).permute(0, 2, 3, 1)


class _ChannelsFirstCopy(torch.autograd.Function):
    """An NCHW-contiguous copy of a (B, H, W, C) tensor whose gradient comes back in the (B, H, W, C) layout (the
    plain ``permute().contiguous()`` would hand the previous layer an NCHW-strided gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.permute(0, 2, 3, 1).contiguous()


def channels_first(x: Tensor) -> Tensor:
    """An NCHW-contiguous copy of a (B, H, W, C) tensor, ``x.permute(0, 3, 1, 2).contiguous()``, whose gradient comes
    back in the (B, H, W, C) layout: the plain copy hands the layers before it an NCHW-strided gradient, on which
    each of them runs slower or copies it again."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ChannelsFirstCopy.apply(x)
    return x.permute(0, 3, 1, 2).contiguous()


def _conv_channels_first(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The Linear as a 1x1 convolution of a channels-first (NCHW-contiguous) copy, timm's form of these layers.
    The result, and the gradient of ``x``, are copied back to the (B, H, W, C) layout of the other forms: an
    NCHW-strided tensor would slow the neighbouring layers (a depthwise convolution, a norm, an activation's
    backward) in ways the timing of this layer does not see."""
    return F.conv2d(channels_first(x), weight[:, :, None, None], bias).permute(0, 2, 3, 1).contiguous()


def channel_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """A Linear over the last axis of a (B, H, W, C) tensor, in the form :func:`choose_form` picks: a matrix
    product, or a 1x1 convolution (channels-last view or channels-first copy) where that is faster and computes
    the same math (on a GPU in float32 only where the TF32 settings of convolutions and matrix products agree)."""
    return FORM_FUNCTIONS['channel_linear'][choose_form('channel_linear', x, weight, bias)](x, weight, bias)


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
    @_differentiable_once
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad = grad.contiguous(memory_format=torch.channels_last)
        channels, padding = weight.shape[0], ctx.padding
        grad_x = None
        if need_x:
            # The aten operator (not a public function): given the channels-last input itself, the gradient comes
            # out channels-last too. Its public wrapper torch.nn.grad.conv2d_input passes only the input's shape (a
            # zero-stride tensor), which gives an NCHW gradient. Pinned by tests/test_models/test_fast_paths.py::
            # test_every_gradient_arrives_in_the_layout_of_its_tensor.
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, (1, 1), padding, (1, 1), False,
                                                         (0, 0), channels, (True, False, False))[0]
        grad_weight = None
        if need_weight:
            for sample in range(x.shape[0]):  # x[i] convolved with grad[i] as a (C, 1, H, W) kernel: (1, C, k, k)
                part = F.conv2d(x[sample:sample + 1], grad[sample].unsqueeze(1), padding=padding, groups=channels)
                grad_weight = part if grad_weight is None else grad_weight.add_(part)
            grad_weight = torch.zeros_like(weight) if grad_weight is None else grad_weight.reshape(weight.shape)
        grad_bias = grad.sum((0, 2, 3)) if need_bias else None
        return grad_x, grad_weight, grad_bias, None


def _depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Tuple[int, int]) -> Tensor:
    return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Tuple[int, int]) -> Tensor:
    """A stride-1 depthwise convolution of an NCHW(-strided) tensor in the form :func:`choose_form` picks
    (float32 CPU training may take the per-sample weight gradient of :class:`_DepthwiseConvFunction`)."""
    form = choose_form('depthwise_conv', x, weight, bias, padding)
    return FORM_FUNCTIONS['depthwise_conv'][form](x, weight, bias, padding)


# The function of each timed form, called with the layer's arguments.
FORM_FUNCTIONS: Dict[str, Dict[str, Callable[..., Tensor]]] = {
    'channel_linear': {'linear': _linear, 'conv_channels_last': _conv_channels_last,
                       'conv_channels_first': _conv_channels_first},
    'depthwise_conv': {'conv': _depthwise_conv, 'weight_grad_as_forward': _DepthwiseConvFunction.apply},
}
