"""The training fast paths compute the official math: loss and every gradient of all six families equal the
independent reference implementation's, in every branch (CPU, GPU forced on the CPU, plain PyTorch math) and under
fp32, bf16 and fp16 autocast; each hand-written backward passes ``gradcheck`` in double."""
import functools
import math

import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.models.layers import fast_paths
from mmmetaformer.models.layers.fast_paths import _ScaledResidualFunction
from mmmetaformer.models.utils import to_canonical
from reference_impl import build_reference

FAMILIES = {'poolformer': mmf.PoolFormer, 'poolformerv2': mmf.PoolFormerV2, 'identityformer': mmf.IdentityFormer,
            'randformer': mmf.RandFormer, 'convformer': mmf.ConvFormer, 'caformer': mmf.CAFormer}
ONE_PER_FAMILY = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
                  'caformer_s18']
# The branches every fast path can take: each tensor's own device (CPU here), the GPU branches forced on CPU
# tensors, and the plain PyTorch math with the fast paths off.
BRANCHES = {'cpu': dict(enabled=True), 'gpu': dict(enabled=True, device='cuda'), 'plain': dict(enabled=False)}
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
    with fast_paths.fast_paths(**BRANCHES[branch]):
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


@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('scale_value', [0.8, 0.0])  # a zero scale takes the backward that does not divide by it
def test_fused_linear_star_relu_values_and_gradients_in_double(with_bias, scale_value):
    from mmmetaformer.models.layers.fast_paths import _LinearStarReLUFunction
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    weight = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    bias = torch.randn(6, dtype=torch.double, requires_grad=True) if with_bias else None
    scale = torch.tensor([scale_value], dtype=torch.double, requires_grad=True)
    act_bias = torch.tensor([-0.3], dtype=torch.double, requires_grad=True)
    out = _LinearStarReLUFunction.apply(x, weight, bias, scale, act_bias)
    expected = scale * torch.relu(torch.nn.functional.linear(x, weight, bias)) ** 2 + act_bias
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(_LinearStarReLUFunction.apply, (x, weight, bias, scale, act_bias))


