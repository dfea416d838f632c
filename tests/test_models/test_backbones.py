import pytest
import torch

import mmmetaformer as mmf
from mmmetaformer.models.utils import to_canonical
from mmmetaformer.registry import MODELS
from official_keys import empty_state_dict, official_checkpoints

FAMILIES = {'poolformer': mmf.PoolFormer, 'poolformerv2': mmf.PoolFormerV2, 'identityformer': mmf.IdentityFormer,
            'randformer': mmf.RandFormer, 'convformer': mmf.ConvFormer, 'caformer': mmf.CAFormer}
OFFICIAL = official_checkpoints()
# Exact backbone sizes (without the classifier norm and head) of the official models.
BACKBONE_PARAMS = {
    'poolformer_s12': 11401152, 'poolformer_s24': 20874944, 'poolformer_s36': 30348736,
    'poolformer_m36': 55401984, 'poolformer_m48': 72702912,
    'identityformer_s12': 11377688, 'identityformer_s24': 20827440, 'identityformer_s36': 30277192,
    'identityformer_m36': 55306632, 'identityformer_m48': 72575520,
    'poolformerv2_s12': 11377688, 'poolformerv2_s24': 20827440, 'poolformerv2_s36': 30277192,
    'poolformerv2_m36': 55306632, 'poolformerv2_m48': 72575520,
    'randformer_s12': 11612986, 'randformer_s24': 21298036, 'randformer_s36': 30983086,
    'randformer_m36': 56012526, 'randformer_m48': 73516712,
    'convformer_s18': 23669704, 'convformer_s36': 36907408, 'convformer_m36': 53411472,
    'convformer_b36': 94439568,
    'caformer_s18': 23236912, 'caformer_s36': 36192358, 'caformer_m36': 52564710, 'caformer_b36': 93310566,
}
VARIANTS = sorted(BACKBONE_PARAMS)
# A PoolFormer of one block per stage, 8 channels wide: quick to build and run.
TINY_ARCH = dict(mmf.PoolFormer.arch_settings['s12'], depths=(1, ) * 4, dims=(8, ) * 4)


def build(name, **kwargs):
    family, arch = name.split('_')
    with torch.device('meta'):
        return FAMILIES[family](arch=arch, **kwargs)


def test_all_28_variants_are_registered():
    assert len(VARIANTS) == 28
    assert sum(len(cls.arch_settings) for cls in FAMILIES.values()) == 28
    for cls in FAMILIES.values():
        assert MODELS.get(cls.__name__) is cls


@pytest.mark.parametrize('name', VARIANTS)
def test_backbone_size_is_official(name):
    model = build(name, norm_outputs=False)
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMS[name]


@pytest.mark.parametrize('name', VARIANTS)
def test_official_layout_maps_exactly_onto_the_backbone(name):
    count, shapes = OFFICIAL[name]
    canonical, unused, layout = to_canonical(empty_state_dict(shapes))
    assert not unused
    assert layout == ('sail_v1' if name.startswith('poolformer_') else 'sail_v2')
    model = build(name, norm_outputs=False)
    ours = {'backbone.' + k: tuple(v.shape) for k, v in model.state_dict().items()}
    backbone = {k: tuple(v.shape) for k, v in canonical.items() if k.startswith('backbone.')}
    assert backbone == ours
    assert sum(v.numel() for v in canonical.values()) == sum(v.numel() for v in empty_state_dict(shapes).values())
    assert abs(sum(v.numel() for v in canonical.values()) - count) < 1000  # header counts are rounded to 1e3


def test_official_detection_backbone_layout_includes_output_norms():
    count, shapes = OFFICIAL['poolformer_s12_feat']
    canonical, unused, _ = to_canonical(empty_state_dict(shapes))
    model = build('poolformer_s12')
    assert {k: tuple(v.shape) for k, v in canonical.items()} == \
        {'backbone.' + k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in canonical.values())
    assert abs(sum(p.numel() for p in model.parameters()) - count) < 1000  # header counts are rounded


@pytest.mark.parametrize('name', ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18',
                                  'identityformer_s12', 'randformer_s12'])
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3), (3, ), (0, 2)])
def test_out_indices_strides_and_any_input_size(name, out_indices):
    family, arch = name.split('_')
    model = FAMILIES[family](arch=arch, out_indices=out_indices).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == len(out_indices)
    for out, index in zip(outs, out_indices):
        stride = 4 * 2**index
        assert out.shape[1] == model.dims[index]
        assert abs(out.shape[2] - 97 / stride) <= 1 and abs(out.shape[3] - 131 / stride) <= 1
        assert out.is_contiguous()
    assert sorted(int(k) for k in model.out_norms) == sorted(out_indices)


