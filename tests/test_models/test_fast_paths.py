"""The fast paths compute the official math: loss and every gradient of all six families equal the independent
reference implementation's, in every branch (CPU, GPU forced on the CPU, plain PyTorch math) and under fp32, bf16
and fp16 autocast; every form of every operation equals the float64 math; each hand-written backward passes
``gradcheck`` in double; fp16/bf16 StarReLU is at least as safe as timm's expression at edge values; the dispatch
reads its settings at every call, and the timing chooser (tested with a fake clock) agrees across ranks."""
import functools
import math

import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.errors import InvalidSettingError
from mmmetaformer.models.layers import fast_paths
from mmmetaformer.models.layers.fast_paths import _ScaledResidualFunction
from mmmetaformer.models.utils import to_canonical
from reference_impl import build_reference

FAMILIES = {'poolformer': mmf.PoolFormer, 'poolformerv2': mmf.PoolFormerV2, 'identityformer': mmf.IdentityFormer,
            'randformer': mmf.RandFormer, 'convformer': mmf.ConvFormer, 'caformer': mmf.CAFormer}
ONE_PER_FAMILY = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
                  'caformer_s18']
# The branches every fast path can take: each tensor's own device (CPU here), the GPU branches forced on CPU
# tensors, and the plain PyTorch math with the fast paths off. The branches force the timed operations' other forms
# (where they compute the same math: on the GPU branch in float32 the Linears stay matrix products).
BRANCHES = {'cpu': dict(enabled=True, forms={'channel_linear': 'conv_channels_last',
                                             'depthwise_conv': 'weight_grad_as_forward'}),
            'gpu': dict(enabled=True, device='cuda', forms={'channel_linear': 'conv_channels_first'}),
            'plain': dict(enabled=False)}
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# Bounds on the relative error of the whole gradient (all parameters and the input, concatenated) against the float64
# reference. fp32: float32 rounding of sums, measured at most 5e-6 (ConvFormer-S18). Autocast rounds every
# matrix-product input to 8 (bf16) or 11 (fp16) mantissa bits, 4e-3 and 5e-4 per activation, which grows over 12-18
# blocks: measured at most 6.4e-2 (bf16) and 7.7e-3 (fp16), for the plain PyTorch math as for the fast paths.
WHOLE_GRADIENT_TOLERANCE = {'fp32': 2e-5, 'bf16': 1.5e-1, 'fp16': 2e-2}


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def ours_from_reference(name, reference, **kwargs):
    family, arch = name.split('_')
    model = FAMILIES[family](arch=arch, norm_outputs=False, **kwargs)
    canonical, _, _ = to_canonical({k: v.float() for k, v in reference.state_dict().items()})
    model.load_state_dict({k[len('backbone.'):]: v for k, v in canonical.items() if k.startswith('backbone.')})
    return model.train()


def stage_loss(outputs):
    # weights differ per stage and element so that a wrong gradient cannot hide in a symmetric sum
    return sum((i + 1) * (o.double() * torch.linspace(-1, 1, o.shape[1], dtype=torch.double)[None, :, None, None])
               .square().mean() for i, o in enumerate(outputs))


def input_size(name):
    return 224 if name.startswith('randformer') else 32  # the reference RandFormer only runs at 224


@functools.lru_cache(maxsize=None)
def reference_run(name):
    """The reference model (float64), its input, loss and gradients (canonical names), for one family."""
    torch.manual_seed(0)
    reference = build_reference(name).double().train()
    x = torch.randn(1, 3, input_size(name), input_size(name), dtype=torch.double, requires_grad=True)
    loss = stage_loss(reference.stage_outputs(x))
    loss.backward()
    grads, _, _ = to_canonical({k: p.grad for k, p in reference.named_parameters() if p.grad is not None})
    grads = {k: v for k, v in grads.items() if k.startswith('backbone.')}
    return reference, x.detach(), loss.item(), grads, x.grad


@functools.lru_cache(maxsize=None)
def our_model(name):
    return ours_from_reference(name, reference_run(name)[0])


