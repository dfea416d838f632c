"""ONNX export wrappers of the mmdet detectors: RetinaNet and two-stage RPN + RoI-head detectors (Mask R-CNN,
Faster R-CNN).

The wrapper's ``forward(input)`` takes what the test pipeline packs (raw float32 (N, 3, H, W)), preprocesses it in
the graph and returns the detections that mmdet's ``predict(..., rescale=False)`` gives, after the config's own
``test_cfg`` (score threshold, ``nms_pre`` per level, NMS, ``max_per_img``):

- ``dets`` (N, K, 5) float32 [x1, y1, x2, y2, score] in input pixels, by descending score;
- ``labels`` (N, K) int64;
- ``masks`` (N, K, H, W) bool at input size (detectors with a mask head).

K is the largest number of detections of an image of the batch; the other images' rows beyond their own count are
padding: zero boxes and scores, label -1, empty masks.

mmdet's post-processing (Python ``min``, per-image loops, boolean filtering, mmcv's NMS and RoIAlign) does not
trace, so the same steps are written here on padded per-image tensors with the ops of
:mod:`mmmetaformer.export.ops`; the network itself (backbone, neck, heads, anchors, box coder, RoI level mapping) is
mmdet's own modules. The graph is written by the TorchScript-based exporter (``dynamo=False``, opset >= 16).
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import BATCH, HEIGHT, WIDTH, ExportModule
from .ops import batched_nms, check_roi_layer, multi_level_roi_align, paste_masks, rank_in_image, topk_padded
from .preprocess import GraphPreprocessor

DETECTIONS = 'detections'  # the K axis of the outputs


def _clip_boxes(boxes: Tensor, img_h: Tensor, img_w: Tensor) -> Tensor:
    """mmdet's clip to the image (``clamp_(min=0, max=W / H)``) with the image size as graph values."""
    bounds = torch.stack([img_w, img_h, img_w, img_h]).to(boxes)
    return torch.minimum(boxes.clamp(min=0), bounds)


def _decode(coder, priors: Tensor, deltas: Tensor, img_h: Tensor, img_w: Tensor) -> Tensor:
    """``coder.decode(priors, deltas, max_shape=img_shape)`` of a ``DeltaXYWHBBoxCoder`` for (..., 4) tensors of any
    leading shape: mmdet's own ``delta2bbox`` (the coder picks another formula while exporting), then the clip."""
    from mmdet.models.task_modules.coders.delta_xywh_bbox_coder import delta2bbox
    boxes = delta2bbox(priors.reshape(-1, 4), deltas.reshape(-1, 4), coder.means, coder.stds, None,
                       add_ctr_clamp=coder.add_ctr_clamp, ctr_clamp=coder.ctr_clamp).reshape(deltas.shape)
    return _clip_boxes(boxes, img_h, img_w) if coder.clip_border else boxes


def _check_coder(head: nn.Module, model_name: str) -> None:
    coder = type(head.bbox_coder).__name__
    if coder != 'DeltaXYWHBBoxCoder':
        raise NotImplementedError(f'ONNX export of {model_name} supports the box coder DeltaXYWHBBoxCoder only; '
                                  f'{type(head).__name__} has {coder}')


def _large_enough(boxes: Tensor, cfg) -> Tensor:
    """mmdet's ``min_bbox_size`` filter (off when the config has none or a negative one)."""
    min_size = cfg.get('min_bbox_size', -1)
    if min_size < 0:
        return torch.ones_like(boxes[..., 0], dtype=torch.bool)
    return ((boxes[..., 2] - boxes[..., 0]) > min_size) & ((boxes[..., 3] - boxes[..., 1]) > min_size)


def _nms_settings(nms_cfg, where: str) -> Tuple[float, bool]:
    """(iou_threshold, class_agnostic) of an mmcv ``nms`` config; other NMS kinds have no ONNX equivalent here."""
    unsupported = set(nms_cfg) - {'type', 'iou_threshold', 'class_agnostic', 'split_thr'}
    if nms_cfg.get('type', 'nms') != 'nms' or unsupported:
        raise NotImplementedError(f"ONNX export supports NMS configs dict(type='nms', iou_threshold=...) only; "
                                  f'{where} has {dict(nms_cfg)}')
    return float(nms_cfg['iou_threshold']), bool(nms_cfg.get('class_agnostic', False))


def _select(images: Tensor, num_images: int, max_per_img: int) -> Tuple[Tensor, Tensor]:
    """Rank of each NMS-kept row within its image and which rows ``max_per_img`` keeps."""
    rank = rank_in_image(images, num_images)
    keep = rank < max_per_img if max_per_img > 0 else torch.ones_like(rank, dtype=torch.bool)
    return rank, keep


