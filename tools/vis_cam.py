"""Class activation map of an mmpretrain MetaFormer classifier on one image (the grad-cam package).

    python tools/vis_cam.py IMAGE CONFIG CHECKPOINT --save-path cam.png [--method GradCAM] [--target-category N]

The image goes through the config's test pipeline (resize, crop) and normalisation; the map is drawn over that
crop, the picture the network saw. The default target layer, for all six families, is the last block of the last
stage (backbone.stages.3.blocks.-1), whose output the classifier pools; MetaFormer layers are channels-last
(B, H, W, C) and are turned to (B, C, H, W) for the CAM library.
"""
import argparse

from mmmetaformer.apis.inference import add_inference_options
from mmmetaformer.utils.cli import exit_on_user_error
from mmmetaformer.visualization import CAM_METHODS, DEFAULT_TARGET_LAYERS, draw_cam


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='mmpretrain classifier config, e.g. configs/mmpretrain/caformer_s18_in1k.py')
    parser.add_argument('checkpoint', help='its checkpoint (file or URL): an mmmetaformer checkpoint, or an official, '
                        'timm or mmpretrain classifier file, converted on loading')
    parser.add_argument('--save-path', required=True, help='the overlay picture to write (e.g. cam.png)')
    parser.add_argument('--method', default='GradCAM', choices=list(CAM_METHODS), help='CAM method (default GradCAM)')
    parser.add_argument('--target-layers', nargs='+', default=list(DEFAULT_TARGET_LAYERS),
                        help='dotted module paths, negative indices from the end (default: %(default)s); a stage '
                        '(backbone.stages.2) stands for its output')
    parser.add_argument('--target-category', type=int,
                        help='class index to explain (default: the predicted class)')
    add_inference_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        result = draw_cam(args.image, args.config, args.checkpoint, args.save_path, method=args.method,
                          target_layers=args.target_layers, target_category=args.target_category,
                          device=args.device, cfg_options=args.cfg_options)
    name = f' ({result["class_name"]})' if result['class_name'] else ''
    print(f'{args.method} of class {result["category"]}{name}, score {result["score"]:.3f}, at '
          f'{", ".join(result["target_layers"])}: {args.save_path}')


if __name__ == '__main__':
    main()
