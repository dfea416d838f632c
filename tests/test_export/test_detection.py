"""Detector export to ONNX: the export-friendly ops against the mm originals (in PyTorch and in onnxruntime), and
RetinaNet / Mask R-CNN graphs in onnxruntime against mmdet's ``predict(rescale=False)`` at two input sizes."""
import os.path as osp

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from e2e import TINY_POOLFORMER_ARCH

pytest.importorskip('mmdet')
ort = pytest.importorskip('onnxruntime')

from mmmetaformer.export.ops import batched_nms, multi_level_roi_align, paste_masks, roi_align  # noqa: E402


def run_onnx(module: nn.Module, inputs: dict, path: str, dynamic_axes: dict, output_names: list,
             runs: list) -> list:
    """Export ``module`` (positional inputs named by ``inputs``' keys) and run the file on each input dict."""
    torch.onnx.export(module, tuple(inputs.values()), path, dynamo=False, opset_version=17,
                      input_names=list(inputs), output_names=output_names, dynamic_axes=dynamic_axes)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return [session.run(output_names, {k: v.numpy() for k, v in feed.items()}) for feed in runs]


def random_boxes(generator: torch.Generator, num: int, size: float, min_side: float = 1.0) -> torch.Tensor:
    """Boxes [x1, y1, x2, y2] inside (0, size), in clusters so that many overlap."""
    centres = torch.rand(num // 4 + 1, 2, generator=generator)[torch.randint(0, num // 4 + 1, (num,),
                                                                               generator=generator)] * size
    centres = centres + torch.randn(num, 2, generator=generator) * size / 40
    sides = torch.rand(num, 2, generator=generator) * size / 3 + min_side
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=1).clamp(0, size)


class NMSModule(nn.Module):
    def forward(self, boxes, scores, idxs, valid):
        return batched_nms(boxes, scores, idxs, valid, 0.5)


def test_batched_nms_matches_mmcv(tmp_path):
    from mmcv.ops import batched_nms as mmcv_batched_nms
    generator = torch.Generator().manual_seed(0)

    def batch(num):
        boxes = torch.stack([random_boxes(generator, num, 100.0) for _ in range(2)])
        scores = torch.rand(2, num, generator=generator)
        idxs = torch.randint(0, 3, (2, num), generator=generator)
        return dict(boxes=boxes, scores=scores, idxs=idxs, valid=torch.rand(2, num, generator=generator) > 0.3)

    def expected(feed):
        keeps = []
        for b in range(2):
            candidates = feed['valid'][b].nonzero().squeeze(1)
            _, keep = mmcv_batched_nms(feed['boxes'][b, candidates], feed['scores'][b, candidates],
                                       feed['idxs'][b, candidates], dict(type='nms', iou_threshold=0.5))
            keeps.append(candidates[keep])
        return keeps

    feeds = [batch(200), batch(57)]
    axes = {name: {1: 'boxes'} for name in ('boxes', 'scores', 'idxs', 'valid')}
    onnx_results = run_onnx(NMSModule(), feeds[0], str(tmp_path / 'nms.onnx'), axes, ['images', 'index'], feeds)
    for feed, (onnx_images, onnx_index) in zip(feeds, onnx_results):
        torch_images, torch_index = NMSModule()(**feed)
        for b, keep in enumerate(expected(feed)):
            assert 5 < len(keep) < feed['valid'][b].sum()  # some boxes suppressed, some kept
            assert torch.equal(torch_index[torch_images == b], keep)
            assert np.array_equal(onnx_index[onnx_images == b], keep.numpy())


class RoIModule(nn.Module):
    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, f0, f1, f2, f3, rois, images):
        return multi_level_roi_align(self.extractor, (f0, f1, f2, f3), rois, images)