def flat(grads, x_grad):
    return torch.cat([grads[k].double().flatten() for k in sorted(grads)] + [x_grad.double().flatten()])


@functools.lru_cache(maxsize=None)
def compare_with_reference(name, branch, precision):
    """Our loss and gradients on the reference's input, in one branch and precision, against the float64 reference:
    the relative error of the loss and of the whole gradient (all parameters and the input, concatenated), and the
    fp32 per-tensor check's failures (see the test)."""
    _, x, ref_loss, ref_grads, ref_x_grad = reference_run(name)
    model = our_model(name)
    model.zero_grad(set_to_none=True)
    x_ours = x.float().requires_grad_()
    with fast_paths.use_fast_paths(**BRANCHES[branch]):
        with torch.autocast('cpu', dtype=PRECISIONS[precision] or torch.bfloat16,
                            enabled=PRECISIONS[precision] is not None):
            outputs = model(x_ours)
        loss = stage_loss(outputs)
        loss.backward()
    grads = {'backbone.' + k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(ref_grads)
    assert all(torch.isfinite(g).all() and g.dtype == torch.float32 for g in grads.values())
    # A float32 sum of n terms is off by about sqrt(n) ulps of the summed magnitudes, so the gradients that sum a
    # whole activation (the StarReLU scalars over the first stage's 4 x 64-channel hidden activation, the norms'
    # biases) get that much absolute slack, in units of the typical gradient.
    typical = torch.stack([g.norm() for g in ref_grads.values()]).median().item()
    terms = x[0, 0].numel() // 16 * 4 * 64
    slack = math.sqrt(terms) * torch.finfo(torch.float32).eps * typical
    failures = [key for key, grad in grads.items()
                if (grad.double() - ref_grads[key]).norm().item() > 1e-4 * ref_grads[key].norm().item() + slack]
    return (abs(loss.item() - ref_loss) / abs(ref_loss), rel_err(flat(grads, x_ours.grad), flat(ref_grads, ref_x_grad)),
            failures)


@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('branch', list(BRANCHES))
@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_loss_and_every_gradient_equal_the_reference(name, branch, precision):
    loss_error, error, failures = compare_with_reference(name, branch, precision)
    tolerance = WHOLE_GRADIENT_TOLERANCE[precision]
    assert loss_error <= tolerance and error < tolerance
    if branch != 'plain':  # the fast paths add no error of their own to the rounding of the precision
        assert error <= 1.5 * compare_with_reference(name, 'plain', precision)[1] + 1e-6
    if precision == 'fp32':
        assert not failures, failures


@pytest.mark.parametrize('scales', ['layer', 'res', 'both'])
def test_scaled_residual_gradients_in_double(scales):
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    branch = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    layer = torch.randn(5, dtype=torch.double, requires_grad=True) if scales in ('layer', 'both') else None
    res = torch.randn(5, dtype=torch.double, requires_grad=True) if scales in ('res', 'both') else None
    out = _ScaledResidualFunction.apply(x, branch, layer, res)
    torch.testing.assert_close(out, x * (1 if res is None else res) + branch * (1 if layer is None else layer))
    assert torch.autograd.gradcheck(_ScaledResidualFunction.apply, (x, branch, layer, res))


@pytest.mark.parametrize('kernel_size,with_bias', [(7, False), (3, True), (1, True)])
def test_depthwise_conv_weight_gradient_per_sample_equals_the_convolution_gradient(kernel_size, with_bias):
    from mmmetaformer.models.layers import DepthwiseConv2d
    from mmmetaformer.models.layers.fast_paths import _DepthwiseConvFunction
    padding = kernel_size // 2
    conv = DepthwiseConv2d(16, kernel_size, padding, bias=with_bias)
    plain = torch.nn.Conv2d(16, 16, kernel_size, padding=padding, groups=16, bias=with_bias)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(3, 9, 11, 16).permute(0, 3, 1, 2).requires_grad_()  # channels-last, as SepConv feeds it
    with fast_paths.use_fast_paths(forms={'depthwise_conv': 'weight_grad_as_forward'}):
        out = conv(x)
    assert type(out.grad_fn).__name__ == '_DepthwiseConvFunctionBackward'
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, [x] + list(conv.parameters()), grad_out)
    expected = torch.autograd.grad(plain(x), [x] + list(plain.parameters()), grad_out)
    torch.testing.assert_close(out, plain(x))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    x64 = torch.randn(2, 4, 5, 6, dtype=torch.double, requires_grad=True)
    weight = torch.randn(4, 1, kernel_size, kernel_size, dtype=torch.double, requires_grad=True)
    bias = torch.randn(4, dtype=torch.double, requires_grad=True) if with_bias else None
    assert torch.autograd.gradcheck(lambda *args: _DepthwiseConvFunction.apply(*args, (padding, padding)),
                                    (x64, weight, bias))


