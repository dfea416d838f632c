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
