"""Run a trained detector, segmentor or classifier on images and videos and write pictures and JSON predictions.

    python tools/inference.py CONFIG CHECKPOINT IMAGE_FOLDER_OR_VIDEO [...] --out-dir DIR

The config's default_scope picks mmdet's DetInferencer, mmseg's MMSegInferencer or mmpretrain's
ImageClassificationInferencer. For every image: DIR/vis/<file name> (the predictions drawn on it) and
DIR/preds/<stem>.json (the inferencer's predictions: detection labels, scores, bboxes [and RLE masks];
segmentation sem_seg, a class index per pixel; classification pred_label, pred_score, pred_class, pred_scores).
Folders are searched recursively; their images keep their path inside the folder. A video is run frame by frame:
DIR/vis/<stem>.mp4 (the predictions drawn on every frame) and DIR/preds/<stem>.json (a list, one prediction per
frame).
"""
import argparse

from mmmetaformer.apis.inference import DEFAULT_SCORE_THR, add_inference_options, run_inference
from mmmetaformer.utils.cli import exit_on_user_error


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file (mmdet, mmseg or mmpretrain)')
    parser.add_argument('checkpoint', help='checkpoint of that model (file or URL), e.g. work_dirs/.../epoch_12.pth')
    parser.add_argument('inputs', nargs='+', help='image files, folders of images and video files')
    parser.add_argument('--out-dir', required=True, help='where vis/ and preds/ are written')
    parser.add_argument('--score-thr', type=float,
                        help=f'detection only: the lowest score of the boxes drawn (default {DEFAULT_SCORE_THR}); the '
                        'JSON keeps every box of the model\'s test_cfg. Refused for segmentors and classifiers, '
                        'which have no scored boxes')
    add_inference_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        written = run_inference(args.config, args.checkpoint, args.inputs, args.out_dir, device=args.device,
                                score_thr=args.score_thr, cfg_options=args.cfg_options)
    videos = sum(picture.endswith('.mp4') for picture, _ in written)
    print(f'\n{len(written) - videos} pictures and {videos} videos in {args.out_dir}/vis, {len(written)} JSON files '
          f'in {args.out_dir}/preds')


if __name__ == '__main__':
    main()