@pytest.mark.parametrize('output_size', [7, 14])
def test_multi_level_roi_align_matches_single_roi_extractor(tmp_path, output_size):
    """mmdet's SingleRoIExtractor with mmcv's RoIAlign(sampling_ratio=0, aligned=True): RoIs of all scales (each
    FPN level used), partly outside the image, tiny ones (below one feature cell: adaptive sampling)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    extractor = MODELS.build(dict(type='SingleRoIExtractor', out_channels=8, featmap_strides=[4, 8, 16, 32],
                                  roi_layer=dict(type='RoIAlign', output_size=output_size, sampling_ratio=0)))
    generator = torch.Generator().manual_seed(1)

    def feed(height, width, num):
        feats = {f'f{i}': torch.randn(2, 8, height // s, width // s, generator=generator)
                 for i, s in enumerate((4, 8, 16, 32))}
        rois = random_boxes(generator, num, float(max(height, width)), min_side=0.3)
        # partly outside, below one feature cell, and large enough for levels 1, 2 and 3 (finest_scale 56)
        rois[:5] = torch.tensor([[-10.0, -5.0, 40.0, 30.0], [3.2, 4.1, 3.9, 4.4], [20.0, 30.0, 150.5, 160.0],
                                 [5.0, 5.0, 250.0, 230.0], [-50.0, -40.0, 480.0, 470.0]])
        return dict(feats, rois=rois, images=torch.randint(0, 2, (num,), generator=generator))

    feeds = [feed(128, 160, 60), feed(96, 224, 31)]
    axes = dict({f'f{i}': {2: f'h{i}', 3: f'w{i}'} for i in range(4)}, rois={0: 'n'}, images={0: 'n'})
    onnx_results = run_onnx(RoIModule(extractor), feeds[0], str(tmp_path / 'roi.onnx'), axes, ['pooled'], feeds)
    for inputs, (onnx_pooled,) in zip(feeds, onnx_results):
        feats = [inputs[f'f{i}'] for i in range(4)]
        indexed = torch.cat([inputs['images'][:, None].float(), inputs['rois']], dim=1)
        expected = extractor(feats, indexed)
        levels = extractor.map_roi_levels(indexed, 4)
        assert set(levels.tolist()) == {0, 1, 2, 3}
        torch.testing.assert_close(RoIModule(extractor)(**inputs), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(onnx_pooled), expected, rtol=0, atol=1e-5)


class PasteModule(nn.Module):
    def forward(self, masks, boxes, canvas):
        return paste_masks(masks, boxes, canvas.shape[0], canvas.shape[1])


def test_paste_masks_matches_do_paste_mask(tmp_path):
    """mmdet's CPU path pastes mask by mask with skip_empty=True (a crop around the box, the rest empty); the
    separable paste on the whole canvas gives the same probabilities inside the crop and < 0.5 outside."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    generator = torch.Generator().manual_seed(2)
    height, width = 70, 90
    masks = torch.rand(12, 28, 28, generator=generator)
    boxes = random_boxes(generator, 12, 90.0)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)  # as predicted boxes: clipped to the image
    # a box of a fractional size, one ending on the border, a zero-width one (mmdet's inf -> 0 case)
    boxes[:3] = torch.tensor([[0.0, 0.3, 20.5, 17.2], [30.0, 40.0, 90.0, 70.0], [10.0, 10.0, 10.0, 30.0]])
    feed = dict(masks=masks, boxes=boxes, canvas=torch.zeros(height, width))
    (onnx_pasted,), = run_onnx(PasteModule(), feed, str(tmp_path / 'paste.onnx'), {'canvas': {0: 'h', 1: 'w'}},
                               ['pasted'], [feed])
    pasted = PasteModule()(**feed)
    for k in range(len(masks)):
        crop, (rows, cols) = _do_paste_mask(masks[k:k + 1, None], boxes[k:k + 1], height, width, skip_empty=True)
        expected = torch.zeros(height, width)
        expected[rows, cols] = crop[0]
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[rows, cols] = True
        for actual in (pasted[k], torch.from_numpy(onnx_pasted[k])):
            torch.testing.assert_close(actual[inside], expected[inside], rtol=0, atol=1e-5)
            assert (actual[~inside] == 0).all()
            assert torch.equal(actual >= 0.5, expected >= 0.5)


def build_detector(config: str, options: dict):
    """A config's detector with random weights (no init_cfg download) and test-time settings from ``options``."""
    from mmengine.config import Config

    from mmmetaformer.export.exporter import build_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmdet', config))
    cfg.merge_from_dict(dict(options, **{'model.backbone.init_cfg': None}))
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def check_export(cfg, model, tmp_path, min_count: int) -> None:
    """Export with --dynamic at 160x192; onnxruntime on 1 image at that size and on 2 images of 190x150 must agree
    with mmdet's predict(rescale=False), with detections in every image and different counts in the batch of 2."""
    from mmmetaformer.export.detection import build_detection_exporter
    from mmmetaformer.export.exporter import example_input, export_onnx
    from mmmetaformer.export.verify import compare_outputs, onnx_outputs, torch_outputs
    path = str(tmp_path / 'detector.onnx')
    export_onnx(build_detection_exporter(model), path, (160, 192), dynamic=True)
    pair = example_input((190, 150), 2, seed=1)
    pair[1] *= 0.2  # a dark image: another number of detections
    for input in (example_input((160, 192)), pair):
        expected, actual = torch_outputs(model, cfg, input), onnx_outputs(path, input)
        report = compare_outputs('mmdet', expected, actual)
        assert report.ok, str(report)
        counts = (expected['labels'] >= 0).sum(dim=1)
        assert counts.min() >= min_count
        assert actual['dets'].shape == (len(input), counts.max(), 5)
        if len(input) == 2:
            assert counts[0] != counts[1]  # one image's rows are padding
            assert (actual['labels'][counts.argmin(), counts.min():] == -1).all()


