"""Predictions of a trained detector, segmentor or classifier on image files, through the library's own inferencer.

The config's ``default_scope`` picks mmdet's ``DetInferencer``, mmseg's ``MMSegInferencer`` or mmpretrain's
``ImageClassificationInferencer``. :func:`run_inference` writes, for every input image, a picture of the
predictions to ``<out_dir>/vis/`` and the predictions as JSON to ``<out_dir>/preds/`` (the file names of mmdet's
inferencer: ``vis/<image file name>``, ``preds/<image stem>.json``; images found in a folder keep their path
inside it). A video is run frame by frame: ``vis/<video stem>.mp4`` (the predictions drawn on every frame, at the
video's frame rate) and ``preds/<video stem>.json`` (a list, one prediction per frame).
"""
import argparse
import contextlib
import json
import os
import os.path as osp
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar

from ..errors import InvalidSettingError, MissingFileError
from ..models.utils import check_checkpoint_path, check_model_weights, known_layout, read_checkpoint
from ..utils.cli import add_cfg_options
from ..utils.configs import library_of

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv')
DEFAULT_SCORE_THR = 0.3  # mmdet's default for drawing boxes


def default_device() -> str:
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--cfg-options``, the options every tool that runs a trained model shares."""
    parser.add_argument('--device', help='e.g. cpu, cuda:0 (default: cuda:0 when available, else cpu)')
    add_cfg_options(parser)


def load_model_config(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """The config of a trained model (a file or a loaded ``Config``, with ``cfg_options`` merged), checked to be
    one of the three libraries'."""
    if not isinstance(config, Config):
        if not osp.isfile(config):
            raise MissingFileError(f'config {config} does not exist')
        config = Config.fromfile(config)
    else:
        config = config.copy()  # the inferencers edit the pipeline of the config they get
    if cfg_options:
        config.merge_from_dict(cfg_options)
    library_of(config, 'inference')
    return config


def build_inferencer(config: Union[str, Config], checkpoint: Optional[str], device: Optional[str] = None,
                     cfg_options: Optional[dict] = None):
    """The library inferencer of ``config`` (``DetInferencer``, ``MMSegInferencer`` or
    ``ImageClassificationInferencer``) with the weights of ``checkpoint`` (a file or URL), on ``device``.

    The checkpoint must hold exactly the model's tensors (:func:`~mmmetaformer.models.utils.check_model_weights`):
    the inferencers would otherwise run a partly random model after a warning. A classifier may also come as an
    official, timm or mmpretrain file: it is converted on loading. Without a checkpoint the model keeps its fresh
    initialisation (``init_weights`` is not called).
    """
    cfg = load_model_config(config, cfg_options)
    if checkpoint is not None:
        check_checkpoint_path(checkpoint)
    device = device or default_device()
    scope = cfg.default_scope
    init_default_scope(scope)  # mmpretrain's inferencer builds its pipeline in whatever scope is current
    state_dict, convert = None, False
    if checkpoint is not None:  # checked before the inferencer loads it, which lists mismatched keys at length
        state_dict = read_checkpoint(checkpoint)
        convert = scope == 'mmpretrain' and known_layout(state_dict) not in (None, 'mmmetaformer')
        state_dict = check_model_weights(state_dict, model_on_meta_device(cfg), checkpoint, convert)
    weights = None if convert else checkpoint  # the inferencer loads mm checkpoints itself, with their class names
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(cfg, weights, device=device, show_progress=False)
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(cfg, weights, device=device, show_progress=False)
    else:
        from mmpretrain.apis import ImageClassificationInferencer
        inferencer = ImageClassificationInferencer(cfg, pretrained=weights or False, device=device)
    if convert:
        inferencer.model.load_state_dict(state_dict)
    return inferencer


def model_on_meta_device(cfg: Config):
    """The model of ``cfg`` built on the meta device (shapes without memory), to check a checkpoint against."""
    from mmengine.registry import MODELS
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def collect_inputs(inputs: Sequence[str]) -> List[Tuple[str, str]]:
    """``(path, output name)`` of every image and video of ``inputs``: image and video files (named by their file
    name) and folders of images (searched recursively, other files skipped; named by their path inside the folder),
    in the order given."""
    if not inputs:
        raise InvalidSettingError('no inputs given')
    found = []
    for item in inputs:
        if osp.isdir(item):
            images = sorted(osp.relpath(osp.join(folder, name), item) for folder, _, names in os.walk(item)
                            for name in names if _is_image(name))
            if not images:
                raise InvalidSettingError(f'folder {item} holds no images (looked for {", ".join(IMAGE_EXTENSIONS)})')
            found += [(osp.join(item, name), name) for name in images]
        elif osp.isfile(item):
            if not (_is_image(item) or _is_video(item)):
                raise InvalidSettingError(
                    f'{item}: unsupported file type {osp.splitext(item)[1] or "(none)"!r}; images must end with '
                    f'one of {", ".join(IMAGE_EXTENSIONS)}, videos with one of {", ".join(VIDEO_EXTENSIONS)}')
            found.append((item, osp.basename(item)))
        else:
            raise MissingFileError(f'input {item} does not exist')
    by_stem: Dict[str, str] = {}
    for path, name in found:
        stem = osp.splitext(name)[0]
        if stem in by_stem:
            raise InvalidSettingError(
                f'{by_stem[stem]} and {path} would write the same outputs ({stem}.*): rename one or '
                f'pass their folder instead')
        by_stem[stem] = path
    return found