def test_output_norms_are_fresh_norms_of_the_block_type():
    model = mmf.CAFormer('s18')
    assert type(model.out_norms['2']) is type(model.stages[2].blocks[0].norm1)
    assert model.out_norms['2'].bias is None
    model = mmf.PoolFormer('s12', out_indices=(1, 2, 3))
    assert set(model.out_norms) == {'1', '2', '3'}
    assert model.out_norms['1'].bias is not None
    assert not hasattr(mmf.PoolFormer('s12', norm_outputs=False), 'out_norms')


def test_every_parameter_gets_a_gradient_for_any_out_indices():
    """What DDP without find_unused_parameters needs (the official RetinaNet needed an env variable)."""
    model = mmf.PoolFormer('s12', out_indices=(1, 2, 3)).train()
    sum(o.mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_frozen_stages_and_train_reapplies_freezing():
    model = mmf.ConvFormer('s18', frozen_stages=2)
    model.train()
    assert not model.stem.training and not model.stages[1].training and model.stages[2].training
    frozen = [model.stem, model.stages[0], model.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    model.eval()
    model.train()
    assert not model.stages[1].training
    none = mmf.ConvFormer('s18', frozen_stages=-1)
    assert all(p.requires_grad for p in none.parameters())
    stem_only = mmf.ConvFormer('s18', frozen_stages=0)
    assert not any(p.requires_grad for p in stem_only.stem.parameters())
    assert all(p.requires_grad for p in stem_only.stages[0].parameters())


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = mmf.CAFormer('s18', out_indices=(2, 3)).train()
    checkpointed = mmf.CAFormer('s18', out_indices=(2, 3), with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96)
    for model in (plain, checkpointed):
        sum(o.square().mean() for o in model(x)).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_drop_path_rises_linearly_to_the_rate():
    model = mmf.PoolFormer('s12', drop_path_rate=0.3)
    rates = [block.drop_path1.drop_prob if hasattr(block.drop_path1, 'drop_prob') else 0.0
             for stage in model.stages for block in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx(torch.linspace(0, 0.3, 12).tolist())


def test_norm_eval_keeps_batch_norms_of_custom_mixers_in_eval():
    @MODELS.register_module(force=True)
    class BNMixer(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(dim)

        def forward(self, x):
            return self.bn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    arch = dict(mmf.PoolFormer.arch_settings['s12'], token_mixers=dict(type='BNMixer'))
    model = mmf.MetaFormer(arch=arch, norm_eval=True).train()
    assert not model.stages[0].blocks[0].token_mixer.bn.training
    assert mmf.MetaFormer(arch=arch).train().stages[0].blocks[0].token_mixer.bn.training


def test_hybrid_stages_from_a_config():
    """The paper's [pool, pool, attention, attention] PoolFormer-S12 hybrid, built from the registry."""
    arch = dict(mmf.PoolFormer.arch_settings['s12'],
                token_mixers=[dict(type='Pooling'), dict(type='Pooling'), dict(type='Attention'),
                              dict(type='Attention')])
    model = MODELS.build(dict(type='MetaFormer', arch=arch, out_indices=(3, )))
    assert isinstance(model.stages[2].blocks[0].token_mixer, mmf.Attention)
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 512, 2, 2)


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='s99'), r"no arch 's99'; valid archs: m36, m48, s12, s24, s36"),
    (dict(arch='s12', out_indices=(0, 4)), r'out_indices must be a non-empty subset of stages 0-3'),
    (dict(arch='s12', out_indices=(-1, )), r'out_indices'),
    (dict(arch='s12', frozen_stages=5), r'frozen_stages'),
    (dict(arch=dict(depths=(1, 1, 1), dims=(8, 8, 8), token_mixers={}, norm_cfg={})), r'4 depths and dims'),
    (dict(arch=12), r'arch must be a name or a dict, got int'),
    (dict(arch=dict(depths=(1, ) * 4, dims=(8, ) * 4, token_mixers={}, drop_rate=0.1)),
     r"arch dict: missing keys \['norm_cfg'\], unknown keys \['drop_rate'\]; allowed keys: \('depths', "),
    (dict(arch=dict(TINY_ARCH, token_mixers=[dict(type='Pooling')] * 3)),
     r'token_mixers needs 4 entries \(one per stage\), got 3'),
    (dict(arch=dict(TINY_ARCH, token_mixers=dict(type='Pooling', pool_size=4))),
     r'Pooling needs an odd pool_size to keep the token grid, got 4'),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmf.PoolFormer(**kwargs)


def test_a_single_out_index_may_be_an_int():
    model = mmf.MetaFormer(TINY_ARCH, out_indices=2)
    assert model.out_indices == (2, ) and list(model.out_norms) == ['2']
    assert [out.shape for out in model(torch.randn(1, 3, 32, 32))] == [(1, 8, 2, 2)]


def test_printed_layers_show_their_settings():
    """``print(model)`` names what each layer was built with: norm size, bias and eps, scale size, pool window,
    drop rate."""
    printed = repr(mmf.MetaFormer(TINY_ARCH, drop_path_rate=0.5).stages[3].blocks[0])
    for layer in ('(norm1): ModifiedLayerNorm(8, bias=True, eps=1e-05)', '(token_mixer): Pooling(pool_size=3)',
                  '(drop_path1): DropPath(drop_prob=0.5)', '(layer_scale1): Scale(8)'):
        assert layer in printed, printed
    printed = repr(mmf.MetaFormer(dict(TINY_ARCH, norm_cfg=dict(type='ChannelLayerNorm', bias=False, eps=1e-6))))
    assert '(norm2): ChannelLayerNorm(8, bias=False, eps=1e-06)' in printed


def test_a_norm_without_its_normalization_is_an_error():
    """The float32-statistics norm base leaves the normalization to each norm type."""
    from mmmetaformer.models.layers.blocks import _FP32Norm

    class Unfinished(_FP32Norm):
        pass

    with pytest.raises(NotImplementedError):
        Unfinished(8)(torch.randn(1, 2, 2, 8))


def test_bad_inputs_are_named():
    model = mmf.PoolFormer('s12')
    with pytest.raises(ValueError, match=r'3 input channels.*1 channels'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r'4-D .*\(3, 64, 64\)'):
        model(torch.randn(3, 64, 64))


def test_registry_scope_and_mm_config_type():
    from mmengine.registry import MODELS as ROOT
    assert MODELS.scope == 'mmmetaformer' and MODELS.parent is ROOT
    model = ROOT.build(dict(type='mmmetaformer.CAFormer', arch='s18', out_indices=(3, )))
    assert isinstance(model, mmf.CAFormer)


def test_star_relu_values_and_gradients():
    from mmmetaformer.models.layers import StarReLU
    from mmmetaformer.models.layers.fast_paths import _StarReLUFunction
    act = StarReLU(scale_value=0.8, bias_value=-0.3).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(act(x), 0.8 * torch.relu(x) ** 2 - 0.3)
    scale = torch.tensor([0.8], dtype=torch.double, requires_grad=True)
    bias = torch.tensor([-0.3], dtype=torch.double, requires_grad=True)
    for host_scalar in (True, False):  # the CPU and GPU kernels
        assert torch.autograd.gradcheck(lambda *args: _StarReLUFunction.apply(*args, host_scalar), (x, scale, bias))
    inplace = StarReLU(0.8, -0.3, inplace=True).double()
    with torch.no_grad():
        y = x.detach().clone()
        out = inplace(y)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, 0.8 * torch.relu(x.detach()) ** 2 - 0.3)