def test_linear_act_fuses_star_relu_only_in_float32_cpu_training():
    from mmmetaformer.models.layers import ChannelLinear, StarReLU, linear_act
    fc, act = ChannelLinear(16, 64), StarReLU(0.9, -0.2)
    x = torch.randn(2, 5, 5, 16, requires_grad=True)
    fused = linear_act(x, fc, act)
    assert type(fused.grad_fn).__name__ == '_LinearStarReLUFunctionBackward'
    fused_grads = torch.autograd.grad(fused.square().sum(), [x] + list(fc.parameters()) + list(act.parameters()))
    plain = act(fc(x))
    assert type(plain.grad_fn).__name__ == '_StarReLUFunctionBackward'
    plain_grads = torch.autograd.grad(plain.square().sum(), [x] + list(fc.parameters()) + list(act.parameters()))
    torch.testing.assert_close(fused, plain)
    for got, expected in zip(fused_grads, plain_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert type(linear_act(x, fc, act).grad_fn).__name__ != '_LinearStarReLUFunctionBackward'
    with torch.no_grad():
        torch.testing.assert_close(linear_act(x, fc, act), plain)


def test_linear_act_leaves_hooked_modules_to_their_own_forward():
    from mmmetaformer.models.layers import ChannelLinear, StarReLU, linear_act
    fc, act = ChannelLinear(16, 64), StarReLU()
    x = torch.randn(1, 3, 3, 16, requires_grad=True)
    for hooked in (fc, act):  # e.g. a Grad-CAM target layer
        seen = []
        handle = hooked.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        out = linear_act(x, fc, act)
        handle.remove()
        assert seen and type(out.grad_fn).__name__ == '_StarReLUFunctionBackward'


@pytest.mark.parametrize('kernel_size,with_bias', [(7, False), (3, True), (1, True)])
def test_depthwise_conv_weight_gradient_per_sample_equals_the_convolution_gradient(kernel_size, with_bias):
    from mmmetaformer.models.layers import DepthwiseConv2d
    from mmmetaformer.models.layers.fast_paths import _DepthwiseConvFunction
    padding = kernel_size // 2
    conv = DepthwiseConv2d(16, kernel_size, padding, bias=with_bias)
    plain = torch.nn.Conv2d(16, 16, kernel_size, padding=padding, groups=16, bias=with_bias)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(3, 9, 11, 16).permute(0, 3, 1, 2).requires_grad_()  # channels-last, as SepConv feeds it
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


def test_depthwise_conv_leaves_autocast_and_inference_to_nn_conv2d():
    from mmmetaformer.models.layers import DepthwiseConv2d
    conv = DepthwiseConv2d(8, 7, 3)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert type(conv(x).grad_fn).__name__ == 'ConvolutionBackward0'
    with torch.no_grad():
        assert conv(x).grad_fn is None
    seen = []
    handle = conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert type(conv(x).grad_fn).__name__ == '_DepthwiseConvFunctionBackward' and seen == [(2, 8, 5, 5)]
    handle.remove()
    out = conv(x)
    with pytest.raises(RuntimeError):  # the fast backward is not differentiable again: an error, never a wrong result
        torch.autograd.grad(torch.autograd.grad(out.sum(), x, create_graph=True)[0].sum(), conv.weight)


@pytest.mark.parametrize('branch', ['cpu', 'cuda'])
@pytest.mark.parametrize('grad_dtype,act_dtype', [(torch.float32, torch.bfloat16), (torch.float32, torch.float16),
                                                  (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)])
def test_star_relu_backward_takes_mixed_autocast_dtypes_in_every_branch(branch, grad_dtype, act_dtype):
    """Under CUDA autocast the gradient reaching StarReLU can be float32 while the saved ReLU is bf16/fp16 (the
    crash of the GPU branch); both branches must give the float64 gradients to the precision of the inputs."""
    from mmmetaformer.models.layers.fast_paths import _star_relu_grads
    relu = torch.rand(4, 5, 6, 32).to(act_dtype)
    grad = torch.rand(4, 5, 6, 32).add_(0.1).to(grad_dtype)  # positive: sums without cancellation
    scale = torch.tensor([0.7])
    with fast_paths.fast_paths(device=branch):
        grad_x, grad_scale, grad_bias = _star_relu_grads(grad, relu, scale, (True, True, True))
    relu64, grad64 = relu.double(), grad.double()
    assert grad_x.dtype == act_dtype and grad_scale.dtype == grad_bias.dtype == torch.float32
    precision = torch.finfo(act_dtype).eps
    assert rel_err(grad_x.double(), 2 * 0.7 * grad64 * relu64) < 2 * precision
    assert rel_err(grad_scale.double(), (grad64 * relu64.square()).sum().reshape(1)) < 2 * precision
    assert rel_err(grad_bias.double(), grad64.sum().reshape(1)) < 1e-5


def test_fast_path_switch_turns_every_hand_written_function_off(monkeypatch):
    model = mmf.ConvFormer(arch='s18', out_indices=(0, ))
    x = torch.randn(1, 3, 32, 32)
    functions = []

    def record(module, args, out):
        functions.append(type(out.grad_fn).__name__)
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, mmf.StarReLU)]
    with fast_paths.fast_paths(False):
        assert not fast_paths.fast_paths_enabled()
        model(x)
    assert functions and not any(name.startswith('_') for name in functions)  # plain autograd ops only
    assert fast_paths.fast_paths_enabled()  # restored
    functions.clear()
    model(x)
    assert functions and all(name == '_StarReLUFunctionBackward' for name in functions)
    for handle in handles:
        handle.remove()
    with pytest.raises(ValueError, match='device'):
        with fast_paths.fast_paths(device='tpu'):
            pass


@pytest.mark.parametrize('value,enabled', [('0', False), ('off', False), ('1', True), ('true', True), ('', True)])
def test_fast_path_environment_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(fast_paths.ENV_SWITCH, value)
    assert fast_paths._enabled_by_environment() is enabled
    monkeypatch.setenv(fast_paths.ENV_SWITCH, 'maybe')
    with pytest.raises(ValueError, match=fast_paths.ENV_SWITCH):
        fast_paths._enabled_by_environment()
