"""Same weights, same features: official-layout checkpoints from the independent reference implementation, and
timm / mmpretrain / our own layouts, loaded through ``init_cfg``."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

import mmmetaformer as mmf
from conftest import ROOT
from e2e import rel_err, run_tool_here
from reference_impl import build_reference

FAMILIES = {'poolformer': mmf.PoolFormer, 'poolformerv2': mmf.PoolFormerV2, 'identityformer': mmf.IdentityFormer,
            'randformer': mmf.RandFormer, 'convformer': mmf.ConvFormer, 'caformer': mmf.CAFormer}
SMALLEST = ['poolformer_s12', 'poolformerv2_s12', 'identityformer_s12', 'randformer_s12', 'convformer_s18',
            'caformer_s18']


def load_ours(name, checkpoint, **kwargs):
    family, arch = name.split('_')
    model = FAMILIES[family](arch=arch, norm_outputs=False, init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
                             **kwargs)
    model.init_weights()
    return model.eval()


def assert_same_features(model, reference_stages, size):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours, ref = model(x), reference_stages(x)
    assert len(ours) == 4
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-4


@pytest.mark.parametrize('name', SMALLEST)
def test_official_layout_gives_the_reference_stage_outputs(name, tmp_ckpt):
    reference = build_reference(name)
    model = load_ours(name, tmp_ckpt(reference.state_dict()))
    if name.startswith('randformer'):  # the official RandFormer only runs at 224
        assert_same_features(model, reference.stage_outputs, (224, 224))
    else:  # a size divisible by 32, and one that is not
        assert_same_features(model, reference.stage_outputs, (64, 96))
        assert_same_features(model, reference.stage_outputs, (70, 101))


def test_mmpretrain_layout(tmp_ckpt):
    reference = build_reference('poolformer_s12')
    state = {}
    for key, value in reference.state_dict().items():
        if key.startswith('norm.'):
            state['backbone.norm6.' + key[5:]] = value
        elif key.startswith('head.'):
            state['head.fc.' + key[5:]] = value
        else:
            state['backbone.' + key] = value
    model = load_ours('poolformer_s12', tmp_ckpt({'state_dict': state, 'meta': {}}))
    assert_same_features(model, reference.stage_outputs, (64, 96))


@pytest.mark.parametrize('name', ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18'])
def test_timm_layout_gives_timm_stage_outputs(name, tmp_ckpt):
    timm = pytest.importorskip('timm')
    torch.manual_seed(1)
    reference = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for key, param in reference.named_parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))

    def timm_stages(x):
        return reference.forward_intermediates(x, intermediates_only=True)

    model = load_ours(name, tmp_ckpt(reference.state_dict()))
    assert_same_features(model, timm_stages, (64, 96))
    assert_same_features(model, timm_stages, (70, 101))


def test_unknown_layouts_are_named_and_keys_outside_a_known_layout_are_unused():
    from mmmetaformer.models.utils import detect_layout, known_layout, to_canonical
    foreign = {'fc.weight': torch.zeros(2, 4), 'fc.bias': torch.zeros(2)}
    assert known_layout(foreign) is None
    with pytest.raises(ValueError, match=r'unrecognised checkpoint layout \(first keys: fc\.weight, fc\.bias\); '
                                         r'expected a sail-sg PoolFormer v1, .* or mmmetaformer checkpoint'):
        detect_layout(foreign)
    official = {'downsample_layers.0.conv.weight': torch.zeros(64, 3, 7, 7), 'norm.weight': torch.zeros(512),
                'head.weight': torch.zeros(10, 512), 'dist_head.weight': torch.zeros(10, 512)}
    canonical, unused, layout = to_canonical(official)
    assert (layout, unused) == ('sail_v2', ['dist_head.weight'])
    assert list(canonical) == ['backbone.stem.conv.weight', 'head.norm.weight', 'head.fc.weight']


def test_wrong_architecture_names_the_first_mismatching_tensor(tmp_ckpt):
    path = tmp_ckpt(build_reference('poolformer_m36').state_dict())
    with pytest.raises(ValueError, match=r"'stem\.conv\.weight' has shape \(96, 3, 7, 7\) in the checkpoint but "
                                         r'\(64, 3, 7, 7\) in the model'):
        load_ours('poolformer_s12', path)


@pytest.mark.parametrize('source, target, match', [
    ('poolformer_s24', 'poolformer_s12',
     r"'backbone\.stages\.0\.blocks\.2\.|'stages\.0\.blocks\.2\..*absent in the model"),
    ('poolformer_s12', 'poolformer_s24', r"'stages\.0\.blocks\.2\..* absent in the checkpoint but \("),
    ('poolformerv2_s12', 'caformer_s18', r'in the checkpoint but .* in the model'),
])
def test_other_depth_or_family_is_an_error(source, target, match, tmp_ckpt):
    path = tmp_ckpt(build_reference(source).state_dict())
    with pytest.raises(ValueError, match=match):
        load_ours(target, path)


def test_missing_and_unused_keys_are_logged(tmp_ckpt):
    from mmengine.logging import MMLogger
    state = build_reference('caformer_s18').state_dict()
    del state['stages.3.2.mlp.fc2.weight']
    path = tmp_ckpt(state)
    logger = MMLogger.get_instance('mmmetaformer-test', log_level='INFO')
    messages = []
    handler = type('H', (__import__('logging').Handler, ), {'emit': lambda self, r: messages.append(r.getMessage())})()
    logger.addHandler(handler)
    try:
        family, arch = 'caformer', 's18'
        model = FAMILIES[family](arch=arch, out_indices=(1, 2, 3),
                                 init_cfg=dict(type='Pretrained', checkpoint=path, strict=False))
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(messages)
    assert 'stages.3.blocks.2.mlp.fc2.weight' in text
    assert 'out_norms.1.weight' in text
    assert 'head.fc.fc1.weight' in text  # the classifier is not part of the backbone


def test_unreachable_url_says_how_to_use_a_local_file():
    model = mmf.PoolFormer('s12', init_cfg=dict(type='Pretrained',
                                                checkpoint='http://127.0.0.1:9/poolformer_s12.pth.tar'))
    with pytest.raises(RuntimeError, match=r'(?s)http://127\.0\.0\.1:9/poolformer_s12\.pth\.tar.*'
                                           r'model\.backbone\.init_cfg\.checkpoint=/path/to/poolformer_s12\.pth\.tar'):
        model.init_weights()


@pytest.mark.e2e
@pytest.mark.parametrize('name', ['poolformer_s12', 'caformer_s18'])
def test_convert_checkpoint_tool_writes_a_loadable_classifier(name, tmp_ckpt, tmp_path):
    reference = build_reference(name)
    src = tmp_ckpt(reference.state_dict(), 'official.pth')
    dst = tmp_path / 'converted.pth'
    result = subprocess.run([sys.executable, 'tools/convert_checkpoint.py', src, str(dst)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    family, arch = name.split('_')
    assert f'{FAMILIES[family].__name__} {arch}' in result.stdout
    converted = torch.load(dst, map_location='cpu')
    assert all(k.startswith(('backbone.', 'head.')) for k in converted['state_dict'])
    # our own layout loads back and gives the same features
    model = load_ours(name, str(dst))
    assert_same_features(model, reference.stage_outputs, (128, 160))


@pytest.mark.e2e
def test_converter_names_every_family_the_tensors_fit(tmp_ckpt, tmp_path):
    src = tmp_ckpt(build_reference('identityformer_s12').state_dict(), 'identity.pth')
    result = subprocess.run([sys.executable, 'tools/convert_checkpoint.py', src, str(tmp_path / 'out.pth')],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'PoolFormerV2 s12 or IdentityFormer s12' in result.stdout


@pytest.mark.parametrize('kwargs', [dict(norm_outputs=False), dict(out_indices=(1, 2, 3))])
def test_official_detection_backbone_loads_whatever_the_outputs(kwargs, tmp_ckpt):
    """The official dense-prediction checkpoints carry norm0/2/4/6; they are optional, not a mismatch."""
    reference = build_reference('poolformer_s12')
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith(('norm.', 'head.'))}
    for index, dim in zip((0, 2, 4, 6), (64, 128, 320, 512)):
        state[f'norm{index}.weight'] = torch.full((dim, ), 2.0)
        state[f'norm{index}.bias'] = torch.full((dim, ), 0.5)
    model = mmf.PoolFormer('s12', init_cfg=dict(type='Pretrained', checkpoint=tmp_ckpt(state)), **kwargs)
    model.init_weights()
    if model.norm_outputs:
        assert torch.equal(model.out_norms['1'].weight, torch.full((128, ), 2.0))
    torch.testing.assert_close(model.stem.conv.weight, reference.patch_embed.proj.weight)


@pytest.mark.e2e
def test_whole_dense_prediction_models_keep_their_output_norms(tmp_ckpt, tmp_path):
    """Official PoolFormer detectors/segmentors: ``backbone.`` + v1 names with norm0/2/4/6, plus neck and heads."""
    reference = build_reference('poolformer_s12')
    state = {'backbone.' + k: v for k, v in reference.state_dict().items() if not k.startswith(('norm.', 'head.'))}
    for index, dim in zip((0, 2, 4, 6), (64, 128, 320, 512)):
        state[f'backbone.norm{index}.weight'] = torch.full((dim, ), 1.0 + index)
        state[f'backbone.norm{index}.bias'] = torch.zeros(dim)
    state['neck.fpn_convs.0.conv.weight'] = torch.ones(256, 256, 3, 3)
    model = mmf.PoolFormer('s12', init_cfg=dict(type='Pretrained', checkpoint=tmp_ckpt({'state_dict': state})))
    model.init_weights()
    assert torch.equal(model.out_norms['3'].weight, torch.full((512, ), 7.0))  # norm6 is an output norm here
    result = subprocess.run([sys.executable, 'tools/convert_checkpoint.py', tmp_ckpt({'state_dict': state}, 'det.pth'),
                             str(tmp_path / 'det_mm.pth')], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    converted = torch.load(tmp_path / 'det_mm.pth')['state_dict']
    assert 'neck.fpn_convs.0.conv.weight' in converted and 'backbone.out_norms.3.weight' in converted


def test_our_own_checkpoint_with_prefix_keeps_the_output_norms(tmp_ckpt):
    trained = mmf.CAFormer('s18', out_indices=(2, 3))
    with torch.no_grad():
        trained.out_norms['3'].weight.fill_(3.0)
    path = tmp_ckpt({'state_dict': {'backbone.' + k: v for k, v in trained.state_dict().items()}})
    model = mmf.CAFormer('s18', out_indices=(2, 3),
                         init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assert torch.equal(model.out_norms['3'].weight, torch.full((512, ), 3.0))


def test_strict_false_skips_tensors_of_another_shape(tmp_ckpt):
    path = tmp_ckpt(build_reference('poolformer_m36').state_dict())
    model = mmf.PoolFormer('s36', norm_outputs=False,
                           init_cfg=dict(type='Pretrained', checkpoint=path, strict=False))
    model.init_weights()  # the shapes all differ (m36 is wider): nothing loads, nothing fails
    assert model.stem.conv.weight.shape == (64, 3, 7, 7)


def test_a_custom_1x1_dwconv_reloads_its_own_checkpoint(tmp_ckpt):
    arch = dict(mmf.ConvFormer.arch_settings['s18'], token_mixers=dict(type='SepConv', kernel_size=1))
    trained = mmf.MetaFormer(arch=arch, norm_outputs=False)
    path = tmp_ckpt({'state_dict': {'backbone.' + k: v for k, v in trained.state_dict().items()}})
    model = mmf.MetaFormer(arch=arch, norm_outputs=False, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    torch.testing.assert_close(model.stages[0].blocks[0].token_mixer.dwconv.weight,
                               trained.stages[0].blocks[0].token_mixer.dwconv.weight)


@pytest.fixture
def serve_folder():
    """Serve a folder over HTTP on localhost; yields a function folder -> base URL."""
    import functools
    import http.server
    import threading
    servers = []

    def serve(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f'http://127.0.0.1:{server.server_address[1]}'
    yield serve
    for server in servers:
        server.shutdown()


@pytest.mark.e2e
@pytest.mark.parametrize('case', ['official file', 'official url', 'other size', 'offline url', 'not a checkpoint'])
def test_test_tool_refuses_checkpoints_that_do_not_fit_the_model(tmp_ckpt, tmp_path, serve_folder, monkeypatch, case):
    """Loaded by mmengine, these would only warn and the test would measure partly random weights."""
    from mmmetaformer.testing import make_imagenet_folders
    imagenet = make_imagenet_folders(str(tmp_path / 'imagenet'))
    official = tmp_ckpt(build_reference('poolformer_s12').state_dict(), 'poolformer_s12.pth.tar')
    config, expected = 'configs/mmpretrain/poolformer_s12_in1k.py', ['sail_v1 layout', 'tools/convert_checkpoint.py']
    if case == 'official file':
        checkpoint = official
    elif case == 'official url':
        checkpoint = serve_folder(osp.dirname(official)) + '/poolformer_s12.pth.tar'
    elif case == 'other size':
        backbone = mmf.PoolFormer('s12', out_indices=(3, ), norm_outputs=False).state_dict()
        checkpoint = tmp_ckpt({'state_dict': {'backbone.' + k: v for k, v in backbone.items()}}, 's12.pth')
        config = 'configs/mmpretrain/poolformer_s24_in1k.py'
        expected = ['does not fit the model', "'backbone.stages.0.blocks.2.", 'absent in the checkpoint']
    elif case == 'offline url':
        checkpoint = serve_folder(tmp_path / 'nothing-here') + '/poolformer_s12.pth.tar'
        expected = ['could not download the weights from ' + checkpoint, '/path/to/poolformer_s12.pth.tar']
    else:
        checkpoint = str(tmp_path / 'notes.pth')
        open(checkpoint, 'w').write('hello\n')
        expected = [f'error: {checkpoint} is not a torch checkpoint but a text file (it starts with \'hello\')']
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    printed = run_tool_here(['tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'work'),
                             '--cfg-options', f'test_dataloader.dataset.data_root={imagenet}'], status=1)
    for text in expected:
        assert text in printed, printed[-3000:]


def test_named_weights_are_the_official_urls_of_the_family_and_arch():
    from mmmetaformer.models.utils import official_weights_url
    hf = 'https://huggingface.co/sail/dl/resolve/main'
    assert official_weights_url('caformer', 's18', 'in21k') == f'{hf}/caformer/caformer_s18_in21k.pth'
    assert official_weights_url('convformer', 'b36', 'in21ft1k') == f'{hf}/convformer/convformer_b36_in21ft1k.pth'
    assert official_weights_url('caformer', 'm36', 'in21ft1k_384') == f'{hf}/caformer/caformer_m36_384_in21ft1k.pth'
    assert official_weights_url('convformer', 's36', 'in1k_384') == f'{hf}/convformer/convformer_s36_384.pth'
    assert official_weights_url('identityformer', 'm48') == f'{hf}/identityformer/identityformer_m48.pth'
    assert official_weights_url('poolformer', 's24') == \
        'https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_s24.pth.tar'
    with torch.device('meta'):
        backbone = mmf.ConvFormer('s36')
    assert backbone.checkpoint_location('in21k') == f'{hf}/convformer/convformer_s36_in21k.pth'
    assert backbone.checkpoint_location('/data/w.pth') == '/data/w.pth'
    with pytest.raises(ValueError, match="unknown official weights 'in22k'"):
        official_weights_url('caformer', 's18', 'in22k')
    with pytest.raises(ValueError, match="caformer has no arch 's12'"):
        official_weights_url('caformer', 's12', 'in1k')
    with pytest.raises(ValueError, match="no official weights for 'metaformer': named weights exist for the "
                                         "published families poolformer, .*caformer \\(give a checkpoint path"):
        official_weights_url('metaformer', 's12')
    # Unpublished weights fail when the model is built, not when training starts.
    with pytest.raises(ValueError, match=r"poolformerv2_s12 has official ImageNet-1K weights only .*'in21k'"), \
            torch.device('meta'):
        mmf.PoolFormerV2('s12', init_cfg=dict(type='Pretrained', checkpoint='in21k'))
    with pytest.raises(ValueError, match='built from an arch dict'), torch.device('meta'):
        mmf.CAFormer(dict(mmf.CAFormer.arch_settings['s18']), init_cfg=dict(type='Pretrained', checkpoint='in21k'))


@pytest.mark.e2e
@pytest.mark.parametrize('config, weights, classes', [('mmseg/upernet_caformer_s18_160k_ade20k.py', 'in21k', 21841),
                                                      ('mmdet/mask_rcnn_caformer_s18_1x.py', 'in21ft1k', 1000)])
def test_in21k_switch_of_a_config_loads_the_official_file(config, weights, classes, tmp_ckpt, monkeypatch):
    """`--cfg-options model.backbone.init_cfg.checkpoint=in21k` on a config: the backbone reads the official file of
    its family and arch (made here in the official layout, with the in21k head of 21841 classes) through the layout
    detection, and gets the reference's stage outputs."""
    from mmengine.config import Config

    from mmmetaformer.models.utils import weight_loading
    reference = build_reference('caformer_s18', num_classes=classes)
    path = tmp_ckpt(reference.state_dict())
    url = f'https://huggingface.co/sail/dl/resolve/main/caformer/caformer_s18_{weights}.pth'
    read = weight_loading.read_checkpoint
    monkeypatch.setattr(weight_loading, 'read_checkpoint',
                        lambda location, setting=None: read(path) if location == url else pytest.fail(location))
    cfg = Config.fromfile(osp.join(ROOT, 'configs', config))
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': weights, 'model.backbone.norm_outputs': False})
    backbone = mmf.MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    assert_same_features(backbone.eval(), reference.stage_outputs, (64, 96))