def test_depthwise_conv_leaves_autocast_and_inference_to_the_plain_convolution():
    from mmmetaformer.models.layers import DepthwiseConv2d
    conv = DepthwiseConv2d(8, 7, 3)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    def forced():
        return fast_paths.use_fast_paths(forms={'depthwise_conv': 'weight_grad_as_forward'})
    with forced(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert type(conv(x).grad_fn).__name__ == 'ConvolutionBackward0'
    with forced(), torch.no_grad():
        assert conv(x).grad_fn is None
    with forced():
        out = conv(x)
    with pytest.raises(RuntimeError, match='_DepthwiseConvFunction .* is differentiable once: .* use_fast_paths'):
        torch.autograd.grad(out.sum(), x, create_graph=True)  # an error, never a wrong second derivative


@pytest.mark.parametrize('branch', ['cpu', 'cuda'])
@pytest.mark.parametrize('grad_dtype,act_dtype', [(torch.float32, torch.bfloat16), (torch.float32, torch.float16),
                                                  (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)])
def test_star_relu_backward_takes_mixed_autocast_dtypes_in_every_branch(branch, grad_dtype, act_dtype):
    """Under CUDA autocast the gradient reaching StarReLU can be float32 while the saved ReLU is bf16/fp16; both
    branches give the float64 gradients to the precision of the inputs."""
    from mmmetaformer.models.layers.fast_paths import _star_relu_grads
    relu = torch.rand(4, 5, 6, 32).to(act_dtype)
    grad = torch.rand(4, 5, 6, 32).add_(0.1).to(grad_dtype)  # positive: sums without cancellation
    scale = torch.tensor([0.7])
    grad_x, grad_scale, grad_bias = _star_relu_grads(grad, relu, scale, (True, True, True), branch == 'cpu')
    relu64, grad64 = relu.double(), grad.double()
    assert grad_x.dtype == act_dtype and grad_scale.dtype == grad_bias.dtype == torch.float32
    precision = torch.finfo(act_dtype).eps
    assert rel_err(grad_x.double(), 2 * 0.7 * grad64 * relu64) < precision
    assert rel_err(grad_scale.double(), (grad64 * relu64.square()).sum().reshape(1)) < 1e-6
    assert rel_err(grad_bias.double(), grad64.sum().reshape(1)) < 1e-6


# ------------------------------------------------------------------------------------ low precision against timm
def star_relu_run(x, scale, bias, grad_out, fn):
    """Output, input gradient and scalar gradients of ``fn(x, scale, bias)`` for ``grad_out``."""
    x = x.detach().requires_grad_()
    scale = torch.tensor([scale], requires_grad=True)
    bias = torch.tensor([bias], requires_grad=True)
    out = fn(x, scale, bias)
    grads = torch.autograd.grad(out, [x, scale, bias], grad_out.to(out.dtype))
    return (out, ) + grads


# Activations around and above fp16's square-root limit (256), small and negative ones; loss-scaled gradients near
# the fp16 maximum where the exact input gradient still fits.
EDGE_ACTIVATIONS = torch.tensor([-3.0, 0.0, 1e-3, 0.5, 2.0, 200.0, 255.0, 257.0, 300.0, 1000.0])


@pytest.mark.parametrize('scale', [1e-4, 1.0, 1e4])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('branch', ['cpu', 'cuda'])
def test_star_relu_low_precision_at_edge_values_is_as_safe_as_timm(branch, dtype, scale):
    """Under the same autocast as timm's ``scale * relu(x) ** 2 + bias``: the output finite wherever the exact
    result fits the dtype, within one rounding of it, never further than timm's; the input gradient formed from
    a gradient near the fp16 maximum without overflow where the exact one fits; the scale's and bias's gradients
    to float32 precision, also for tiny and huge scales."""
    from timm.models.metaformer import StarReLU as TimmStarReLU
    bias = -0.25
    timm_act = TimmStarReLU(scale_value=scale, bias_value=bias)
    x = EDGE_ACTIVATIONS.reshape(1, 1, 2, 5).to(dtype)
    exact = scale * torch.relu(x.double()) ** 2 + bias
    finfo = torch.finfo(dtype)
    fits = exact.abs() <= finfo.max
    with torch.autocast('cpu', dtype=dtype):
        timm_out = timm_act(x)
    for grad_mode in (False, True):
        with fast_paths.use_fast_paths(device=branch), torch.autocast('cpu', dtype=dtype), \
                torch.set_grad_enabled(grad_mode):
            ours = mmf.StarReLU(scale, bias, inplace=True)(x.clone())
        assert ours.dtype == dtype
        assert torch.isfinite(ours[fits]).all()
        error = (ours.double() - exact).abs()
        assert (error <= exact.abs() * finfo.eps / 2 + finfo.tiny)[fits].all()  # rounded once
        timm_error = (timm_out.double() - exact).abs()
        assert (error <= timm_error + exact.abs() * finfo.eps)[fits & torch.isfinite(timm_error)].all()
    # backward: a loss-scaled gradient near the fp16 maximum, where 2 * scale * grad * relu still fits
    relu = torch.relu(x.double())
    grad_out = torch.full_like(x, 6e4 if dtype == torch.float16 else 1e30, dtype=torch.float32).to(dtype)
    grad_out = torch.minimum(grad_out.double(), 0.99 * finfo.max / (2 * scale * relu).clamp_min(1e-30)).to(dtype)
    exact_grads = (2 * scale * grad_out.double() * relu, (grad_out.double() * relu ** 2).sum(), grad_out.double().sum())
    with fast_paths.use_fast_paths(device=branch), torch.autocast('cpu', dtype=dtype):
        out, grad_x, grad_scale, grad_bias = star_relu_run(x, scale, bias, grad_out, fast_paths.star_relu)
    assert torch.isfinite(grad_x).all() and grad_x.dtype == dtype
    assert ((grad_x.double() - exact_grads[0]).abs() <= exact_grads[0].abs() * finfo.eps + finfo.tiny).all()
    assert grad_scale.dtype == torch.float32 and rel_err(grad_scale.double(), exact_grads[1]) < 1e-6
    assert rel_err(grad_bias.double(), exact_grads[2]) < 1e-6


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_scaled_residual_low_precision_forms_scale_gradients_in_float32(dtype):
    """A model cast to fp16/bf16 with a loss-scaled gradient near the fp16 maximum: the scales' gradients are formed
    in float32, so products that overflow fp16 (timm's ``x * scale`` backward gives inf - inf there) cancel exactly;
    the output and the activation gradients equal timm's up to one rounding."""
    sign = torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1)  # the two samples' products cancel in each channel
    x = (300.0 * sign).expand(2, 3, 3, 4).to(dtype).requires_grad_()
    branch = (-200.0 * sign).expand(2, 3, 3, 4).to(dtype).requires_grad_()
    layer = torch.full((4, ), 1e-4, dtype=dtype, requires_grad=True)
    res = torch.full((4, ), 0.5, dtype=dtype, requires_grad=True)
    grad = torch.full((2, 3, 3, 4), 6e4).to(dtype)
    with fast_paths.use_fast_paths(forms={'scaled_residual': 'fused'}):
        out = fast_paths.scaled_residual(x, branch, layer, res)
    grads = torch.autograd.grad(out, [x, branch, layer, res], grad)
    timm_out = x * res + branch * layer
    timm_grads = torch.autograd.grad(timm_out, [x, branch, layer, res], grad)
    assert out.dtype == dtype
    torch.testing.assert_close(out, timm_out)
    for ours, timm_grad in zip(grads[:2], timm_grads[:2]):
        torch.testing.assert_close(ours, timm_grad)
    for ours in grads[2:]:
        assert ours.dtype == dtype and torch.equal(ours, torch.zeros(4, dtype=dtype))