@pytest.mark.slow
@pytest.mark.e2e
def test_retinanet_onnx_matches_predict(tmp_path):
    # the config's own nms_pre (1000 per level) and NMS; random weights score high: a higher threshold, and more
    # detections kept than 100 so that the cut at max_per_img and different counts in a batch both happen
    cfg, model = build_detector('retinanet_poolformer_s12_1x.py',
                                {'model.test_cfg.max_per_img': 500, 'model.test_cfg.score_thr': 0.99})
    check_export(cfg, model, tmp_path, min_count=50)


@pytest.mark.slow
@pytest.mark.e2e
def test_mask_rcnn_onnx_matches_predict(tmp_path):
    # lighter heads than the config's and 300 instead of 1000 proposals. Larger classifier weights spread the scores
    # (random ones give every class about 1/81, below score_thr); a higher score_thr (no score within 1e-3 of it)
    # and max_per_img leave 130 to 200 detections per image. Mask logits saturated like a trained model's: random
    # ones hover around the 0.5 threshold, and a last-bit difference between backends flips a pixel of a 3-pixel
    # mask (IoU 0.67)
    cfg, model = build_detector('mask_rcnn_poolformer_s12_1x.py', {
        'model.roi_head.bbox_head.fc_out_channels': 256, 'model.roi_head.mask_head.conv_out_channels': 64,
        'model.test_cfg.rpn.max_per_img': 300, 'model.test_cfg.rcnn.score_thr': 0.55,
        'model.test_cfg.rcnn.max_per_img': 200})
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight.mul_(10.0)
        model.roi_head.bbox_head.fc_cls.bias.normal_(0, 2.0)
        model.roi_head.mask_head.conv_logits.weight.mul_(1000.0)
    check_export(cfg, model, tmp_path, min_count=50)


def test_unsupported_detectors_are_refused():
    from mmmetaformer.export.detection import build_detection_exporter

    class FCOS(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match='got FCOS'):
        build_detection_exporter(FCOS())
    _, model = build_detector('retinanet_poolformer_s12_1x.py',
                              {'model.test_cfg.nms': dict(type='soft_nms', iou_threshold=0.5)})
    with pytest.raises(NotImplementedError, match='soft_nms'):
        build_detection_exporter(model)
    _, model = build_detector('retinanet_poolformer_s12_1x.py',
                              {'model.bbox_head.bbox_coder': dict(type='TBLRBBoxCoder', _delete_=True)})
    with pytest.raises(NotImplementedError, match='TBLRBBoxCoder'):
        build_detection_exporter(model)


# The configs' detectors at a fraction of their size (one block per backbone stage, 16-channel FPN and heads, three
# classes): for the wrappers' checks of the model and their detections in PyTorch, where the size does not matter.
TINY_RETINANET = {'model.backbone.arch': TINY_POOLFORMER_ARCH, 'model.neck.in_channels': [16, 24, 32],
                  'model.neck.out_channels': 16, 'model.bbox_head.in_channels': 16,
                  'model.bbox_head.feat_channels': 16, 'model.bbox_head.num_classes': 3}
TINY_MASK_RCNN = {
    'model.backbone.arch': TINY_POOLFORMER_ARCH, 'model.neck.in_channels': [8, 16, 24, 32],
    'model.neck.out_channels': 16, 'model.rpn_head.in_channels': 16, 'model.rpn_head.feat_channels': 16,
    'model.roi_head.bbox_roi_extractor.out_channels': 16, 'model.roi_head.bbox_head.in_channels': 16,
    'model.roi_head.bbox_head.fc_out_channels': 32, 'model.roi_head.bbox_head.num_classes': 3,
    'model.roi_head.mask_roi_extractor.out_channels': 16, 'model.roi_head.mask_head.in_channels': 16,
    'model.roi_head.mask_head.conv_out_channels': 8, 'model.roi_head.mask_head.num_convs': 1,
    'model.roi_head.mask_head.num_classes': 3, 'model.test_cfg.rpn.max_per_img': 100}


