"""ONNX export of classifiers and segmentors: the graph in onnxruntime agrees with the PyTorch model's own predict
path (data preprocessor + predict) on random weights, at two input sizes for dynamic exports; the preprocessing,
the exportable adaptive pooling and the comparison logic against their references; the command line tool."""
import os.path as osp
import re

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from e2e import TINY_POOLFORMER_ARCH, load_cfg, run_tool, run_tool_here, write_config

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


def test_the_operator_search_sees_aten_operators_inside_torch_functions():
    """``native_layer_norm`` runs inside ``F.layer_norm``: only the dispatch mode (a private torch module) sees it,
    with the name the exporter's errors give."""
    from mmmetaformer.export.exporter import _module_running_op

    class Normed(nn.Module):
        def forward(self, x):
            return nn.functional.layer_norm(x, x.shape[-1:])

    wrapper, x = wrapper_around(Normed()), torch.randn(1, 3, 4, 4)
    assert _module_running_op(wrapper, x, 'native_layer_norm') == 'odd (Normed)'
    assert _module_running_op(wrapper, x, 'layer_norm') == 'odd (Normed)'
    assert _module_running_op(wrapper, x, 'convolution') == 'stem (Conv2d)'
    assert _module_running_op(wrapper, x, 'no_such_operator') is None


def wrapper_around(inner: nn.Module):
    """An :class:`ExportModule` of a 1x1 convolution (``stem``) followed by ``inner`` (``odd``), output ``out``."""
    from mmmetaformer.export import ExportModule

    class Wrapper(ExportModule):
        output_names = ('out', )

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 3, 1)
            self.odd = inner

        def forward(self, input):
            return (self.odd(self.stem(input)), )

    return Wrapper()


class RaisesInPyTorch(nn.Module):
    """Fails in eager PyTorch too, with ``message``: the exporter's search for the module running a named operator
    fails as well, and the module is found in the traceback instead."""

    def __init__(self, error: Exception):
        super().__init__()
        self.error = error

    def forward(self, x):
        raise self.error


@pytest.mark.parametrize('error', [
    ValueError('no operator named here'),
    NotImplementedError("The operator 'aten::fancy_op' is not currently implemented for this device")],
    ids=['python-error', 'operator-error'])
def test_export_failure_in_pytorch_names_the_module_from_the_traceback(tmp_path, error):
    from mmmetaformer.export.exporter import ExportError, export_onnx
    message = rf'cannot export my_config\.py in module odd \(RaisesInPyTorch\): {type(error).__name__}: '
    with pytest.raises(ExportError, match=message + re.escape(str(error))):
        export_onnx(wrapper_around(RaisesInPyTorch(error)), str(tmp_path / 'x.onnx'), (8, 8),
                    config='my_config.py')
    assert not (tmp_path / 'x.onnx').exists()


def test_export_into_a_missing_folder_is_refused_before_tracing(tmp_path):
    from mmmetaformer.export.exporter import ExportError, export_onnx
    folder = tmp_path / 'absent'
    with pytest.raises(ExportError, match=f'the output folder {re.escape(str(folder))} does not exist'):
        export_onnx(wrapper_around(RaisesInPyTorch(AssertionError('traced'))), str(folder / 'x.onnx'), (8, 8))
    assert not folder.exists()


def test_export_module_base_has_no_graph_of_its_own():
    from mmmetaformer.export import ExportModule
    with pytest.raises(NotImplementedError):
        ExportModule()(torch.zeros(1, 3, 8, 8))
    assert ExportModule().dynamic_axes(True) == {'input': {0: 'batch', 2: 'height', 3: 'width'}}


def test_wrappers_refuse_models_of_another_library():
    from mmmetaformer.export.base import ExportError
    from mmmetaformer.export.classification import ClassifierExport
    from mmmetaformer.export.segmentation import SegmentorExport
    with pytest.raises(ExportError, match='can export mmpretrain ImageClassifier models, not Conv2d'):
        ClassifierExport(nn.Conv2d(3, 3, 1))
    with pytest.raises(ExportError, match='can export mmseg EncoderDecoder models, not Conv2d'):
        SegmentorExport(nn.Conv2d(3, 3, 1))


