"""Mixed-precision training of every family on a GPU, and the GPU's stage outputs against the CPU's."""
import math

import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.models import FAMILIES

ONE_PER_FAMILY = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
                  'caformer_s18']
STEPS = 30
# Stage outputs of a fresh model, relative error of the whole output against CPU float32. fp32: cuDNN convolutions
# run TF32 by default (10 mantissa bits), which bounds the error near 1e-3; autocast rounds every matrix-product
# input to 11 (fp16) or 8 (bf16) mantissa bits, over 12-18 blocks.
STAGE_TOLERANCE = {'fp32': 5e-3, 'fp16': 1e-2, 'bf16': 5e-2}
DTYPES = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def build(name, **kwargs):
    family, arch = name.split('_')
    torch.manual_seed(0)
    return FAMILIES[family](arch=arch, **kwargs)


def train_steps(model, precision, channels_last, batch=8, size=224):
    """``STEPS`` AdamW steps under autocast (fp16 with a dynamic loss scaler); returns the losses and the scaler."""
    model = model.cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler('cuda') if precision == 'fp16' else None
    generator = torch.Generator(device='cuda').manual_seed(0)
    losses = []
    for _ in range(STEPS):
        x = torch.randn(batch, 3, size, size, device='cuda', generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast('cuda', dtype=DTYPES[precision]):
            loss = sum(out.float().square().mean() for out in model(x))
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            assert grads_finite, 'bf16 gradients are not finite'
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        losses.append(loss.item())
    return losses, scaler


@pytest.mark.parametrize('variant', ['plain', 'with_cp', 'channels_last'])
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_every_family_trains_under_autocast(name, precision, variant):
    model = build(name, with_cp=variant == 'with_cp', drop_path_rate=0.1)
    losses, scaler = train_steps(model, precision, channels_last=variant == 'channels_last')
    assert all(math.isfinite(loss) for loss in losses), losses
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert sum(p.grad is not None for p in model.parameters()) > 0
    if scaler is not None:
        # a scale that keeps halving means every step overflowed (and was skipped); it starts at 2**16
        assert scaler.get_scale() >= 2.0**10, scaler.get_scale()


@pytest.mark.parametrize('precision', list(STAGE_TOLERANCE))
@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_stage_outputs_equal_the_cpu_float32_outputs(name, precision):
    model = build(name).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        model.cuda()
        with torch.autocast('cuda', dtype=DTYPES[precision] or torch.float16, enabled=precision != 'fp32'):
            outputs = model(x.cuda())
    for stage, (out, ref) in enumerate(zip(outputs, expected)):
        error = ((out.float().cpu() - ref).norm() / ref.norm()).item()
        assert error < STAGE_TOLERANCE[precision], f'stage {stage}: relative error {error:.2e}'


def test_fp16_scalar_gradients_reach_the_optimizer_unscaled_and_finite():
    """The StarReLU scalars' gradients sum a whole activation: under a 2**16 loss scale they must not overflow."""
    model = build('caformer_s18').cuda().train()
    scaler = torch.amp.GradScaler('cuda', init_scale=2.0**16)
    with torch.autocast('cuda', dtype=torch.float16):
        loss = sum(out.float().mean() for out in model(torch.randn(16, 3, 224, 224, device='cuda')))
    scaler.scale(loss).backward()
    scales = [m.scale.grad for m in model.modules() if isinstance(m, mmf.StarReLU)]
    assert scales and all(torch.isfinite(g).all() for g in scales)


@pytest.mark.parametrize('grad', [False, True], ids=['inference', 'training'])
def test_forms_are_timed_among_the_gpu_forms_under_autocast(grad):
    """Under bf16 autocast a channel Linear has three forms on the GPU: the first call times them on the device
    (synchronised) and keeps one for the key, and the chosen form gives the Linear's result."""
    from mmmetaformer.models.layers import fast_paths
    fast_paths.forget_measured_forms()
    x = torch.randn(8, 28, 28, 128, device='cuda', requires_grad=grad)
    weight = torch.randn(256, 128, device='cuda', requires_grad=grad)
    with fast_paths.use_fast_paths(measure=True), torch.autocast('cuda', dtype=torch.bfloat16), \
            torch.set_grad_enabled(grad):
        out = fast_paths.channel_linear(x, weight, None)
        expected = torch.nn.functional.linear(x, weight)
    (key, form), = fast_paths.measured_forms().items()
    assert key[:2] == ('channel_linear', 'cuda') and key[3] == torch.bfloat16 and key[4] == grad
    assert form in fast_paths.FORMS['channel_linear'] and fast_paths.measuring_seconds() > 0
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