def test_two_stage_with_class_agnostic_boxes_and_every_proposal_candidate_matches_predict():
    """One box per RoI for all classes (reg_class_agnostic), every anchor a proposal candidate (rpn nms_pre -1) and
    no minimum proposal size (min_bbox_size -1): the wrapper in PyTorch gives mmdet's predict(rescale=False)."""
    from mmmetaformer.export.detection import build_detection_exporter
    from mmmetaformer.export.exporter import example_input
    from mmmetaformer.export.verify import compare_outputs, torch_outputs
    cfg, model = build_detector('mask_rcnn_poolformer_s12_1x.py', dict(TINY_MASK_RCNN, **{
        'model.roi_head.mask_roi_extractor': None, 'model.roi_head.mask_head': None,
        'model.roi_head.bbox_head.reg_class_agnostic': True, 'model.test_cfg.rpn.nms_pre': -1,
        'model.test_cfg.rpn.min_bbox_size': -1}))
    assert model.roi_head.bbox_head.fc_reg.out_features == 4
    # spread the scores and keep the boxes near their anchors: the tiny random model otherwise gives many empty
    # boxes of one score, which either side may keep in any order
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight.mul_(10.0)
        model.roi_head.bbox_head.fc_cls.bias.normal_(0, 2.0)
        model.rpn_head.rpn_reg.weight.mul_(0.01)
        model.roi_head.bbox_head.fc_reg.weight.mul_(0.01)
    wrapper = build_detection_exporter(model)
    x = example_input((64, 96))
    with torch.no_grad():
        dets, labels = wrapper(x)
    expected = torch_outputs(model, cfg, x)
    count = int((expected['labels'] >= 0).sum())
    assert count >= 20 and expected['dets'][0, :count, 4].unique().numel() == count
    report = compare_outputs('mmdet', expected, dict(dets=dets.numpy(), labels=labels.numpy()))
    assert report.ok, str(report)


@pytest.mark.parametrize('config, options, message', [
    ('retinanet', {'model.bbox_head.loss_cls': dict(_delete_=True, type='CrossEntropyLoss', use_sigmoid=False)},
     'ONNX export of RetinaNet needs an anchor head with sigmoid scores; got RetinaHead'),
    ('mask_rcnn', {'model.rpn_head.loss_cls.use_sigmoid': False},
     'supports an RPN head with sigmoid scores and a StandardRoIHead; got RPNHead and StandardRoIHead'),
    ('mask_rcnn', {'model.roi_head.type': 'PISARoIHead'}, 'got RPNHead and PISARoIHead'),
    ('mask_rcnn', {'model.roi_head.shared_head': dict(type='ResLayer', depth=18, stage=1)},
     'ONNX export of MaskRCNN: RoI heads with a shared head are not supported'),
    ('mask_rcnn', {'model.roi_head.bbox_roi_extractor.type': 'GenericRoIExtractor'},
     'ONNX export of MaskRCNN supports SingleRoIExtractor only; got GenericRoIExtractor'),
    ('mask_rcnn', {'model.roi_head.mask_roi_extractor.roi_layer.aligned': False},
     r"RoIAlign\(pool_mode='avg', aligned=True\) only; got RoIAlign\(pool_mode='avg', aligned=False\)"),
    ('mask_rcnn', {'model.roi_head.bbox_head.loss_cls': dict(_delete_=True, type='SeesawLoss', num_classes=3)},
     'ONNX export of MaskRCNN: bbox heads with custom class channels are not supported'),
    ('mask_rcnn', {'model.test_cfg.rcnn.mask_thr_binary': -1},
     'ONNX export of MaskRCNN gives binary masks: mask_thr_binary must be >= 0'),
], ids=['softmax-retinanet', 'softmax-rpn', 'other-roi-head', 'shared-head', 'other-extractor', 'unaligned-roi',
        'custom-class-channels', 'soft-masks'])
def test_detectors_outside_the_exported_form_are_refused(config, options, message):
    from mmmetaformer.export.detection import build_detection_exporter
    tiny = TINY_RETINANET if config == 'retinanet' else TINY_MASK_RCNN
    _, model = build_detector(f'{config}_poolformer_s12_1x.py', dict(tiny, **options))
    with pytest.raises(NotImplementedError, match=message):
        build_detection_exporter(model)


def test_detector_base_wrapper_leaves_the_detection_to_its_subclasses():
    from mmmetaformer.export.detection import DetectorExport
    _, model = build_detector('retinanet_poolformer_s12_1x.py', TINY_RETINANET)
    with pytest.raises(NotImplementedError):
        DetectorExport(model).eval()(torch.zeros(1, 3, 32, 32))


def test_roi_align_below_opset_16_is_refused_with_the_opset_to_use(tmp_path):
    """ONNX RoiAlign has the sampling grid of mmcv's aligned RoIAlign (half_pixel) from opset 16 on."""
    from mmmetaformer.export import ExportModule
    from mmmetaformer.export.exporter import ExportError, export_onnx

    class Pooled(ExportModule):
        output_names = ('pooled', )

        def forward(self, input):
            rois = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
            return (roi_align(input, rois, torch.zeros(1, dtype=torch.long), (2, 2), 1.0, 0), )

    with pytest.raises(ExportError, match=r'ONNX RoiAlign with the semantics of mmcv needs opset >= 16; got opset '
                                          r'15 \(use --opset 16 or higher\)'):
        export_onnx(Pooled(), str(tmp_path / 'roi.onnx'), (8, 8), opset=15)