def test_double_backward_is_correct_or_refused_with_a_clear_error():
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    branch = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    layer = torch.randn(5, dtype=torch.double, requires_grad=True)
    res = torch.randn(5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradgradcheck(_ScaledResidualFunction.apply, (x, branch, layer, res))
    scale = torch.tensor([0.8], dtype=torch.double, requires_grad=True)
    bias = torch.tensor([-0.1], dtype=torch.double, requires_grad=True)
    with fast_paths.use_fast_paths(False):  # the plain math is differentiable twice
        assert torch.autograd.gradgradcheck(fast_paths.star_relu, (x, scale, bias))
    for branch_device in ('cpu', 'cuda'):
        with fast_paths.use_fast_paths(device=branch_device):
            out = fast_paths.star_relu(x, scale, bias)
        assert type(out.grad_fn).__name__ == '_StarReLUFunctionBackward'
        with pytest.raises(RuntimeError, match='_StarReLUFunction .* differentiable once: .*use_fast_paths.False'):
            torch.autograd.grad(out.sum(), x, create_graph=True)
        torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], 2 * scale * torch.relu(x))


# ------------------------------------------------------------------------------------------------ the dispatch
# Every form of every operation, forced, against the float64 math: forward and every gradient.
def _operation_case(operation):
    """(function of the inputs, float64 math of the inputs, inputs) for one operation at tiny sizes."""
    torch.manual_seed(0)
    if operation == 'star_relu':
        inputs = (torch.randn(2, 4, 5, 8), torch.tensor([0.8]), torch.tensor([-0.1]))
        return fast_paths.star_relu, lambda x, s, b: s * torch.relu(x) ** 2 + b, inputs
    if operation == 'scaled_residual':
        inputs = (torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8), torch.randn(8), torch.randn(8))
        return fast_paths.scaled_residual, lambda x, y, ls, rs: x * rs + y * ls, inputs
    if operation == 'channel_linear':
        inputs = (torch.randn(2, 4, 5, 8), torch.randn(16, 8), torch.randn(16))
        return fast_paths.channel_linear, torch.nn.functional.linear, inputs
    inputs = (torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last), torch.randn(4, 1, 3, 3),
              torch.randn(4))
    return (lambda x, w, b: fast_paths.depthwise_conv(x, w, b, (1, 1)),
            lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=1, groups=4), inputs)