def tiny_classifier(head: dict):
    """The PoolFormer-S12 classifier config with a one-block-per-stage backbone, pooled features and ``head``;
    the config and the model (random weights, seed 0)."""
    from mmmetaformer.export.exporter import build_model
    cfg = load_cfg('mmpretrain/poolformer_s12_in1k.py', {
        'model.backbone.arch': TINY_POOLFORMER_ARCH, 'model.neck': dict(_delete_=True, type='GlobalAveragePooling'),
        'model.head': dict(_delete_=True, **head), 'model.train_cfg': None})
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_multi_label_classifier_exports_sigmoid_probabilities():
    """A MultiLabelClsHead's predict gives sigmoid probabilities (not a softmax): so does the graph."""
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.exporter import example_input
    from mmmetaformer.export.verify import compare_outputs, torch_outputs
    cfg, model = tiny_classifier(dict(type='MultiLabelLinearClsHead', num_classes=5, in_channels=32))
    wrapper = build_export_model(model, cfg)
    x = example_input((32, 32), batch_size=2)
    with torch.no_grad():
        scores, = wrapper(x)
        logits = model(model.data_preprocessor(dict(inputs=list(x)), False)['inputs'])
    torch.testing.assert_close(scores, torch.sigmoid(logits))
    assert not torch.allclose(scores.sum(1), torch.ones(2))
    assert compare_outputs('mmpretrain', torch_outputs(model, cfg, x), dict(scores=scores.numpy())).ok


def test_classifier_heads_without_known_predictions_are_refused():
    from mmmetaformer.export import build_export_model
    from mmmetaformer.export.base import ExportError
    cfg, model = tiny_classifier(dict(type='MultiTaskHead', task_heads=dict(
        color=dict(type='LinearClsHead', num_classes=3, in_channels=32))))
    with pytest.raises(ExportError, match='cannot export the classifier head MultiTaskHead: its predictions are known '
                                          r'for subclasses of ClsHead \(softmax\) and MultiLabelClsHead'):
        build_export_model(model, cfg)


def test_graph_preprocessor_of_the_base_preprocessor_only_converts_to_float():
    """mmengine's BaseDataPreprocessor only moves data (no normalisation, flip or padding); other modules are not
    known preprocessors; mean without std is refused; the settings show in the module's repr."""
    from mmengine.model import BaseDataPreprocessor

    from mmmetaformer.export import GraphPreprocessor
    from mmmetaformer.export.base import ExportError
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    graph = GraphPreprocessor.from_data_preprocessor(BaseDataPreprocessor())
    assert not graph.normalize and not graph.flip_channels and not graph.pads
    assert torch.equal(graph(images), BaseDataPreprocessor()(dict(inputs=images.float()))['inputs'])
    assert graph(images).dtype == torch.float32
    with pytest.raises(ExportError, match='cannot export the data preprocessor Identity: known are'):
        GraphPreprocessor.from_data_preprocessor(nn.Identity())
    with pytest.raises(ValueError, match='needs both mean and std, or neither'):
        GraphPreprocessor(mean=[0.0, 0.0, 0.0])
    assert repr(GraphPreprocessor([1.0] * 3, [2.0] * 3, True, 32, None, 0.5)) == (
        'GraphPreprocessor(normalize=True, flip_channels=True, pad_size_divisor=32, pad_size=None, pad_value=0.5)')


def test_export_sizes_from_the_test_pipeline():
    """The pipeline of the test (else val) dataloader, else the top-level ``test_pipeline``; a resize without
    keeping the ratio fixes the size, a later ratio-keeping resize frees it again; without a fixed size,
    segmentors and detectors have a default and classifiers need --shape."""
    from mmengine.config import Config

    from mmmetaformer.export.exporter import ExportError, config_test_pipeline, default_input_shape, fixed_input_shape
    resize = dict(type='Resize', scale=(96, 64), keep_ratio=False)  # mm sizes are (w, h)
    cfg = Config(dict(default_scope='mmseg', test_pipeline=[dict(type='LoadImageFromFile'), resize]))
    assert config_test_pipeline(cfg) == [dict(type='LoadImageFromFile'), resize]
    assert fixed_input_shape(cfg) == default_input_shape(cfg) == (64, 96)
    assert config_test_pipeline(Config(dict(default_scope='mmseg'))) == []
    for scope, default in (('mmseg', (512, 512)), ('mmdet', (800, 1344))):
        cfg = Config(dict(default_scope=scope, val_dataloader=dict(dataset=dict(pipeline=[
            resize, dict(type='mmseg.Resize', scale=(128, 128), keep_ratio=True)]))))
        assert fixed_input_shape(cfg) is None and default_input_shape(cfg) == default
    with pytest.raises(ExportError, match='the test pipeline of this mmpretrain config does not fix the image size: '
                                          'give --shape H W'):
        default_input_shape(Config(dict(default_scope='mmpretrain', test_pipeline=[dict(type='ResizeEdge',
                                                                                            scale=64)])))


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
        elif change == 'label':  # of the top detection (at the cut, another label of near-equal score may be kept)
            wrong['labels'][0, 0] = 2
        elif change == 'count':
            wrong['labels'][0, 3] = 1
        else:
            wrong['masks'][0, 0, 0, :] = 1
        assert not compare_outputs('mmdet', expected, wrong).ok, change


