"""Export of whole mm models (classifiers, segmentors, detectors) to ONNX, and their check in onnxruntime.

Only the export tooling imports this package; onnx and onnxruntime are imported inside the functions that need them
(never at ``import mmmetaformer``).

The graph contract (docs/en/user_guides/deployment.md, "The graph"): one input ``input``, float32 (N, 3, H, W),
the image as the config's test pipeline packs it (resized, unnormalised, channel order as loaded); the data
preprocessor's channel flip, normalisation and test-time padding happen inside the graph. Outputs equal
``predict(..., rescale=False)`` of the PyTorch model on the same input:

- classifier: ``scores`` (N, num_classes), the probabilities mmpretrain's ``predict`` gives as ``pred_score``;
- segmentor: ``seg_logits`` (N, num_classes, H, W) at input size, mmseg's ``seg_logits`` at ``ori_shape == input
  size``;
- detector: ``dets`` (N, K, 5) [x1, y1, x2, y2, score] in input pixels and ``labels`` (N, K) int64 after the
  config's score threshold, NMS and max-per-image; Mask R-CNN also ``masks`` (N, K, H, W), binary, at input size.
  Rows beyond an image's detections (K is the largest count of the batch, or a fixed maximum) are padding:
  label -1, box and score 0.

The wrapper convention (each task module follows it; :func:`build_export_model` picks the task):

- a wrapper is an :class:`~mmmetaformer.export.base.ExportModule`: ``forward(input)`` returns a tuple of tensors
  named by its ``output_names``; ``dynamic_axes(dynamic)`` gives ``torch.onnx.export``'s ``dynamic_axes``
  (from its ``output_axes`` and ``dynamic_batch``);
- it is built from the whole mm model (``data_preprocessor`` included) and starts with
  :class:`~mmmetaformer.export.preprocess.GraphPreprocessor` built from the model's data preprocessor;
- it is traced by the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): image sizes are 0-dim
  tensors while traced, so sizes computed with tensor operations stay dynamic; code that cannot be traced (mmcv ops,
  data-dependent loops) is replaced by export-friendly equivalents in this package that give the same results,
  e.g. ``torch.autograd.Function`` with a ``symbolic`` method emitting standard ONNX ops (NonMaxSuppression,
  RoiAlign), each tested against the mm original;
- it never changes the mm model it wraps: module replacements needed only for the export are swapped in for the
  duration of the export (:func:`~mmmetaformer.export.replacements.exportable_modules`), so the model still
  predicts as before for the comparison.
"""
from torch import nn

from ..utils.configs import library_of
from .base import BATCH, HEIGHT, INPUT_NAME, WIDTH, ExportModule
from .preprocess import GraphPreprocessor


def task_of(cfg) -> str:
    """The library an exported model's config is for: 'mmpretrain', 'mmseg' or 'mmdet'."""
    return library_of(cfg, 'ONNX export')


def build_export_model(model: nn.Module, cfg) -> ExportModule:
    """The export wrapper of a built mm model, chosen by the config's ``default_scope``; wrapper and model are put
    in eval mode (the exporter restores the wrapper's mode afterwards, so a wrapper left in training mode would
    leave the model in training mode)."""
    task = task_of(cfg)
    if task == 'mmpretrain':
        from .classification import ClassifierExport as build
    elif task == 'mmseg':
        from .segmentation import SegmentorExport as build
    else:
        from .detection import build_detection_exporter as build
    return build(model).eval()


__all__ = ['BATCH', 'HEIGHT', 'INPUT_NAME', 'WIDTH', 'ExportModule', 'GraphPreprocessor',
           'build_export_model', 'task_of']
