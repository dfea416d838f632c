"""The four stage outputs of the backbone of any config (detector, segmentor or classifier) drawn over an image.

    python tools/vis_featmap.py IMAGE CONFIG [CHECKPOINT] --save-path featmaps.png [--channel-reduction select_max]

The image goes through the config's test pipeline and data preprocessor; each stage's output (before any output
norm) is reduced over its channels (mean, or the channel with the highest mean activation) and drawn over that
input with mmengine's Visualizer.draw_featmap, in a 2 x 2 grid titled with stage, channels, size and stride.
Without CHECKPOINT the model starts as its config says (init_cfg, e.g. the ImageNet weights of the backbone).
"""
import argparse

from mmmetaformer.apis.inference import add_inference_options
from mmmetaformer.utils.cli import exit_on_user_error
from mmmetaformer.visualization import CHANNEL_REDUCTIONS, draw_feature_maps


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='mmdet, mmseg or mmpretrain config')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint of the whole model (file or URL; optional)')
    parser.add_argument('--save-path', required=True, help='the picture to write (e.g. featmaps.png)')
    parser.add_argument('--channel-reduction', default='squeeze_mean', choices=CHANNEL_REDUCTIONS,
                        help='squeeze_mean: mean over channels; select_max: the channel with the highest mean')
    add_inference_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with exit_on_user_error():
        draw_feature_maps(args.image, args.config, args.save_path, checkpoint=args.checkpoint,
                          channel_reduction=args.channel_reduction, device=args.device, cfg_options=args.cfg_options)
    print(f'feature maps of the four stages: {args.save_path}')


if __name__ == '__main__':
    main()
