"""ONNX export of classifiers and segmentors: the graph in onnxruntime agrees with the PyTorch model's own predict
path (data preprocessor + predict) on random weights, at two input sizes for dynamic exports; the preprocessing,
the exportable adaptive pooling and the comparison logic against their references; the command line tool."""
import os.path as osp

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from e2e import load_cfg, run_tool, run_tool_here, write_config

pytest.importorskip('onnxruntime')

SMALL = (64, 64)
UPERNET = """
model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=dict(init_cfg=None),
    neck=None,
    decode_head=dict(_delete_=True, type='UPerHead', in_channels=[64, 128, 320, 512], in_index=[0, 1, 2, 3],
                     pool_scales=(1, 2, 3, 6), channels=128, dropout_ratio=0.1, num_classes=150,
                     norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=320, in_index=2, channels=64, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=150, norm_cfg=dict(type='SyncBN', requires_grad=True),
                        align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
"""


def export_and_verify(cfg, tmp_path, shape, dynamic, second=None):
    """Export the config's model (random weights) at ``shape``, check it in onnxruntime on ``shape`` and, for
    dynamic exports, on ``second`` (H, W) with a batch of 2. Returns the wrapper and the file."""
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import build_model, example_input, export_onnx
    from mmmetaformer.export.verify import verify_onnx
    model = build_model(cfg)
    wrapper = build_export_model(model, cfg)
    path = str(tmp_path / 'model.onnx')
    export_onnx(wrapper, path, shape, dynamic)
    inputs = [example_input(shape)] + ([example_input(second, 2, seed=1)] if dynamic else [])
    for x in inputs:
        report = verify_onnx(model, cfg, path, x)
        assert report.ok, f'{tuple(x.shape)}:\n{report}'
    return wrapper, path


@pytest.mark.parametrize('library', ['mmdet', 'mmseg-size-divisor', 'mmseg-size', 'mmseg-no-test-cfg', 'mmpretrain'])
def test_graph_preprocessor_equals_the_libraries_test_time_preprocessing(library):
    from mmmetaformer.export import GraphPreprocessor
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
    if library == 'mmdet':
        from mmdet.models.data_preprocessors import DetDataPreprocessor
        reference = DetDataPreprocessor(**norm, bgr_to_rgb=True, pad_size_divisor=32, pad_value=7)
    elif library == 'mmpretrain':
        from mmpretrain.models.utils import ClsDataPreprocessor
        reference = ClsDataPreprocessor(**norm, to_rgb=True, pad_size_divisor=16, pad_value=3)
    else:
        from mmseg.models.data_preprocessor import SegDataPreProcessor
        test_cfg = {'mmseg-size-divisor': dict(size_divisor=32), 'mmseg-size': dict(size=(80, 96)),
                    'mmseg-no-test-cfg': None}[library]
        # training-time size and divisor must not be used at test time
        reference = SegDataPreProcessor(**norm, bgr_to_rgb=True, size=(512, 512), pad_val=5, test_cfg=test_cfg)
    graph = GraphPreprocessor.from_data_preprocessor(reference)
    images = torch.randint(0, 256, (2, 3, 50, 70)).float()
    samples = None
    if library.startswith('mmseg'):
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(), SegDataSample()]
    expected = reference(dict(inputs=list(images), data_samples=samples), False)['inputs']
    assert torch.equal(graph(images), expected)