@pytest.mark.parametrize('operation,form', [(op, form) for op, forms in fast_paths.FORMS.items() for form in forms])
def test_every_forced_form_equals_the_float64_math(operation, form):
    function, math_of, inputs = _operation_case(operation)
    leaves = [t.clone().requires_grad_() for t in inputs]
    with fast_paths.use_fast_paths(forms={operation: form}):
        assert fast_paths.choose_form(operation, *leaves) == form
        out = function(*leaves)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    leaves64 = [t.double().requires_grad_() for t in inputs]
    out64 = math_of(*leaves64)
    grads64 = torch.autograd.grad(out64, leaves64, grad_out.double())
    torch.testing.assert_close(out.double(), out64, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, grads64):
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), fast_paths.use_fast_paths(forms={operation: form}):
        torch.testing.assert_close(function(*[t.clone() for t in inputs]).double(), out64.detach(),
                                   rtol=1e-5, atol=1e-5)


def test_channels_first_copy_sends_the_gradient_back_channels_last():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    out = fast_paths.channels_first(x)
    assert out.shape == (2, 5, 3, 4) and out.is_contiguous()
    torch.testing.assert_close(out, x.permute(0, 3, 1, 2))
    grad_out = torch.randn_like(out)
    grad, = torch.autograd.grad(out, x, grad_out)
    assert grad.is_contiguous()  # the plain permute().contiguous() gives an NCHW-strided gradient here
    torch.testing.assert_close(grad, grad_out.permute(0, 2, 3, 1))
    with torch.no_grad():
        torch.testing.assert_close(fast_paths.channels_first(x), out)