@contextlib.contextmanager
def _quiet_mmpretrain_progress() -> Iterator[None]:
    """mmpretrain's inferencer draws a progress bar of its own on every call and has no option to turn it off."""
    from mmpretrain.utils import progress
    before, progress.disable_progress_bar = progress.disable_progress_bar, True
    try:
        yield
    finally:
        progress.disable_progress_bar = before


# A predictor: (inferencer, image file or BGR frame, score threshold) -> (prediction as JSON data, RGB picture).
def _detect(inferencer, image: Union[str, np.ndarray], score_thr: float) -> Tuple[dict, np.ndarray]:
    result = inferencer(image, return_vis=True, no_save_vis=True, pred_score_thr=score_thr)
    return result['predictions'][0], result['visualization'][0]


def _segment(inferencer, image: Union[str, np.ndarray], score_thr: Optional[float]) -> Tuple[dict, np.ndarray]:
    result = inferencer(image, return_vis=True)
    return dict(sem_seg=result['predictions'].tolist()), result['visualization']


def _classify(inferencer, image: Union[str, np.ndarray], score_thr: Optional[float]) -> Tuple[dict, np.ndarray]:
    from mmpretrain.visualization import UniversalVisualizer
    with _quiet_mmpretrain_progress():
        sample = inferencer(image, return_datasamples=True)[0]
    prediction = inferencer.postprocess([sample], None)[0]
    prediction['pred_scores'] = prediction['pred_scores'].tolist()
    if inferencer.visualizer is None:
        inferencer.visualizer = UniversalVisualizer()
    image = mmcv.imread(image, channel_order='rgb') if isinstance(image, str) else mmcv.bgr2rgb(image)
    # the label text has a fixed size: enlarge small images so that it stays readable
    inferencer.visualizer.visualize_cls(image, sample, classes=inferencer.classes, draw_gt=False,
                                        resize=224 if min(image.shape[:2]) < 224 else None)
    return prediction, inferencer.visualizer.get_image()


PREDICTORS: Dict[str, Callable] = dict(mmdet=_detect, mmseg=_segment, mmpretrain=_classify)


def _predict_video(predict: Callable, inferencer, path: str, score_thr: float, video_path: str) -> List[dict]:
    """Run ``predict`` on every frame of the video ``path`` and write the pictures to ``video_path`` as an mp4 video
    at the same frame rate. Returns the predictions, one per frame."""
    import cv2
    capture = cv2.VideoCapture(path)
    writer, predictions = None, []
    try:
        while True:
            read, frame = capture.read()
            if not read:
                break
            prediction, picture = predict(inferencer, frame, score_thr)
            if writer is None:
                os.makedirs(osp.dirname(video_path), exist_ok=True)
                writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*'mp4v'),
                                         capture.get(cv2.CAP_PROP_FPS) or 25.0, (picture.shape[1], picture.shape[0]))
            writer.write(np.ascontiguousarray(picture[..., ::-1]))  # the inferencers draw in RGB
            predictions.append(prediction)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not predictions:
        raise InvalidSettingError(f'{path}: OpenCV read no frame of this video (an empty file, or a codec it lacks)')
    return predictions


def run_inference(config: Union[str, Config], checkpoint: str, inputs: Sequence[str], out_dir: str,
                  device: Optional[str] = None, score_thr: Optional[float] = None,
                  cfg_options: Optional[dict] = None) -> List[Tuple[str, str]]:
    """Run the trained model of ``config`` + ``checkpoint`` on ``inputs`` (image files, folders of images and video
    files) and write ``out_dir/vis/<name>`` (the picture of the predictions) and ``out_dir/preds/<stem>.json`` for
    each image, ``out_dir/vis/<stem>.mp4`` and ``out_dir/preds/<stem>.json`` (a list, one prediction per frame) for
    each video, with a progress bar over the inputs. Returns the ``(picture or video, json)`` paths written.

    The JSON is the library inferencer's: detection ``labels``, ``scores``, ``bboxes`` (x1, y1, x2, y2 in image
    pixels; ``masks`` as COCO RLE for instance segmentation), every box the model's ``test_cfg`` keeps; segmentation
    ``sem_seg`` (class index per pixel, image height x width); classification ``pred_label``, ``pred_score``,
    ``pred_class`` and ``pred_scores`` (all classes). ``score_thr`` (detection only, default 0.3) is the lowest score
    of the boxes drawn.
    """
    cfg = load_model_config(config, cfg_options)
    if score_thr is not None and cfg.default_scope != 'mmdet':
        raise InvalidSettingError(
            f'a score threshold applies to detectors only (the lowest score of the boxes drawn); this '
            f'is a {cfg.default_scope} config')
    found = collect_inputs(inputs)
    inferencer = build_inferencer(cfg, checkpoint, device)
    predict = PREDICTORS[cfg.default_scope]
    score_thr = DEFAULT_SCORE_THR if score_thr is None else score_thr
    written = []
    progress = ProgressBar(len(found))
    for path, name in found:
        stem = osp.splitext(name)[0]
        json_path = osp.join(out_dir, 'preds', stem + '.json')
        if _is_video(path):
            picture_path = osp.join(out_dir, 'vis', stem + '.mp4')
            prediction = _predict_video(predict, inferencer, path, score_thr, picture_path)
        else:
            prediction, picture = predict(inferencer, path, score_thr)
            picture_path = osp.join(out_dir, 'vis', name)
            mmcv.imwrite(picture[..., ::-1], picture_path)  # the inferencers draw in RGB
        os.makedirs(osp.dirname(json_path), exist_ok=True)
        with open(json_path, 'w') as f:
            json.dump(prediction, f)
        written.append((picture_path, json_path))
        progress.update()
    return written