def test_comparison_accepts_another_detection_at_the_cut_of_the_kept_list():
    from mmmetaformer.export.verify import compare_outputs
    boxes = torch.tensor([[[0., 0., 10., 10., .9], [5., 5., 20., 20., .3]]])
    expected = dict(dets=boxes, labels=torch.tensor([[0, 1]]))
    swapped = boxes.clone()
    swapped[0, 1] = torch.tensor([30., 30., 40., 40., .3004])  # onnxruntime kept another box at the cut
    report = compare_outputs('mmdet', expected, dict(dets=swapped.numpy(), labels=np.array([[0, 2]])))
    assert report.ok and len(report.notes) == 1 and 'at the cut of the kept list' in report.notes[0]
    not_at_the_cut = [[[30., 30., 40., 40., .9], [5., 5., 20., 20., .3]], [2, 1]]
    above_the_other_cut = [[[0., 0., 10., 10., .9], [30., 30., 40., 40., .29]], [0, 2]]
    for dets, labels in (not_at_the_cut, above_the_other_cut):
        assert not compare_outputs('mmdet', expected, dict(dets=np.array([dets]), labels=np.array([labels]))).ok


def test_comparison_without_detections_on_either_side_agrees_with_a_note():
    from mmmetaformer.export.verify import compare_outputs
    nothing = dict(dets=torch.zeros(2, 0, 5), labels=torch.zeros(2, 0, dtype=torch.long))
    report = compare_outputs('mmdet', nothing, {key: value.numpy() for key, value in nothing.items()})
    assert report.ok and report.notes == [
        'no detections on either side: only their absence was compared (random weights find nothing above the '
        'score threshold; use a trained checkpoint and --image)']
    assert str(report).endswith('note: no detections on either side: only their absence was compared (random '
                                'weights find nothing above the score threshold; use a trained checkpoint and '
                                '--image)\nagrees within tolerance')


def test_verify_inputs_of_a_dynamic_export_add_a_second_size():
    """32 px taller and 32 px narrower (wider where the width is 64 or less); a batch of 2 where the graph allows."""
    from mmengine.config import Config

    from mmmetaformer.export.verify import second_size, verify_inputs
    cfg = Config(dict(default_scope='mmpretrain'))
    assert second_size((64, 96)) == (96, 64) and second_size((64, 64)) == (96, 96)
    inputs = verify_inputs(cfg, (64, 96), dynamic=True)
    assert [(text, tuple(x.shape)) for text, x in inputs] == [
        ('a random 64x96 image', (1, 3, 64, 96)), ('2 random 96x64 images', (2, 3, 96, 64))]
    inputs = verify_inputs(cfg, (48, 40), dynamic=True, dynamic_batch=False)
    assert [(text, tuple(x.shape)) for text, x in inputs] == [
        ('a random 48x40 image', (1, 3, 48, 40)), ('1 random 80x72 image', (1, 3, 80, 72))]
    assert [text for text, _ in verify_inputs(cfg, (64, 96), dynamic=False)] == ['a random 64x96 image']


def test_verify_image_of_another_size_than_a_fixed_export_is_refused(tmp_path):
    """The test pipeline makes a 90x150 image 224x224 (short side 248, centre crop 224): a graph exported at 64x64
    without --dynamic cannot take it."""
    from PIL import Image

    from mmmetaformer.errors import InvalidSettingError
    from mmmetaformer.export.verify import load_image
    cfg = load_cfg('mmpretrain/poolformer_s12_in1k.py')
    image = str(tmp_path / 'image.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)).save(image)
    assert load_image(cfg, image, (224, 224)).shape == (1, 3, 224, 224)
    with pytest.raises(InvalidSettingError, match=re.escape(
            f'the test pipeline makes {image} (224, 224) (H, W), but the graph was exported at (64, 64) without '
            '--dynamic: export with --shape 224 224 or --dynamic to check it on this image')):
        load_image(cfg, image, (64, 64))


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