@pytest.mark.parametrize('channel_linear', fast_paths.FORMS['channel_linear'])
@pytest.mark.parametrize('depthwise_conv', fast_paths.FORMS['depthwise_conv'])
def test_every_gradient_arrives_in_the_layout_of_its_tensor(channel_linear, depthwise_conv):
    """In every form, the gradient of each layer's output has the strides of that output (a gradient in another
    layout makes the layer's backward slower, unseen by the timing of the forms): the depthwise convolution's
    input gradient and the channels-first copies (a form's, and the backbone's NCHW outputs) come back channels-
    last."""
    torch.manual_seed(0)
    model = mmf.CAFormer(arch='s18', out_indices=(0, 1, 2, 3), init_cfg=None)
    misplaced = []

    def check_the_gradient_of_the_output(module, inputs, output):
        def check(grad, name=module.__class__.__name__, stride=output.stride()):
            if grad.stride() != stride:
                misplaced.append((name, tuple(output.shape), stride, grad.stride()))
        output.register_hook(check)
    for module in model.modules():
        if not list(module.children()) or isinstance(module, (mmf.models.layers.SepConv, mmf.models.layers.Mlp)):
            module.register_forward_hook(check_the_gradient_of_the_output)
    with fast_paths.use_fast_paths(forms={'channel_linear': channel_linear, 'depthwise_conv': depthwise_conv}):
        sum(out.mean() for out in model(torch.randn(2, 3, 64, 64))).backward()
    assert not misplaced


