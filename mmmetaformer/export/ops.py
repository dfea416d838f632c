"""Export-friendly detection ops: the same results as mmcv's NMS / RoIAlign and mmdet's mask pasting, in a form the
TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``) writes as standard ONNX ops.

- :func:`batched_nms` runs class-aware NMS on a padded batch with mmcv's coordinate-offset trick and exports as ONNX
  ``NonMaxSuppression``;
- :func:`roi_align` is mmcv's ``RoIAlign(aligned=True, pool_mode='avg')`` and exports as ONNX ``RoiAlign`` (opset 16,
  ``coordinate_transformation_mode='half_pixel'``, which is the ``aligned=True`` sampling grid);
- :func:`multi_level_roi_align` is mmdet's ``SingleRoIExtractor`` (RoIs mapped to FPN levels by scale);
- :func:`paste_masks` is mmdet's ``_do_paste_mask`` (bilinear ``grid_sample``, zero padding, ``align_corners=False``)
  written as two small matrix products, so a 100-instance, 800x1333 paste needs no 850 MB sampling grid;
- :func:`topk_padded` and :func:`rank_in_image` keep shapes data-independent where mmdet uses Python ``min`` and loops.

Every function computes in PyTorch what the ONNX graph computes in onnxruntime; tests/test_export/test_detection.py
checks both against the mm originals.
"""
from typing import Sequence, Tuple

import torch
import torchvision
from torch import Tensor

# Scores given to padding and filtered-out candidates: below every probability, so NonMaxSuppression's own score
# threshold (strictly greater) drops them. Real scores are probabilities (sigmoid / softmax), hence >= 0.
_INVALID_SCORE = -1.0
_NMS_SCORE_THRESHOLD = -0.5
MIN_OPSET = 16  # RoiAlign with coordinate_transformation_mode (half_pixel) appeared in opset 16


