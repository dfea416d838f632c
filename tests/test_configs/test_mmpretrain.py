"""Classification: every config builds the official classifier, converted official weights give the official
logits, the configs carry the published recipes, and the tools train and test on tiny generated ImageNet folders."""
import glob
import math
import os.path as osp
import re
import runpy
import sys
from unittest import mock

import pytest
import torch

from conftest import ROOT
from e2e import logged_metric, rel_err, run_tool, run_tool_here, write_config
from official_keys import official_checkpoints
from reference_impl import build_reference

mmpretrain = pytest.importorskip('mmpretrain')
from mmpretrain.engine.optimizers import Lamb  # noqa: E402

from mmmetaformer.utils.complexity import build_model_from_config, count_params_and_macs  # noqa: E402

pytestmark = pytest.mark.e2e  # whole models built from the configs, or the tools run

OFFICIAL = official_checkpoints()
NAMES = [name for name in OFFICIAL if not name.endswith('_feat')]
CONFIGS = NAMES + [f'{name}_384' for name in NAMES if name.startswith(('convformer', 'caformer'))]
SMALLEST = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
            'caformer_s18']
MIM_TOOLS = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools')

# sail-sg/poolformer README and sail-sg/metaformer scripts/*/train_*.sh, finetune_*_384.sh.
DROP_PATH = {
    'poolformer_s12': 0.1, 'poolformer_s24': 0.1, 'poolformer_s36': 0.2, 'poolformer_m36': 0.3,
    'poolformer_m48': 0.4,
    **{f'{family}_{arch}': rate for family in ('identityformer', 'poolformerv2')
       for arch, rate in (('s12', 0.1), ('s24', 0.1), ('s36', 0.2), ('m36', 0.3), ('m48', 0.4))},
    'randformer_s12': 0.1, 'randformer_s24': 0.1, 'randformer_s36': 0.2, 'randformer_m36': 0.3,
    'randformer_m48': 0.3,
    'convformer_s18': 0.2, 'convformer_s36': 0.3, 'convformer_m36': 0.4, 'convformer_b36': 0.6,
    'caformer_s18': 0.15, 'caformer_s36': 0.3, 'caformer_m36': 0.4, 'caformer_b36': 0.6,
}
HEAD_DROPOUT = {'caformer_s36': 0.4, 'caformer_m36': 0.4, 'caformer_b36': 0.5}  # 0 elsewhere
FINETUNE_384 = {  # (drop path, head dropout)
    'convformer_s18': (0.3, 0.4), 'convformer_s36': (0.5, 0.4), 'convformer_m36': (0.8, 0.5),
    'convformer_b36': (0.8, 0.5), 'caformer_s18': (0.3, 0.4), 'caformer_s36': (0.5, 0.4),
    'caformer_m36': (0.7, 0.4), 'caformer_b36': (0.8, 0.5),
}
RESIZE = {'poolformer_s12': 248, 'poolformer_s24': 248, 'poolformer_s36': 248,  # 224 / crop_pct 0.9
          'poolformer_m36': 235, 'poolformer_m48': 235}  # 0.95; crop_pct 1.0 (224) elsewhere

TINY = """
data_root = '{root}'
model = dict(backbone=dict(init_cfg=None))
train_dataloader = dict(batch_size=3, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=3, num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""


def config(name: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, 'configs', 'mmpretrain', f'{name}_in1k.py'))


@pytest.fixture(scope='module')
def converted(module_tmp_factory):
    """name -> (reference model, its official-layout checkpoint, that file converted by the conversion tool)."""
    folder = module_tmp_factory.mktemp('checkpoints')
    cache = {}

    def get(name):
        if name not in cache:
            reference = build_reference(name)
            official, ours = str(folder / f'{name}.pth'), str(folder / f'{name}_mm.pth')
            torch.save(reference.state_dict(), official)
            with mock.patch.object(sys, 'argv', ['convert_checkpoint.py', official, ours]):
                runpy.run_path(osp.join(ROOT, 'tools', 'convert_checkpoint.py'), run_name='__main__')
            cache[name] = reference, official, ours
        return cache[name]
    return get


@pytest.fixture(scope='module')
def imagenet(module_tmp_factory):
    from mmmetaformer.testing import make_imagenet_folders
    return make_imagenet_folders(str(module_tmp_factory.mktemp('imagenet')), splits=(('train', 2), ('val', 2)))


def test_one_config_per_published_model():
    found = sorted(osp.basename(p)[:-len('_in1k.py')]
                   for p in glob.glob(osp.join(ROOT, 'configs', 'mmpretrain', '*_in1k.py')))
    assert len(NAMES) == 28 and len(CONFIGS) == 36
    assert found == sorted(CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_the_official_classifier(name):
    from mmmetaformer.models.utils import to_canonical
    _, shapes = OFFICIAL[name.replace('_384', '')]
    with torch.device('meta'):
        model = build_classifier(name)
        canonical, unused, _ = to_canonical({k: torch.empty(s) for k, s in shapes.items()})
    assert not unused
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in canonical.items()}
    assert sum(p.numel() for p in model.parameters()) == sum(math.prod(s) for s in shapes.values())


def build_classifier(name: str, device: str = 'cpu') -> torch.nn.Module:
    """The classifier of configs/mmpretrain/<name>_in1k.py, in eval mode, without its pretrained weights; mmpretrain
    becomes the default scope (as in its tools), so that its optimizers are found too."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    return build_model_from_config(config(name), device)