def test_the_chooser_keeps_the_fastest_form_timed_once_per_shape(monkeypatch):
    """A fake clock makes ``conv_channels_first`` the fastest: it is chosen, timed once per key (shape, grad mode),
    reused afterwards; forced forms and ``measure=False`` bypass the timing; the time the timing took is counted."""
    seconds = {'linear': 3.0, 'conv_channels_last': 2.0, 'conv_channels_first': 1.0}
    clock = {'now': 0.0}
    calls = []

    def timed(form, function):
        def run(*args):
            calls.append(form)
            clock['now'] += seconds[form]
            return function(*args)
        return run
    functions = {form: timed(form, f) for form, f in fast_paths.FORM_FUNCTIONS['channel_linear'].items()}
    monkeypatch.setitem(fast_paths.FORM_FUNCTIONS, 'channel_linear', functions)
    monkeypatch.setattr(fast_paths, '_clock', lambda: clock['now'])
    monkeypatch.delenv(fast_paths.ENV_FORMS, raising=False)
    monkeypatch.delenv(fast_paths.ENV_MEASURE, raising=False)
    fast_paths.forget_measured_forms()
    x, weight = torch.randn(2, 3, 3, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_first'
    assert calls == list(seconds) * fast_paths.ROUNDS  # interleaved rounds
    assert fast_paths.measuring_seconds() == sum(seconds.values()) * fast_paths.ROUNDS
    calls.clear()
    assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_first' and not calls
    seconds['linear'] = 0.5  # the choice is kept for the key, re-measured for a new one
    assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_first' and not calls
    with torch.no_grad():
        assert fast_paths.choose_form('channel_linear', x, weight, None) == 'linear' and calls
    assert sorted(key[4] for key in fast_paths.measured_forms()) == [False, True]  # by grad mode
    assert fast_paths.measuring_seconds() == (6.0 + 3.5) * fast_paths.ROUNDS
    calls.clear()
    with fast_paths.use_fast_paths(forms={'channel_linear': 'conv_channels_last'}):
        assert fast_paths.choose_form('channel_linear', x[:1], weight, None) == 'conv_channels_last'
    with fast_paths.use_fast_paths(measure=False):
        assert fast_paths.choose_form('channel_linear', x[:1], weight, None) == 'linear'
    monkeypatch.setenv(fast_paths.ENV_MEASURE, '0')
    assert fast_paths.choose_form('channel_linear', x[:1], weight, None) == 'linear' and not calls
    fast_paths.forget_measured_forms()
    assert not fast_paths.measured_forms() and fast_paths.measuring_seconds() == 0


def test_gpu_float32_linears_are_matrix_products_unless_tf32_settings_agree():
    x, weight = torch.randn(1, 2, 2, 4), torch.randn(3, 4)
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        with fast_paths.use_fast_paths(device='cuda', measure=False, forms={'channel_linear': 'conv_channels_last'}):
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision('highest')  # PyTorch's defaults: TF32 convolutions, IEEE products
            assert fast_paths.choose_form('channel_linear', x, weight, None) == 'linear'
            torch.set_float32_matmul_precision('high')  # the user allows TF32 products
            assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_last'
            torch.backends.cudnn.allow_tf32 = False
            assert fast_paths.choose_form('channel_linear', x, weight, None) == 'linear'
            torch.set_float32_matmul_precision('highest')
            assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_last'
            with torch.autocast('cpu', dtype=torch.bfloat16):
                torch.backends.cudnn.allow_tf32 = True
                assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_last'
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def test_fast_path_switch_turns_every_hand_written_function_off(monkeypatch):
    monkeypatch.delenv(fast_paths.ENV_SWITCH, raising=False)
    model = mmf.ConvFormer(arch='s18', out_indices=(0, ))
    x = torch.randn(1, 3, 32, 32)
    functions = []

    def record(module, args, out):
        functions.append(type(out.grad_fn).__name__)
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, mmf.StarReLU)]
    with fast_paths.use_fast_paths(False):
        assert not fast_paths.fast_paths_enabled()
        model(x)
    assert functions and not any(name.startswith('_') for name in functions)  # plain autograd ops only
    assert fast_paths.fast_paths_enabled()  # restored
    functions.clear()
    model(x)
    assert functions and all(name == '_StarReLUFunctionBackward' for name in functions)
    monkeypatch.setenv(fast_paths.ENV_SWITCH, 'off')  # read at every call, not only at import
    functions.clear()
    model(x)
    assert functions and not any(name.startswith('_') for name in functions)
    for handle in handles:
        handle.remove()
    with pytest.raises(InvalidSettingError, match='device'):
        with fast_paths.use_fast_paths(device='tpu'):
            pass


@pytest.mark.parametrize('value,enabled', [('0', False), ('off', False), ('1', True), ('true', True), ('', True)])
def test_fast_path_environment_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(fast_paths.ENV_SWITCH, value)
    assert fast_paths.fast_paths_enabled() is enabled
    monkeypatch.setenv(fast_paths.ENV_SWITCH, 'maybe')
    with pytest.raises(InvalidSettingError, match=f"{fast_paths.ENV_SWITCH} must be one of 1, true, on, 0"):
        fast_paths.fast_paths_enabled()


def test_a_block_keeps_the_settings_it_does_not_name(monkeypatch):
    """The environment's switch holds inside ``use_fast_paths(forms=..., measure=...)``, and an inner block keeps the
    device of the block around it."""
    x = torch.randn(1, 2, 2, 4)
    monkeypatch.setenv(fast_paths.ENV_SWITCH, '0')
    with fast_paths.use_fast_paths(forms={'star_relu': 'device_scalar'}, measure=False):
        assert not fast_paths.fast_paths_enabled()
        assert fast_paths.choose_form('star_relu', x) == 'plain'
        with fast_paths.use_fast_paths(True):
            assert fast_paths.choose_form('star_relu', x) == 'device_scalar'
    monkeypatch.setenv(fast_paths.ENV_SWITCH, '1')
    outside = fast_paths.current_settings()
    with fast_paths.use_fast_paths(device='cuda'):
        with fast_paths.use_fast_paths(measure=False):
            assert fast_paths.current_settings().device == 'cuda'
            assert fast_paths.choose_form('star_relu', x) == 'device_scalar'
        with fast_paths.use_fast_paths(False):
            assert fast_paths.choose_form('star_relu', x) == 'plain'
    assert fast_paths.current_settings() == outside and outside.device is None