@pytest.mark.parametrize('name', ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18'])
def test_a_model_cast_to_bf16_runs_with_fp32_norm_statistics(name):
    family, arch = name.split('_')
    model = FAMILIES[family](arch=arch, out_indices=(3, )).to(torch.bfloat16).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_star_relu_scalar_gradients_do_not_overflow_in_fp16():
    from mmmetaformer.models.layers.fast_paths import _StarReLUFunction
    x = (torch.rand(64, 64, 64) * 8).half().requires_grad_()
    scale = torch.ones(1, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    (_StarReLUFunction.apply(x, scale, bias, True) * 1024.0).sum().backward()  # a loss-scaled fp16 backward
    assert torch.isfinite(scale.grad).all() and torch.isfinite(bias.grad).all()


def test_no_grad_fast_path_matches_the_autograd_path_also_under_autocast():
    model = mmf.PoolFormerV2('s12', out_indices=(3, )).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast = model(x)[0]
        with torch.enable_grad():
            slow = model(x)[0]
    assert fast.dtype == slow.dtype
    torch.testing.assert_close(fast, slow.detach())


def test_frozen_stages_freeze_their_output_norms():
    model = mmf.PoolFormer('s12', frozen_stages=2).train()
    assert not any(p.requires_grad for i in ('0', '1') for p in model.out_norms[i].parameters())
    assert all(p.requires_grad for i in ('2', '3') for p in model.out_norms[i].parameters())