def _opset_at_least(g, minimum: int, op: str) -> None:
    if g.opset < minimum:
        raise RuntimeError(f'ONNX {op} with the semantics of mmcv needs opset >= {minimum}; got opset {g.opset} '
                           f'(use --opset {minimum} or higher)')


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` over ``boxes`` (B, M, 4) and ``scores`` (B, 1, M): selected (S, 3) rows of
    [image, 0, box index], by image, then by descending score; only scores above ``score_threshold`` take part."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
        selected = []
        for image, (image_boxes, image_scores) in enumerate(zip(boxes, scores[:, 0])):
            candidates = (image_scores > score_threshold).nonzero().squeeze(1)
            keep = candidates[torchvision.ops.nms(image_boxes[candidates], image_scores[candidates], iou_threshold)]
            rows = torch.zeros(len(keep), 3, dtype=torch.long, device=boxes.device)
            rows[:, 0] = image
            rows[:, 2] = keep
            selected.append(rows)
        return torch.cat(selected) if selected else boxes.new_zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float):
        max_output = g.op('Constant', value_t=torch.tensor([2 ** 31 - 1], dtype=torch.long))
        iou = g.op('Constant', value_t=torch.tensor([iou_threshold], dtype=torch.float))
        score = g.op('Constant', value_t=torch.tensor([score_threshold], dtype=torch.float))
        return g.op('NonMaxSuppression', boxes, scores, max_output, iou, score, center_point_box_i=0)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, valid: Tensor,
                iou_threshold: float) -> Tuple[Tensor, Tensor]:
    """mmcv's ``batched_nms`` for every image of a padded batch at once.

    Args:
        boxes: (B, M, 4) boxes [x1, y1, x2, y2] with non-negative coordinates (clipped to the image).
        scores: (B, M) probabilities.
        idxs: (B, M) category (or level) of each box; boxes of different categories never suppress each other.
        valid: (B, M) bool, the candidates that take part (padding and filtered-out rows are False).
        iou_threshold: a box is suppressed by a higher-scoring one whose IoU with it is above this.

    Returns:
        ``(image, index)``: the kept candidates, by image and, within an image, by descending score.
    """
    # mmcv separates the categories by shifting each by (largest coordinate + 1) times its index; the same
    # arithmetic gives the same float inputs to the suppression, hence the same decisions.
    max_coordinate = torch.where(valid[..., None], boxes, boxes.new_zeros(())).flatten(1).max(dim=1).values
    offsets = idxs.to(boxes) * (max_coordinate[:, None] + 1)
    nms_scores = torch.where(valid, scores, scores.new_full((), _INVALID_SCORE))
    selected = _NonMaxSuppression.apply(boxes + offsets[..., None], nms_scores[:, None], float(iou_threshold),
                                        _NMS_SCORE_THRESHOLD)
    return selected[:, 0], selected[:, 2]


def rank_in_image(images: Tensor, num_images: int) -> Tensor:
    """The position of each row among the rows of its image, for rows grouped by image (as NMS returns them)."""
    counts = (images[:, None] == torch.arange(num_images, device=images.device)).sum(dim=0)
    starts = counts.cumsum(0) - counts
    return torch.arange(images.shape[0], device=images.device) - starts[images]


def topk_padded(scores: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``scores.topk(min(k, n), dim=1)`` for (B, n) scores with a fixed k whatever n is (n depends on the input size).

    Missing places are padding: returns (values, indices clamped to n - 1, real), ``real`` False on padding.
    """
    num = scores.shape[1]
    padded = torch.cat([scores, scores.new_full((scores.shape[0], k), _INVALID_SCORE)], dim=1)
    values, indices = padded.topk(k, dim=1)
    real = indices < num
    return values, torch.where(real, indices, torch.zeros_like(indices)), real


class _RoiAlign(torch.autograd.Function):
    """mmcv ``RoIAlign(aligned=True, pool_mode='avg')`` as ONNX ``RoiAlign`` (half_pixel, avg)."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, images: Tensor, output_size: Tuple[int, int],
                spatial_scale: float, sampling_ratio: int) -> Tensor:
        indexed = torch.cat([images[:, None].to(rois), rois], dim=1)
        # torchvision treats every ratio <= 0 as adaptive (ceil(roi size / output size) samples per bin), as mmcv's 0
        return torchvision.ops.roi_align(features, indexed, output_size, spatial_scale, sampling_ratio, aligned=True)

    @staticmethod
    def symbolic(g, features, rois, images, output_size: Tuple[int, int], spatial_scale: float,
                 sampling_ratio: int):
        _opset_at_least(g, MIN_OPSET, 'RoiAlign')
        return g.op('RoiAlign', features, rois, images, output_height_i=output_size[0],
                    output_width_i=output_size[1], spatial_scale_f=spatial_scale,
                    sampling_ratio_i=max(sampling_ratio, 0), mode_s='avg',
                    coordinate_transformation_mode_s='half_pixel')


def roi_align(features: Tensor, rois: Tensor, images: Tensor, output_size: Tuple[int, int], spatial_scale: float,
              sampling_ratio: int) -> Tensor:
    """RoIAlign of (R, 4) boxes ``rois`` (input pixels) on ``features`` of image ``images`` (R,) int64."""
    return _RoiAlign.apply(features, rois, images, tuple(output_size), float(spatial_scale), int(sampling_ratio))


def check_roi_layer(layer) -> None:
    """Refuse an mmcv RoIAlign whose sampling ONNX RoiAlign cannot reproduce."""
    name = type(layer).__name__
    pool_mode, aligned = getattr(layer, 'pool_mode', None), getattr(layer, 'aligned', None)
    if name != 'RoIAlign' or pool_mode != 'avg' or aligned is not True:
        raise NotImplementedError(f"ONNX export supports RoI layers RoIAlign(pool_mode='avg', aligned=True) only; "
                                  f'got {name}(pool_mode={pool_mode!r}, aligned={aligned!r})')


def multi_level_roi_align(extractor, features: Sequence[Tensor], rois: Tensor, images: Tensor) -> Tensor:
    """mmdet ``SingleRoIExtractor`` for (R, 4) boxes ``rois`` of images ``images``: each RoI pooled on the FPN level
    its scale maps to (mmdet's own ``map_roi_levels``, finest_scale), with the extractor's RoIAlign layers."""
    num_levels = len(extractor.featmap_strides)
    levels = extractor.map_roi_levels(torch.cat([images[:, None].to(rois), rois], dim=1), num_levels)
    first = extractor.roi_layers[0]
    pooled = features[0].new_zeros((rois.shape[0], extractor.out_channels) + tuple(first.output_size))
    for level, layer in enumerate(extractor.roi_layers):
        members = (levels == level).nonzero().squeeze(1)
        level_feats = roi_align(features[level], rois[members], images[members], layer.output_size,
                                layer.spatial_scale, layer.sampling_ratio)
        pooled = pooled.index_put((members,), level_feats)
    return pooled


def _bilinear_weights(grid: Tensor, size: int) -> Tensor:
    """(..., size) weights of bilinear sampling with zero padding at normalised coordinates ``grid`` (align_corners
    False): what ``grid_sample`` gives each input cell along one axis."""
    position = ((grid + 1) * size - 1) / 2
    low = position.floor()
    frac = (position - low)[..., None]
    cells = torch.arange(size, device=grid.device, dtype=grid.dtype)
    return (1 - frac) * (cells == low[..., None]).to(grid) + frac * (cells == low[..., None] + 1).to(grid)


def paste_masks(masks: Tensor, boxes: Tensor, img_h: Tensor, img_w: Tensor) -> Tensor:
    """mmdet ``_do_paste_mask`` as mmdet's CPU path calls it (mask by mask, ``skip_empty=True``): (K, h, w) mask
    probabilities resampled into their (K, 4) boxes on an img_h x img_w canvas; returns (K, img_h, img_w)
    probabilities. Bilinear sampling is separable, so the paste is ``Wy @ mask @ Wx^T`` with per-axis weights
    instead of a (K, H, W, 2) grid."""
    x0, y0, x1, y1 = (c[:, None] for c in boxes.unbind(dim=1))
    weights_x = _axis_weights(torch.arange(img_w, device=boxes.device).to(boxes), x0, x1, masks.shape[2])
    weights_y = _axis_weights(torch.arange(img_h, device=boxes.device).to(boxes), y0, y1, masks.shape[1])
    return weights_y @ masks @ weights_x.transpose(1, 2)


def _axis_weights(pixels: Tensor, start: Tensor, end: Tensor, size: int) -> Tensor:
    """(K, pixels, size) sampling weights of the mask cells for the canvas pixels along one axis."""
    grid = (pixels + 0.5 - start) / (end - start) * 2 - 1
    # mmdet sets the coordinates of zero-width / zero-height boxes (inf) to 0
    grid = torch.where(torch.isinf(grid), torch.zeros_like(grid), grid)
    # mmdet's CPU path pastes only from 1 px before the box to 1 px after it (skip_empty); elsewhere the mask
    # samples to < 0.5 anyway, except for a degenerate box, whose mask would otherwise fill the canvas
    window = (pixels >= start.floor() - 1) & (pixels < end.ceil() + 1)
    return _bilinear_weights(grid, size) * window[..., None].to(grid)