def test_forms_environment_forces_forms_and_names_the_accepted_ones(monkeypatch):
    monkeypatch.setenv(fast_paths.ENV_FORMS, 'channel_linear=conv_channels_first, depthwise_conv=conv')
    assert fast_paths.current_settings().forms == {'channel_linear': 'conv_channels_first', 'depthwise_conv': 'conv'}
    x, weight = torch.randn(1, 2, 2, 4), torch.randn(3, 4)
    assert fast_paths.choose_form('channel_linear', x, weight, None) == 'conv_channels_first'
    with fast_paths.use_fast_paths(forms={'channel_linear': 'linear'}):  # the context manager wins
        assert fast_paths.choose_form('channel_linear', x, weight, None) == 'linear'
    monkeypatch.setenv(fast_paths.ENV_FORMS, 'channel_linear=gemm')
    with pytest.raises(InvalidSettingError, match='channel_linear=linear|conv_channels_last|conv_channels_first'):
        fast_paths.current_settings()
    with pytest.raises(InvalidSettingError, match='unknown form'):
        with fast_paths.use_fast_paths(forms={'star_relu': 'cubic'}):
            pass


RANK_SCRIPT = '''
import os, sys, torch
import torch.distributed as dist
from mmmetaformer.models.layers import fast_paths
dist.init_process_group('gloo')
rank = dist.get_rank()
# each rank's clock favours another form: alone, rank 0 would choose conv_channels_first, rank 1 linear
favoured = 'conv_channels_first' if rank == 0 else 'linear'
clock = {'now': 0.0}
def timed(form, function):
    def run(*args):
        clock['now'] += 1.0 if form == favoured else 2.0
        return function(*args)
    return run
fast_paths.FORM_FUNCTIONS['channel_linear'] = {
    form: timed(form, f) for form, f in fast_paths.FORM_FUNCTIONS['channel_linear'].items()}
fast_paths._clock = lambda: clock['now']
weight = torch.randn(4, 8, requires_grad=True)
size = 3 + rank  # the ranks see other image sizes, as in detection
choices = [fast_paths.choose_form('channel_linear', torch.randn(2, size, size, 8, requires_grad=True), weight, None)]
with torch.no_grad():
    choices.append(fast_paths.choose_form('channel_linear', torch.randn(1, size, size, 8), weight, None))
print(rank, ','.join(choices), len(fast_paths.measured_forms()), flush=True)
dist.destroy_process_group()
'''


def test_two_ranks_take_rank_zeros_measured_forms(tmp_path):
    """Each rank's clock favours another form, and the ranks see other input sizes: both take rank 0's choice."""
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'WORLD_SIZE': '2',
           'MMMETAFORMER_FAST_PATH_FORMS': '', 'MMMETAFORMER_FAST_PATH_MEASURE': '1'}
    ranks = [subprocess.Popen([sys.executable, '-c', RANK_SCRIPT], env={**env, 'RANK': str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert all(process.returncode == 0 for process in ranks), [err[-2000:] for _, err in outputs]
    lines = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert lines == ['0 conv_channels_first,conv_channels_first 2', '1 conv_channels_first,conv_channels_first 2']


def test_an_operation_without_a_rule_for_its_forms_is_refused(monkeypatch):
    """Each operation of ``FORMS`` needs a rule saying which of its forms compute the same math for a call: a new
    operation without one is an error, not a silent choice."""
    monkeypatch.setitem(fast_paths.FORMS, 'layer_norm', ('plain', 'fused'))
    with pytest.raises(KeyError, match='layer_norm'):
        fast_paths.choose_form('layer_norm', torch.randn(1, 2, 2, 4))
    with fast_paths.use_fast_paths(False):  # the plain math needs no rule
        assert fast_paths.choose_form('layer_norm', torch.randn(1, 2, 2, 4)) == 'plain'
