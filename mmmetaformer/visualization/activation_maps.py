"""A look inside trained MetaFormers: class activation maps of classifiers (the ``grad-cam`` package) and the four
stage outputs of any backbone drawn over the image (mmengine's ``Visualizer.draw_featmap``).

Both see the image as the model does: the config's test pipeline (resize, crop) and data preprocessor
(normalisation, padding) are applied through the library's inferencer, and the pictures show that network input.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
import torch
from mmengine import fileio
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from torch import Tensor, nn

from ..apis.inference import build_inferencer, load_model_config
from ..errors import FileAccessError, InvalidSettingError
from ..models.backbones.metaformer import NUM_STAGES, Downsampling, MetaFormer, MetaFormerBlock, MetaFormerStage, Stem

# Names of the methods of the grad-cam package that work on any MetaFormer layer with one forward/backward pass.
CAM_METHODS = {'GradCAM': 'GradCAM', 'GradCAM++': 'GradCAMPlusPlus', 'XGradCAM': 'XGradCAM', 'EigenCAM': 'EigenCAM',
               'EigenGradCAM': 'EigenGradCAM', 'LayerCAM': 'LayerCAM', 'HiResCAM': 'HiResCAM',
               'GradCAMElementWise': 'GradCAMElementWise'}
# Every family's classifier pools the output of the last block of the last stage (PoolFormer v1 after a GroupNorm
# on the full map, the others before their LayerNorm): the map the class decision is read from.
DEFAULT_TARGET_LAYERS = ('backbone.stages.3.blocks.-1', )
CHANNEL_REDUCTIONS = ('squeeze_mean', 'select_max')
MIN_PANEL_WIDTH = 256  # feature map panels of small images are enlarged so that their titles fit


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module at a dotted path; integers index sequences (negative ones from the end), e.g.
    ``backbone.stages.3.blocks.-1``. A stage stands for its blocks (the stage output)."""
    module = model
    for part in name.split('.'):
        try:
            module = module[int(part)] if part.lstrip('-').isdigit() else getattr(module, part)
        except (AttributeError, IndexError, TypeError) as error:
            raise InvalidSettingError(
                f'the model has no layer {name!r} (nothing at {part!r}); target layers are dotted '
                f'paths such as {DEFAULT_TARGET_LAYERS[0]!r}') from error
    return module.blocks if isinstance(module, MetaFormerStage) else module


def is_channels_last(model: nn.Module, layer: nn.Module) -> bool:
    """Whether ``layer`` outputs MetaFormer tokens (B, H, W, C): the stem, the downsampling layers, the blocks, a
    stage's blocks, a block's parts (norms, token mixer, MLP, scales) and the output norms. Other layers (the
    convolutions inside them, the classifier head) are NCHW."""
    if isinstance(layer, (Stem, Downsampling, MetaFormerBlock)):
        return True
    for module in model.modules():
        if isinstance(module, MetaFormerBlock) and any(layer is child for child in module.children()):
            return True
        if isinstance(module, MetaFormer):
            norms = module.out_norms.values() if module.norm_outputs else []
            if any(layer is stage.blocks for stage in module.stages) or any(layer is norm for norm in norms):
                return True
    return False


def _to_nchw(tokens: Tensor) -> Tensor:
    return tokens.permute(0, 3, 1, 2)


def preprocess_image(inferencer, image_path: str) -> Tuple[Tensor, np.ndarray]:
    """The model input (1, 3, H, W) after the config's test pipeline and data preprocessor, and that image as
    RGB uint8 (H, W, 3) before normalisation (with the preprocessor's padding)."""
    image = mmcv.imread(image_path)
    if image is None:
        raise InvalidSettingError(f'cannot read {image_path} as an image')
    item = inferencer.pipeline(dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2]))
    inputs = inferencer.model.data_preprocessor(pseudo_collate([item]), False)['inputs']
    seen = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # the pipeline keeps mmcv's BGR
    padded = np.zeros((*inputs.shape[-2:], 3), dtype=np.uint8)
    padded[:seen.shape[0], :seen.shape[1]] = seen
    return inputs, padded