def test_replacements_equal_the_originals_and_export_at_any_size(tmp_path):
    """Adaptive average pooling (UPerHead) and mmseg's Upsample (Semantic FPN) against the originals, in eager
    mode and as a dynamic graph in onnxruntime; the originals are back after the export."""
    from mmseg.models.utils import Upsample

    from mmmetaformer.export.replacements import MatrixAdaptiveAvgPool2d, TracedSizeUpsample, exportable_modules
    from mmmetaformer.export.verify import onnx_outputs
    for size in [(16, 16), (13, 17), (2, 2), (5, 3)]:
        x = torch.randn(2, 4, *size)
        for out in [1, 2, 3, 6, (2, None)]:
            torch.testing.assert_close(MatrixAdaptiveAvgPool2d(out)(x), nn.AdaptiveAvgPool2d(out)(x))
        for scale, mode in [(2, 'bilinear'), (1.5, 'nearest')]:
            original = Upsample(scale_factor=scale, mode=mode, align_corners=False if mode == 'bilinear' else None)
            replacement = TracedSizeUpsample(None, original.scale_factor, mode, original.align_corners)
            torch.testing.assert_close(replacement(x), original(x), rtol=0, atol=0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(6),
                          Upsample(scale_factor=2, mode='bilinear', align_corners=False))
    with exportable_modules(model):
        assert isinstance(model[1], MatrixAdaptiveAvgPool2d) and isinstance(model[2], TracedSizeUpsample)
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16), ), str(tmp_path / 'pool.onnx'), dynamo=False,
                          input_names=['input'], dynamic_axes={'input': {0: 'n', 2: 'h', 3: 'w'}})
    assert type(model[1]) is nn.AdaptiveAvgPool2d and type(model[2]) is Upsample  # put back
    for size in [(16, 16), (13, 7)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected = model(x)
        got = next(iter(onnx_outputs(str(tmp_path / 'pool.onnx'), x).values()))
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.e2e
def test_caformer_classifier_dynamic(tmp_path):
    """Attention at two token-grid sizes and batch sizes in one graph; probabilities to 1e-4."""
    cfg = load_cfg('mmpretrain/caformer_s18_in1k.py')
    wrapper, path = export_and_verify(cfg, tmp_path, SMALL, dynamic=True, second=(96, 32))
    assert wrapper.output_names == ('scores', )


@pytest.mark.e2e
def test_poolformer_classifier_at_the_configs_size(tmp_path):
    """PoolFormer v1 (GroupNorm head before pooling) at the 224 of its test pipeline, the default size."""
    from mmmetaformer.export.exporter import default_input_shape
    cfg = load_cfg('mmpretrain/poolformer_s12_in1k.py')
    assert default_input_shape(cfg) == (224, 224)
    assert default_input_shape(load_cfg('mmpretrain/caformer_s18_384_in1k.py')) == (384, 384)
    export_and_verify(cfg, tmp_path, (224, 224), dynamic=False)


@pytest.mark.e2e
def test_randformer_refuses_dynamic_and_exports_at_a_fixed_size(tmp_path):
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import ExportError, build_model, export_onnx
    cfg = load_cfg('mmpretrain/randformer_s12_in1k.py')
    wrapper = build_export_model(build_model(cfg), cfg)
    with pytest.raises(ExportError, match='--dynamic: RandFormer resamples .* Export at a fixed size'):
        export_onnx(wrapper, str(tmp_path / 'refused.onnx'), SMALL, dynamic=True, config='randformer_s12_in1k.py')
    assert not (tmp_path / 'refused.onnx').exists()
    export_and_verify(cfg, tmp_path, SMALL, dynamic=False)  # 4x4 and 2x2 grids, resampled matrices


@pytest.mark.slow
@pytest.mark.e2e
def test_semantic_fpn_dynamic(tmp_path):
    cfg = load_cfg('mmseg/fpn_poolformer_s12_40k_ade20k.py', {'model.backbone.init_cfg': None})
    wrapper, _ = export_and_verify(cfg, tmp_path, SMALL, dynamic=True, second=(96, 64))
    assert wrapper.output_names == ('seg_logits', )


@pytest.mark.slow
@pytest.mark.e2e
def test_upernet_with_pyramid_pooling_and_test_padding_dynamic(tmp_path):
    """UPerHead's adaptive pooling to 1, 2, 3, 6 from 2x2 and 3x2 maps; inputs padded to 32 in the graph (the
    preprocessor's test_cfg) and the logits cropped back to the input size."""
    path = write_config(tmp_path / 'upernet.py', 'mmseg/fpn_poolformer_s12_40k_ade20k.py', UPERNET)
    wrapper, _ = export_and_verify(load_cfg(path), tmp_path, (56, 64), dynamic=True, second=(80, 48))
    assert wrapper.preprocess.pads


@pytest.mark.slow
@pytest.mark.e2e
def test_sliding_window_segmentor_at_a_fixed_size(tmp_path):
    """test_cfg.mode='slide': two overlapping 64x64 windows over 64x96, averaged as mmseg does; --dynamic is
    refused (the windows are placed for one size)."""
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import ExportError, build_model, export_onnx
    cfg = load_cfg('mmseg/fpn_poolformer_s12_40k_ade20k.py', {
        'model.backbone.init_cfg': None, 'model.test_cfg': dict(mode='slide', crop_size=(64, 64), stride=(32, 32))})
    with pytest.raises(ExportError, match='--dynamic: sliding-window inference'):
        export_onnx(build_export_model(build_model(cfg), cfg), str(tmp_path / 'refused.onnx'), SMALL, dynamic=True)
    export_and_verify(cfg, tmp_path, (64, 96), dynamic=False)


def test_export_failure_names_the_module_and_the_config(tmp_path):
    from mmmetaformer.export import ExportModule
    from mmmetaformer.export.exporter import ExportError, export_onnx

    class Unexportable(nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x.flatten(2)[..., :3]).real

    class Wrapper(ExportModule):
        output_names = ('out', )

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 3, 1)
            self.odd = Unexportable()

        def forward(self, input):
            return (self.odd(self.stem(input)), )

    with pytest.raises(ExportError, match=r'cannot export my_config\.py in module odd \(Unexportable\)'):
        export_onnx(Wrapper(), str(tmp_path / 'x.onnx'), (8, 8), config='my_config.py')