@pytest.mark.e2e
def test_convert_checkpoint_tool_on_the_timm_mmpretrain_and_own_layouts(tmp_ckpt, tmp_path):
    """Each layout the tool reads that no test above converts through it: its name in the report, the tensors
    outside the model dropped by name, and a classifier that loads back with the source's features."""
    import timm
    torch.manual_seed(0)
    timm_model = timm.create_model('poolformerv2_s12', pretrained=False).eval()
    reference = build_reference('poolformer_s12')
    mmpretrain_state = {('backbone.norm6.' + key[5:] if key.startswith('norm.') else
                         'head.fc.' + key[5:] if key.startswith('head.') else 'backbone.' + key): value
                        for key, value in reference.state_dict().items()}
    sources = {'timm': (timm_model.state_dict(), 'PoolFormerV2 s12 or IdentityFormer s12', 'poolformerv2_s12',
                        lambda x: timm_model.forward_intermediates(x, intermediates_only=True)),
               'mmpretrain': ({'state_dict': mmpretrain_state}, 'PoolFormer s12', 'poolformer_s12',
                              reference.stage_outputs)}
    for layout, (content, described, name, stages) in sources.items():
        dst = str(tmp_path / f'{layout}.pth')
        printed = run_tool_here(['tools/convert_checkpoint.py', tmp_ckpt(content, f'{layout}_src.pth'), dst])
        assert f'({layout} layout, {described}): wrote' in printed, printed
        assert_same_features(load_ours(name, dst), stages, (64, 96))
        if layout == 'mmpretrain':  # ours, converted again: the same tensors, nothing dropped
            again = str(tmp_path / 'again.pth')
            printed = run_tool_here(['tools/convert_checkpoint.py', dst, again])
            assert '(mmmetaformer layout, PoolFormer s12): wrote' in printed and 'dropped' not in printed, printed
            first, second = (torch.load(path, map_location='cpu')['state_dict'] for path in (dst, again))
            assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # a custom depth matches no published size; a tensor of no model is named and dropped
    custom = mmf.PoolFormer(arch=dict(mmf.PoolFormer.arch_settings['s12'], depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]))
    state = dict(custom.state_dict(), **{'ema.step': torch.tensor(3)})
    printed = run_tool_here(['tools/convert_checkpoint.py', tmp_ckpt(state, 'custom.pth'), str(tmp_path / 'c.pth')])
    assert 'warning: the backbone matches none of the published sizes (a custom arch?)' in printed
    assert 'dropped (not part of the model): ema.step' in printed and 'unknown arch' in printed, printed