def test_flops_tool_counts_attention():
    params, macs = count_params_and_macs(config('caformer_s18'), 224)
    assert params == 26341656
    assert round(macs / 1e9, 1) == 4.1  # the published MACs; 3.9 without the attention matrix products


@pytest.mark.slow
@pytest.mark.parametrize('name', SMALLEST)
def test_converted_official_checkpoint_gives_the_official_logits(name, converted):
    reference, _, path = converted(name)
    model = build_classifier(name)
    model.load_state_dict(torch.load(path, map_location='cpu')['state_dict'], strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        assert logits.shape == (2, 1000)
        assert rel_err(logits, reference(x)) < 1e-4


@pytest.mark.parametrize('name', ['convformer_s18', 'caformer_s18'])
def test_finetuning_at_384_starts_from_the_whole_official_224_model(name, converted):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    reference, official, _ = converted(name)
    cfg = config(f'{name}_384')
    cfg.model.backbone.init_cfg.checkpoint = official
    cfg.model.head.init_cfg.checkpoint = official
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(model.eval()(x, mode='tensor'), reference(x)) < 1e-4


def test_offline_head_weights_name_the_head_setting(converted):
    """The 384 fine-tunes load the head from the official URL too; offline, the error names the head's setting."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    _, official, _ = converted('caformer_s18')
    cfg = config('caformer_s18_384')
    cfg.model.backbone.init_cfg.checkpoint = official
    cfg.model.head.init_cfg.checkpoint = 'http://127.0.0.1:9/caformer_s18.pth'  # nothing listens on port 9
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    with pytest.raises(RuntimeError, match=r'--cfg-options model\.head\.init_cfg\.checkpoint=/path/to/caformer_s18'):
        model.init_weights()


@pytest.mark.parametrize('name', NAMES)
def test_training_recipe_is_the_published_one(name):
    cfg = config(name)
    family = name.split('_')[0]
    optimizer = cfg.optim_wrapper.optimizer
    if family == 'caformer':
        assert (optimizer.type, optimizer.lr) == ('Lamb', 8e-3)
    else:
        assert (optimizer.type, optimizer.lr, optimizer.betas, optimizer.eps) == ('AdamW', 4e-3, (0.9, 0.999), 1e-8)
    assert optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)
    assert cfg.auto_scale_lr.base_batch_size == 4096
    assert cfg.train_cfg.max_epochs == 300
    warmup_epochs = 20 if family in ('convformer', 'caformer') else 5
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end, warmup.by_epoch) == ('LinearLR', 0, warmup_epochs, True)
    assert warmup.start_factor * optimizer.lr == pytest.approx(1e-6)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == ('CosineAnnealingLR', warmup_epochs, 300, 1e-5)

    head = cfg.model.head
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
    assert cfg.model.backbone.drop_path_rate == DROP_PATH[name]
    assert head.get('head_dropout', 0.0) == HEAD_DROPOUT.get(name, 0.0)
    assert head.mlp_head == (family in ('convformer', 'caformer'))
    assert head.norm_before_pool == (family == 'poolformer')
    assert 'init_cfg' not in cfg.model.backbone  # trained from scratch

    train = {step.type: step for step in cfg.train_dataloader.dataset.pipeline}
    assert (train['RandomResizedCrop'].scale, train['RandomResizedCrop'].interpolation) == (224, 'bicubic')
    assert train['RandomFlip'].prob == 0.5
    augment = train['RandAugment']
    assert (augment.policies, augment.num_policies, augment.magnitude_level, augment.magnitude_std) == \
        ('timm_increasing', 2, 9, 0.5)
    assert (train['RandomErasing'].erase_prob, train['RandomErasing'].mode) == (0.25, 'rand')
    test = [dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=RESIZE.get(name, 224), edge='short', backend='pillow',
                 interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=224),
            dict(type='PackInputs')]
    assert cfg.val_dataloader.dataset.pipeline == test
    assert cfg.test_dataloader.dataset.pipeline == test


@pytest.mark.parametrize('name', FINETUNE_384)
def test_finetuning_recipe_at_384_is_the_published_one(name):
    cfg = config(f'{name}_384')
    optimizer = cfg.optim_wrapper.optimizer
    expected = ('Lamb', 1e-4) if name.startswith('caformer') else ('AdamW', 5e-5)
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == expected + (0.05, )
    assert cfg.auto_scale_lr.base_batch_size == 1024 and cfg.train_cfg.max_epochs == 30
    assert [s.type for s in cfg.param_scheduler] == ['ConstantLR']
    assert not cfg.model.train_cfg.get('augments')  # no mixup or cutmix
    assert cfg.custom_hooks == [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
    assert (cfg.model.backbone.drop_path_rate, cfg.model.head.head_dropout) == FINETUNE_384[name]
    url = f"https://huggingface.co/sail/dl/resolve/main/{name.split('_')[0]}/{name}.pth"
    assert cfg.model.backbone.init_cfg == cfg.model.head.init_cfg == dict(type='Pretrained', checkpoint=url)
    train = {step.type: step for step in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResizedCrop'].scale == 384
    test = {step.type: step for step in cfg.test_dataloader.dataset.pipeline}
    assert (test['ResizeEdge'].scale, test['CenterCrop'].crop_size) == (384, 384)  # crop_pct 1.0


@pytest.mark.parametrize('name, optimizer_type, scales', [
    ('poolformer_s12', torch.optim.AdamW, ['layer_scale1.scale', 'layer_scale2.scale']),
    ('caformer_s18', Lamb, ['res_scale1.scale', 'res_scale2.scale', 'act.scale', 'act.bias']),  # + StarReLU
])
def test_weight_decay_only_on_multidimensional_weights(name, optimizer_type, scales):
    from mmengine.optim import build_optim_wrapper
    cfg = config(name)
    model = build_classifier(name, 'meta')
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    assert type(optimizer) is optimizer_type
    assert optimizer.defaults['lr'] == cfg.optim_wrapper.optimizer.lr
    decay = {id(p): group['weight_decay'] for group in optimizer.param_groups for p in group['params']}
    params = dict(model.named_parameters())
    assert set(decay) == {id(p) for p in params.values()}
    for key, param in params.items():
        assert decay[id(param)] == (0.0 if param.dim() == 1 else 0.05), key
    no_decay = {key for key, param in params.items() if decay[id(param)] == 0.0}
    for suffix in scales + ['norm1.weight', 'head.norm.weight', 'head.norm.bias', 'stem.conv.bias']:
        assert any(key.endswith(suffix) for key in no_decay), suffix
    decayed = {key for key, param in params.items() if decay[id(param)] == 0.05}
    assert {'backbone.stem.conv.weight', 'backbone.stages.0.blocks.0.mlp.fc1.weight'} <= decayed


@pytest.mark.parametrize('name', ['poolformer_s12', 'caformer_s18'])
def test_train_then_test_with_the_tools(name, imagenet, tmp_path):
    cfg = write_config(tmp_path / f'{name}.py', f'mmpretrain/{name}_in1k.py', TINY.format(root=imagenet))
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', cfg, '--work-dir', str(work)])
    losses = [float(x) for x in re.findall(r'\bloss: ([-\d.e+naif]+)', result.stdout + result.stderr)]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)  # 6 images, batch 3
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.exists()
    assert 0.0 <= logged_metric(run_tool(['tools/test.py', cfg, str(checkpoint), '--work-dir', str(work)]),
                                'accuracy/top1') <= 100.0


def test_converted_checkpoint_through_the_test_tool(converted, imagenet, tmp_path):
    _, _, path = converted('poolformer_s12')
    result = run_tool(['tools/test.py', 'configs/mmpretrain/poolformer_s12_in1k.py', path, '--work-dir',
                       str(tmp_path), '--cfg-options', f'test_dataloader.dataset.data_root={imagenet}',
                       'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False'])
    assert 0.0 <= logged_metric(result, 'accuracy/top1') <= 100.0


@pytest.mark.skipif(not osp.isfile(osp.join(MIM_TOOLS, 'train.py')), reason='mmpretrain ships no tools')
def test_mmpretrain_own_tools(imagenet, tmp_path):
    cfg = write_config(tmp_path / 'poolformer.py', 'mmpretrain/poolformer_s12_in1k.py', TINY.format(root=imagenet))
    work = tmp_path / 'work'
    run_tool([osp.join(MIM_TOOLS, 'train.py'), cfg, '--work-dir', str(work)])
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.exists()
    result = run_tool([osp.join(MIM_TOOLS, 'test.py'), cfg, str(checkpoint), '--work-dir', str(work)])
    assert 0.0 <= logged_metric(result, 'accuracy/top1') <= 100.0


def test_the_test_tool_refuses_a_folder_given_as_checkpoint(imagenet, tmp_path):
    printed = run_tool_here(['tools/test.py', 'configs/mmpretrain/poolformer_s12_in1k.py', str(tmp_path),
                             '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                             f'test_dataloader.dataset.data_root={imagenet}'], status=1)
    assert f'error: cannot read checkpoint {tmp_path}: it is a folder' in printed