def test_comparison_catches_differences():
    from mmmetaformer.export.verify import compare_outputs
    scores = torch.softmax(torch.randn(2, 10), 1)
    assert compare_outputs('mmpretrain', dict(scores=scores), dict(scores=scores.numpy() + 5e-5)).ok
    assert not compare_outputs('mmpretrain', dict(scores=scores), dict(scores=scores.numpy() + 2e-4)).ok
    assert not compare_outputs('mmseg', dict(seg_logits=scores), dict(scores=scores.numpy())).ok
    assert not compare_outputs('mmseg', dict(seg_logits=scores[:, None]), dict(seg_logits=scores.numpy())).ok

    boxes = torch.tensor([[[0., 0., 10., 10., .9], [5., 5., 20., 20., .8], [1., 1., 4., 4., .8]]])
    labels = torch.tensor([[0, 1, 2]])
    masks = torch.zeros(1, 3, 32, 32, dtype=torch.bool)
    masks[0, 0, :10, :10] = masks[0, 1, 5:20, 5:20] = masks[0, 2, 1:4, 1:4] = True
    expected = dict(dets=boxes, labels=labels, masks=masks)
    # near-equal scores in the other order, padding rows (label -1), masks as 0/1 floats
    order = [0, 2, 1]
    shifted = boxes[:, order] + torch.tensor([4e-3] * 4 + [4e-4])
    actual = dict(dets=torch.cat([shifted, torch.zeros(1, 1, 5)], 1).numpy(),
                  labels=torch.cat([labels[:, order], torch.tensor([[-1]])], 1).numpy(),
                  masks=torch.cat([masks[:, order], torch.zeros(1, 1, 32, 32, dtype=torch.bool)], 1).float().numpy())
    assert compare_outputs('mmdet', expected, actual).ok
    for change in ['box', 'score', 'label', 'count', 'mask']:
        wrong = {key: value.copy() for key, value in actual.items()}
        if change == 'box':
            wrong['dets'][0, 1, 2] += 0.05
        elif change == 'score':
            wrong['dets'][0, 0, 4] -= 0.01
        elif change == 'label':
            wrong['labels'][0, 2] = 0
        elif change == 'count':
            wrong['labels'][0, 3] = 1
        else:
            wrong['masks'][0, 0, 0, :] = 1
        assert not compare_outputs('mmdet', expected, wrong).ok, change


