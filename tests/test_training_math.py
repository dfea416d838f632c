"""The fused training paths (residual/scale Function, StarReLU backward, Linear-in-training channel layers) compute
the official math: loss and every parameter gradient equal the independent reference implementation's."""
import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.checkpoint import to_canonical
from mmmetaformer.models.layers import _ScaledResidualFunction
from reference_impl import build_reference

FAMILIES = {'poolformer': mmf.PoolFormer, 'poolformerv2': mmf.PoolFormerV2, 'identityformer': mmf.IdentityFormer,
            'randformer': mmf.RandFormer, 'convformer': mmf.ConvFormer, 'caformer': mmf.CAFormer}


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def ours_from_reference(name, reference, **kwargs):
    family, arch = name.split('_')
    model = FAMILIES[family](arch=arch, norm_outputs=False, **kwargs)
    canonical, _, _ = to_canonical(reference.state_dict())
    model.load_state_dict({k[len('backbone.'):]: v for k, v in canonical.items() if k.startswith('backbone.')})
    return model.train()


def assert_close_gradients(grads, expected, rtol=1e-4, atol_fraction=1e-6):
    # Some gradients are zero in exact arithmetic (PoolFormer's norm1 bias: pooling minus identity cancels a
    # constant), so the tolerance also has an absolute part, a fraction of the typical gradient.
    typical = torch.stack([g.norm() for g in expected.values()]).median()
    for key, grad in grads.items():
        assert (grad - expected[key]).norm() <= rtol * expected[key].norm() + atol_fraction * typical, key


def stage_loss(outputs):
    # weights differ per stage and element so that a wrong gradient cannot hide in a symmetric sum
    return sum((i + 1) * (o * torch.linspace(-1, 1, o.shape[1])[None, :, None, None]).square().mean()
               for i, o in enumerate(outputs))


@pytest.mark.parametrize('name', ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12',
                                  'convformer_s18', 'caformer_s18'])
def test_loss_and_every_gradient_equal_the_reference(name):
    reference = build_reference(name).train()
    model = ours_from_reference(name, reference)
    size = 224 if name.startswith('randformer') else 64  # the reference RandFormer only runs at 224
    x = torch.randn(1, 3, size, size)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss = stage_loss(model(x_ours))
    ref_loss = stage_loss(reference.stage_outputs(x_ref))
    loss.backward()
    ref_loss.backward()
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    assert rel_err(x_ours.grad, x_ref.grad) < 1e-4
    ref_grads = {k: p.grad for k, p in reference.named_parameters() if p.grad is not None}
    canonical, _, _ = to_canonical(ref_grads)
    expected = {k: v for k, v in canonical.items() if k.startswith('backbone.')}
    ours = {'backbone.' + k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert set(ours) == set(expected)
    assert_close_gradients(ours, expected)


@pytest.mark.parametrize('scales', ['layer', 'res', 'both'])
def test_scaled_residual_gradients_in_double(scales):
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    branch = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    layer = torch.randn(5, dtype=torch.double, requires_grad=True) if scales in ('layer', 'both') else None
    res = torch.randn(5, dtype=torch.double, requires_grad=True) if scales in ('res', 'both') else None
    out = _ScaledResidualFunction.apply(x, branch, layer, res)
    torch.testing.assert_close(out, x * (1 if res is None else res) + branch * (1 if layer is None else layer))
    assert torch.autograd.gradcheck(_ScaledResidualFunction.apply, (x, branch, layer, res))


@pytest.mark.parametrize('name', ['poolformer_s12', 'caformer_s18'])
def test_bf16_autocast_training_gradients_stay_close_to_fp32(name):
    reference = build_reference(name)
    model = ours_from_reference(name, reference)
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled):
            loss = stage_loss([o.float() for o in model(x)])
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert all(grad.dtype == torch.float32 and torch.isfinite(grad).all() for grad in grads[1].values())
    # bf16 rounds every activation: compare the whole gradient (single sums that cancel are ill-conditioned)
    fp32, bf16 = (torch.cat([g.flatten() for g in gs.values()]) for gs in grads)
    assert torch.nn.functional.cosine_similarity(fp32, bf16, dim=0) > 0.99


@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('scale_value', [0.8, 0.0])  # a zero scale takes the backward that does not divide by it
def test_fused_linear_star_relu_values_and_gradients_in_double(with_bias, scale_value):
    from mmmetaformer.models.layers import _LinearStarReLUFunction
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
    from mmmetaformer.models.layers import DepthwiseConv2d, _DepthwiseConvFunction
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
    x64 = torch.randn(2, 16, 6, 7, dtype=torch.double, requires_grad=True)
    weight = torch.randn(16, 1, kernel_size, kernel_size, dtype=torch.double, requires_grad=True)
    bias = torch.randn(16, dtype=torch.double, requires_grad=True) if with_bias else None
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