def _to_batch(images: Tensor, rank: Tensor, num_images: int, boxes: Tensor, scores: Tensor,
              labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Rows of (image, rank) into ``dets`` (N, K, 5) and ``labels`` (N, K), K the largest count (padding label -1)."""
    width = images.shape[0]
    dets = boxes.new_zeros((num_images, width, 5)).index_put((images, rank), torch.cat([boxes, scores[:, None]], 1))
    batch_labels = torch.full_like(dets[..., 0], -1, dtype=torch.long).index_put((images, rank), labels)
    count = (images[:, None] == torch.arange(num_images, device=images.device)).sum(dim=0).max()
    columns = (torch.arange(width, device=images.device) < count).nonzero().squeeze(1)
    return dets.index_select(1, columns), batch_labels.index_select(1, columns)


def _gather_rows(values: Tensor, indices: Tensor) -> Tensor:
    """``values[b, indices[b]]`` for (B, M, ...) values and (B, k) indices."""
    expanded = indices.reshape(indices.shape + (1,) * (values.dim() - 2)).expand(
        tuple(indices.shape) + tuple(values.shape[2:]))
    return values.gather(1, expanded)


def _level_candidates(scores: Tensor, nms_pre: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The ``nms_pre`` best of (B, n) scores as (scores, indices, real); all of them when ``nms_pre`` <= 0."""
    if nms_pre > 0:
        return topk_padded(scores, nms_pre)
    indices = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    return scores, indices, torch.ones_like(indices, dtype=torch.bool)


class DetectorExport(ExportModule):
    """Base of the detector wrappers: the data preprocessor in the graph, then the subclass's ``detect``."""

    output_names = ('dets', 'labels')
    output_axes = {'dets': {0: BATCH, 1: DETECTIONS}, 'labels': {0: BATCH, 1: DETECTIONS}}

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.preprocess = GraphPreprocessor.from_data_preprocessor(detector.data_preprocessor)

    def forward(self, input: Tensor) -> Tuple[Tensor, ...]:  # noqa: A002  (the graph input's name)
        img_h, img_w = input.shape[2], input.shape[3]
        feats = self.detector.extract_feat(self.preprocess(input))
        return self.detect(feats, input.shape[0], torch.as_tensor(img_h), torch.as_tensor(img_w))

    def detect(self, feats: Sequence[Tensor], num_images: int, img_h: Tensor, img_w: Tensor) -> Tuple[Tensor, ...]:
        raise NotImplementedError


class RetinaNetExport(DetectorExport):
    """RetinaNet (``RetinaHead`` or any anchor head with sigmoid scores and delta boxes) as dets / labels."""

    def __init__(self, detector: nn.Module):
        super().__init__(detector)
        head = detector.bbox_head
        if not getattr(head, 'use_sigmoid_cls', False) or not hasattr(head, 'prior_generator'):
            raise NotImplementedError(f'ONNX export of {type(detector).__name__} needs an anchor head with sigmoid '
                                      f'scores; got {type(head).__name__}')
        _check_coder(head, type(detector).__name__)
        self.iou_threshold, self.class_agnostic = _nms_settings(head.test_cfg.nms, 'model.test_cfg.nms')

    def detect(self, feats, num_images, img_h, img_w):
        head = self.detector.bbox_head
        cfg = head.test_cfg
        cls_scores, bbox_preds = head(feats)
        priors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], dtype=cls_scores[0].dtype,
                                                  device=cls_scores[0].device)
        num_classes = head.cls_out_channels
        level_scores, level_boxes, level_labels, level_real = [], [], [], []
        for cls_score, bbox_pred, level_priors in zip(cls_scores, bbox_preds, priors):
            scores = cls_score.permute(0, 2, 3, 1).reshape(num_images, -1).sigmoid()  # (B, anchors x classes)
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(num_images, -1, 4)
            scores, indices, real = _level_candidates(scores, cfg.get('nms_pre', -1))
            anchors = torch.div(indices, num_classes, rounding_mode='floor')
            level_scores.append(scores)
            level_labels.append(indices % num_classes)
            level_real.append(real)
            level_boxes.append(_decode(head.bbox_coder, level_priors[anchors], _gather_rows(deltas, anchors),
                                       img_h, img_w))
        scores, boxes, labels = torch.cat(level_scores, 1), torch.cat(level_boxes, 1), torch.cat(level_labels, 1)
        valid = torch.cat(level_real, 1) & (scores > cfg.get('score_thr', 0)) & _large_enough(boxes, cfg)
        images, index = batched_nms(boxes, scores, torch.zeros_like(labels) if self.class_agnostic else labels,
                                    valid, self.iou_threshold)
        rank, keep = _select(images, num_images, cfg.get('max_per_img', -1))
        images, index, rank = images[keep], index[keep], rank[keep]
        return _to_batch(images, rank, num_images, boxes[images, index], scores[images, index], labels[images, index])