@pytest.mark.e2e
def test_export_onnx_tool_with_verify(tmp_path):
    """The command line: a Semantic FPN checkpoint, dynamic export, checked on an image through the config's test
    pipeline; a RandFormer --dynamic export is refused with the reason."""
    from PIL import Image

    from mmmetaformer.export.exporter import build_model
    cfg_path = write_config(tmp_path / 'fpn.py', 'mmseg/fpn_poolformer_s12_40k_ade20k.py', """
model = dict(backbone=dict(init_cfg=None))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 64), keep_ratio=True),
                 dict(type='ResizeToMultiple', size_divisor=32), dict(type='LoadAnnotations', reduce_zero_label=True),
                 dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
""")
    checkpoint = str(tmp_path / 'fpn.pth')
    torch.save(dict(state_dict=build_model(load_cfg(cfg_path)).state_dict()), checkpoint)
    image = str(tmp_path / 'image.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)).save(image)
    out = str(tmp_path / 'fpn.onnx')
    result = run_tool(['tools/export_onnx.py', cfg_path, checkpoint, '--out', out, '--shape', '64', '96',
                       '--dynamic', '--verify', '--image', image])
    assert 'wrote' in result.stdout and 'seg_logits, max abs diff' in result.stdout, result.stdout
    assert f'{image} through the test pipeline (64x128)' in result.stdout  # 90x150 -> 64x107 -> 64x128 (32 | W)
    assert result.stdout.count('agrees within tolerance') == 1 and osp.getsize(out) > 1e6
    assert 'Warning' not in result.stdout + result.stderr, result.stdout + result.stderr



@pytest.mark.e2e
def test_export_onnx_tool_classifier_at_the_pipelines_size_with_options(tmp_path):
    """No --shape: the size the test pipeline fixes (here changed by --cfg-options); --opset; a fixed-size graph;
    --verify on a random image on onnxruntime's CPU provider."""
    import onnx

    from mmmetaformer.export.exporter import build_model
    config = osp.join(ROOT, 'configs', 'mmpretrain', 'convformer_s18_in1k.py')
    options = ['test_dataloader.dataset.pipeline.1.scale=72', 'test_dataloader.dataset.pipeline.2.crop_size=64']
    checkpoint = str(tmp_path / 'convformer.pth')
    torch.save(dict(state_dict=build_model(load_cfg(config)).state_dict()), checkpoint)
    out = str(tmp_path / 'convformer.onnx')
    printed = run_tool_here(['tools/export_onnx.py', config, checkpoint, '--out', out, '--opset', '18',
                             '--cfg-options', *options, '--verify', '--provider', 'cpu'])
    assert f'wrote {out}: input 64x64 (fixed size), outputs scores' in printed
    assert 'onnxruntime (CPUExecutionProvider) vs PyTorch on a random 64x64 image' in printed, printed
    assert printed.count('agrees within tolerance') == 1
    graph = onnx.load(out)
    assert [entry.version for entry in graph.opset_import if entry.domain in ('', 'ai.onnx')] == [18]
    assert [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]


def test_export_onnx_tool_refuses_options_that_need_verify(tmp_path):
    config = osp.join(ROOT, 'configs', 'mmpretrain', 'poolformer_s12_in1k.py')
    image = tmp_path / 'image.jpg'
    image.write_bytes(b'')
    common = [config, 'unused.pth', '--out', str(tmp_path / 'x.onnx')]
    for options, message in ((['--image', str(image)], '--image is the input of --verify; add --verify'),
                             (['--verify', '--image', str(tmp_path / 'absent.jpg')],
                              f'image {tmp_path / "absent.jpg"} does not exist'),
                             (['--provider', 'cuda'],
                              '--provider is the onnxruntime provider of --verify; add --verify')):
        assert run_tool_here(['tools/export_onnx.py', *common, *options], status=1) == f'error: {message}\n'
    assert not (tmp_path / 'x.onnx').exists()