def class_activation_map(model: nn.Module, inputs: Tensor, target_layers: Sequence[nn.Module],
                         method: str = 'GradCAM', target_category: Optional[int] = None) -> Tuple[np.ndarray, int,
                                                                                                  float]:
    """The class activation map (H, W, values in [0, 1], at the input's size) of a classifier returning logits,
    for ``target_category`` (default: the predicted class), and that category with its softmax score."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    if method not in CAM_METHODS:
        raise InvalidSettingError(f'unknown CAM method {method!r}; choose one of {", ".join(CAM_METHODS)}')
    layouts = {is_channels_last(model, layer) for layer in target_layers}
    if len(layouts) != 1:
        raise InvalidSettingError(
            'the target layers mix channels-last MetaFormer layers and NCHW layers; choose layers of '
            'one kind')
    with torch.no_grad():
        scores = model(inputs).softmax(-1)[0]
    if target_category is None:
        target_category = int(scores.argmax())
    elif not 0 <= target_category < scores.numel():
        raise InvalidSettingError(
            f'target category {target_category} is not one of the model\'s {scores.numel()} classes')
    cam_class = getattr(pytorch_grad_cam, CAM_METHODS[method])
    with cam_class(model=model, target_layers=list(target_layers),
                   reshape_transform=_to_nchw if layouts == {True} else None) as cam:
        heatmap = cam(inputs, targets=[ClassifierOutputTarget(target_category)])[0]
    return heatmap, target_category, float(scores[target_category])


def write_picture(picture: np.ndarray, save_path: str) -> None:
    """Write an RGB uint8 picture (H, W, 3) to ``save_path`` in the image format its extension names (OpenCV's
    encoders), creating missing folders; nothing is written where it fails.

    Raises:
        InvalidSettingError: OpenCV has no encoder for the extension.
        FileAccessError: the encoder refuses the picture (e.g. a JPEG over 65500 pixels wide) or the file cannot be
            written.
    """
    extension = osp.splitext(save_path)[1]
    try:
        encoded, data = cv2.imencode(extension, np.ascontiguousarray(picture[..., ::-1]))
    except cv2.error as error:
        raise InvalidSettingError(f'could not write {save_path}: OpenCV has no image format for the extension '
                                  f'{extension or "(none)"!r}; use e.g. .png or .jpg') from error
    if not encoded:
        raise FileAccessError(f'could not write {save_path}: OpenCV could not encode the {picture.shape[1]}x'
                              f'{picture.shape[0]} picture as {extension}')
    try:
        fileio.put(data.tobytes(), save_path)
    except OSError as error:
        raise FileAccessError(f'could not write {save_path}: {error}') from error


def draw_cam(image: str, config: Union[str, Config], checkpoint: str, save_path: str, method: str = 'GradCAM',
             target_layers: Optional[Sequence[str]] = None, target_category: Optional[int] = None,
             device: Optional[str] = None, cfg_options: Optional[dict] = None) -> Dict[str, object]:
    """Write the class activation map of an mmpretrain classifier on ``image`` over the network's view of it
    (after the test pipeline's resize and crop) to ``save_path``. ``target_layers`` are dotted module paths (default
    :data:`DEFAULT_TARGET_LAYERS`). Returns the category explained, its class name and score, and the layers."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    cfg = load_model_config(config, cfg_options)
    if cfg.default_scope != 'mmpretrain':
        raise InvalidSettingError(
            f'class activation maps need a classifier config (mmpretrain); this is a '
            f'{cfg.default_scope} config: see tools/vis_featmap.py for the feature maps of its backbone')
    inferencer = build_inferencer(cfg, checkpoint, device)
    model = inferencer.model
    names = list(target_layers or DEFAULT_TARGET_LAYERS)
    layers = [find_layer(model, name) for name in names]
    inputs, seen = preprocess_image(inferencer, image)
    heatmap, category, score = class_activation_map(model, inputs, layers, method, target_category)
    write_picture(show_cam_on_image(seen.astype(np.float32) / 255, heatmap, use_rgb=True), save_path)
    classes = inferencer.classes
    return dict(category=category, class_name=classes[category] if classes else None, score=score,
                target_layers=names)


def stage_outputs(backbone: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The outputs (C, H, W) of the four stages of a MetaFormer backbone (before any output norm), whatever its
    ``out_indices``."""
    if not isinstance(backbone, MetaFormer):
        raise InvalidSettingError(
            f'feature maps need a MetaFormer backbone; this model has a {type(backbone).__name__}')
    captured: Dict[int, Tensor] = {}

    def keep(index: int):
        return lambda module, args, output: captured.__setitem__(index, _to_nchw(output)[0].detach().clone())
    hooks = [stage.blocks.register_forward_hook(keep(i)) for i, stage in enumerate(backbone.stages)]
    try:
        with torch.no_grad():
            backbone(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if len(captured) != NUM_STAGES:
        raise InvalidSettingError(f'the backbone stops after stage {max(backbone.out_indices)} (out_indices='
                                  f'{backbone.out_indices}); add stage {NUM_STAGES - 1} to its out_indices')
    return [captured[i] for i in range(NUM_STAGES)]


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` (RGB) under a white strip with ``title``, shrunk to fit the width."""
    strip = np.full((28, panel.shape[1], 3), 255, dtype=np.uint8)
    scale = 0.5
    width = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    scale *= min(1.0, (panel.shape[1] - 8) / width)
    cv2.putText(strip, title, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel])


def draw_feature_maps(image: str, config: Union[str, Config], save_path: str, checkpoint: Optional[str] = None,
                      channel_reduction: str = 'squeeze_mean', device: Optional[str] = None,
                      cfg_options: Optional[dict] = None) -> np.ndarray:
    """Draw the four stage outputs of the backbone of any config (detector, segmentor, classifier) over the
    network's view of ``image`` (mmengine's ``Visualizer.draw_featmap``, channels reduced by ``squeeze_mean`` or
    ``select_max``), as a 2 x 2 grid of panels titled with stage, channels, size and stride; write it to
    ``save_path`` and return it (RGB). Without ``checkpoint`` the model starts as its config says (``init_cfg``,
    e.g. ImageNet weights of the backbone)."""
    from mmengine.visualization import Visualizer
    if channel_reduction not in CHANNEL_REDUCTIONS:
        raise InvalidSettingError(f'channel_reduction must be one of {CHANNEL_REDUCTIONS}, got {channel_reduction!r}')
    inferencer = build_inferencer(config, checkpoint, device, cfg_options)
    model = inferencer.model
    if checkpoint is None:
        model.init_weights()
    inputs, seen = preprocess_image(inferencer, image)
    if seen.shape[1] < MIN_PANEL_WIDTH:
        seen = mmcv.imrescale(seen, MIN_PANEL_WIDTH / seen.shape[1])
    panels = []
    for index, featmap in enumerate(stage_outputs(model.backbone, inputs)):
        drawn = Visualizer.draw_featmap(featmap, seen, channel_reduction=channel_reduction, alpha=0.5)
        channels, height, width = featmap.shape
        panels.append(_titled(drawn, f'stage {index}: {channels} ch, {height}x{width}, stride {4 * 2**index}'))
    grid = np.concatenate([np.concatenate(panels[:2], axis=1), np.concatenate(panels[2:], axis=1)])
    write_picture(grid, save_path)
    return grid