class TwoStageExport(DetectorExport):
    """RPN + ``StandardRoIHead`` detectors (Mask R-CNN, Faster R-CNN) as dets / labels (/ masks)."""

    def __init__(self, detector: nn.Module):
        super().__init__(detector)
        name = type(detector).__name__
        rpn_head, roi_head = detector.rpn_head, detector.roi_head
        if not getattr(rpn_head, 'use_sigmoid_cls', False) or type(roi_head).__name__ != 'StandardRoIHead':
            raise NotImplementedError(f'ONNX export of {name} supports an RPN head with sigmoid scores and a '
                                      f'StandardRoIHead; got {type(rpn_head).__name__} and {type(roi_head).__name__}')
        if roi_head.with_shared_head:
            raise NotImplementedError(f'ONNX export of {name}: RoI heads with a shared head are not supported')
        extractors = [roi_head.bbox_roi_extractor] + ([roi_head.mask_roi_extractor] if roi_head.with_mask else [])
        for extractor in extractors:
            if type(extractor).__name__ != 'SingleRoIExtractor':
                raise NotImplementedError(f'ONNX export of {name} supports SingleRoIExtractor only; got '
                                          f'{type(extractor).__name__}')
            for layer in extractor.roi_layers:
                check_roi_layer(layer)
        if roi_head.bbox_head.custom_cls_channels:
            raise NotImplementedError(f'ONNX export of {name}: bbox heads with custom class channels are not supported')
        if roi_head.with_mask and roi_head.test_cfg.get('mask_thr_binary', 0.5) < 0:
            raise NotImplementedError(f'ONNX export of {name} gives binary masks: mask_thr_binary must be >= 0')
        for head in (rpn_head, roi_head.bbox_head):
            _check_coder(head, name)
        self.rpn_iou, _ = _nms_settings(rpn_head.test_cfg.nms, 'model.test_cfg.rpn.nms')
        self.rcnn_iou, self.class_agnostic = _nms_settings(roi_head.test_cfg.nms, 'model.test_cfg.rcnn.nms')
        if roi_head.with_mask:
            self.output_names = ('dets', 'labels', 'masks')
            self.output_axes = dict(self.output_axes, masks={0: BATCH, 1: DETECTIONS, 2: HEIGHT, 3: WIDTH})

    def detect(self, feats, num_images, img_h, img_w):
        images, boxes = self._proposals(feats, num_images, img_h, img_w)
        dets, labels = self._detections(feats, num_images, images, boxes, img_h, img_w)
        if not self.detector.roi_head.with_mask:
            return dets, labels
        return dets, labels, self._masks(feats, dets, labels, img_h, img_w)

    def _proposals(self, feats, num_images, img_h, img_w) -> Tuple[Tensor, Tensor]:
        """RPN proposals as rows (image, box), by image and descending score: mmdet's ``RPNHead.predict``."""
        head = self.detector.rpn_head
        cfg = head.test_cfg
        cls_scores, bbox_preds = head(feats)
        priors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], dtype=cls_scores[0].dtype,
                                                  device=cls_scores[0].device)
        level_scores, level_boxes, level_ids, level_real = [], [], [], []
        for level, (cls_score, bbox_pred, level_priors) in enumerate(zip(cls_scores, bbox_preds, priors)):
            scores = cls_score.permute(0, 2, 3, 1).reshape(num_images, -1).sigmoid()
            deltas = bbox_pred.permute(0, 2, 3, 1).reshape(num_images, -1, 4)
            scores, indices, real = _level_candidates(scores, cfg.get('nms_pre', -1))
            level_scores.append(scores)
            level_ids.append(torch.full_like(indices, level))
            level_real.append(real)
            level_boxes.append(_decode(head.bbox_coder, level_priors[indices], _gather_rows(deltas, indices),
                                       img_h, img_w))
        scores, boxes = torch.cat(level_scores, 1), torch.cat(level_boxes, 1)
        valid = torch.cat(level_real, 1) & _large_enough(boxes, cfg)
        images, index = batched_nms(boxes, scores, torch.cat(level_ids, 1), valid, self.rpn_iou)
        _, keep = _select(images, num_images, cfg.get('max_per_img', -1))
        images, index = images[keep], index[keep]
        return images, boxes[images, index]

    def _detections(self, feats, num_images, images, proposals, img_h, img_w) -> Tuple[Tensor, Tensor]:
        """The RoI box head on the proposals, then mmdet's ``multiclass_nms``."""
        roi_head = self.detector.roi_head
        head, cfg = roi_head.bbox_head, roi_head.test_cfg
        extractor = roi_head.bbox_roi_extractor
        cls_score, bbox_pred = head(multi_level_roi_align(extractor, feats[:extractor.num_inputs], proposals, images))
        num_classes = head.num_classes
        scores = F.softmax(cls_score, dim=-1)[:, :num_classes]  # (R, C): the last column is the background
        if head.reg_class_agnostic:
            boxes = _decode(head.bbox_coder, proposals, bbox_pred, img_h, img_w)[:, None].expand(-1, num_classes, 4)
        else:
            deltas = bbox_pred.reshape(-1, num_classes, 4)
            boxes = _decode(head.bbox_coder, proposals[:, None].expand_as(deltas), deltas, img_h, img_w)
        # (RoI, class) candidates into a padded (image, rank x classes) layout for the per-image NMS
        rank = rank_in_image(images, num_images)
        width = images.shape[0] * num_classes
        slots = rank[:, None] * num_classes + torch.arange(num_classes, device=images.device)
        at = (images[:, None].expand_as(slots), slots)
        batch_boxes = boxes.new_zeros((num_images, width, 4)).index_put(at, boxes)
        batch_scores = scores.new_zeros((num_images, width)).index_put(at, scores)
        batch_valid = torch.zeros_like(batch_scores, dtype=torch.bool).index_put(at, scores > cfg.score_thr)
        batch_labels = slots.new_zeros((num_images, width)).index_put(
            at, torch.arange(num_classes, device=images.device).expand_as(slots))
        kept_images, index = batched_nms(batch_boxes, batch_scores,
                                         torch.zeros_like(batch_labels) if self.class_agnostic else batch_labels,
                                         batch_valid, self.rcnn_iou)
        rank, keep = _select(kept_images, num_images, cfg.get('max_per_img', -1))
        kept_images, index, rank = kept_images[keep], index[keep], rank[keep]
        return _to_batch(kept_images, rank, num_images, batch_boxes[kept_images, index],
                         batch_scores[kept_images, index], batch_labels[kept_images, index])

    def _masks(self, feats, dets: Tensor, labels: Tensor, img_h: Tensor, img_w: Tensor) -> Tensor:
        """mmdet's ``FCNMaskHead.predict_by_feat`` on the final boxes: (N, K, H, W) binary masks at input size."""
        roi_head = self.detector.roi_head
        extractor, head = roi_head.mask_roi_extractor, roi_head.mask_head
        boxes = dets[..., :4].reshape(-1, 4)
        images = (torch.zeros_like(labels) + torch.arange(labels.shape[0], device=labels.device)[:, None]).reshape(-1)
        flat_labels = labels.reshape(-1)
        mask_preds = head(multi_level_roi_align(extractor, feats[:extractor.num_inputs], boxes, images))
        channel = torch.zeros_like(flat_labels) if head.class_agnostic else flat_labels.clamp(min=0)
        mask_preds = mask_preds.gather(1, channel[:, None, None, None].expand(-1, 1, *mask_preds.shape[2:]))
        probabilities = paste_masks(mask_preds[:, 0].sigmoid(), boxes, img_h, img_w)
        masks = (probabilities >= roi_head.test_cfg.mask_thr_binary) & (flat_labels >= 0)[:, None, None]
        # -1, not K: an ONNX Reshape reads a 0 in the shape as "keep this axis", so K = 0 would break
        return masks.reshape(labels.shape[0], -1, img_h, img_w)


def build_detection_exporter(model: nn.Module) -> ExportModule:
    """The ONNX export wrapper of an mmdet detector (RetinaNet, Mask R-CNN, Faster R-CNN) in eval mode."""
    from mmdet.models.detectors import RetinaNet, TwoStageDetector

    if isinstance(model, RetinaNet):
        wrapper = RetinaNetExport(model)
    elif isinstance(model, TwoStageDetector) and model.with_rpn and model.with_roi_head:
        wrapper = TwoStageExport(model)
    else:
        raise NotImplementedError(f'ONNX export supports the detectors RetinaNet and Mask R-CNN / Faster R-CNN '
                                  f'(RPN + StandardRoIHead); got {type(model).__name__}')
    return wrapper.eval()
