"""Export a classifier, segmentor or detector of any config in configs/ to ONNX, and optionally check the file in
onnxruntime against the PyTorch model.

    python tools/export_onnx.py configs/mmseg/fpn_poolformer_s12_40k_ade20k.py work_dirs/.../iter_40000.pth \\
        --out fpn_poolformer_s12.onnx --dynamic --verify --image demo.jpg

The graph takes ``input``: float32 (N, 3, H, W), the image as the config's test pipeline packs it (resized,
unnormalised, channel order as loaded); normalisation, channel flip and padding are inside. Outputs: classifiers
``scores`` (probabilities), segmentors ``seg_logits`` at input size, detectors ``dets`` [x1, y1, x2, y2, score] and
``labels`` (Mask R-CNN also ``masks``), all as ``predict(..., rescale=False)`` gives them
(docs/en/user_guides/deployment.md, "The graph").
--verify also checks that the outputs have the shapes the graph declares; ``--provider cuda`` runs the check on
onnxruntime's CUDA execution provider.

Default input size (--shape): the size of --image after the test pipeline; else the test pipeline's fixed size
where it has one (224 or 384 for the classifiers), else 512x512 for segmentors and 800x1344 for detectors.
"""
import argparse
import os.path as osp
import sys

from mmmetaformer.utils.cli import add_cfg_options


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint of this config\'s model (file or URL)')
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                        help='input height and width (default: the size of --image after the test pipeline, else '
                        'the test pipeline\'s fixed size, else 512 512 for segmentors, 800 1344 for detectors); '
                        'with --dynamic only the size traced')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic H and W (and N where the model allows); refused for RandFormer')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset version (default 17)')
    add_cfg_options(parser)
    parser.add_argument('--verify', action='store_true',
                        help='run the file in onnxruntime and the PyTorch model on the same input, print the '
                        'largest differences, exit 1 beyond tolerance')
    parser.add_argument('--image', help='with --verify: an image file, put through the config\'s test pipeline '
                        '(default: a random image)')
    parser.add_argument('--provider', choices=('cpu', 'cuda'), default='cpu',
                        help='with --verify: the onnxruntime execution provider that runs the file (cuda needs '
                        'onnxruntime-gpu; default cpu)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.image and not args.verify:
        sys.exit('error: --image is the input of --verify; add --verify')
    if args.image and not osp.isfile(args.image):
        sys.exit(f'error: image {args.image} does not exist')
    if args.provider != 'cpu' and not args.verify:
        sys.exit('error: --provider is the onnxruntime provider of --verify; add --verify')
    from mmmetaformer.export.exporter import (
        DEFAULT_OPSET,
        default_input_shape,
        export_onnx,
        prepare,
        quiet_mm_logs,
    )
    quiet_mm_logs()
    from mmmetaformer.export.verify import check_provider, load_image, verify_inputs, verify_onnx
    from mmmetaformer.utils.cli import exit_on_user_error
    with exit_on_user_error():
        provider = check_provider(args.provider) if args.verify else None
        cfg, model, wrapper = prepare(args.config, args.checkpoint, args.cfg_options)
        image = load_image(cfg, args.image) if args.image else None
        if args.shape:
            shape = tuple(args.shape)
        else:  # the image's size after the test pipeline, else the config's
            shape = tuple(image.shape[-2:]) if image is not None else default_input_shape(cfg)
        export_onnx(wrapper, args.out, shape, args.dynamic, args.opset or DEFAULT_OPSET, config=args.config)
        inputs = verify_inputs(cfg, shape, args.dynamic, args.image, wrapper.dynamic_batch) if args.verify else []
    dynamic = 'dynamic H x W' + (' and N' if wrapper.dynamic_batch else '') if args.dynamic else 'fixed size'
    print(f'wrote {args.out}: input {shape[0]}x{shape[1]} ({dynamic}), outputs {", ".join(wrapper.output_names)}')
    agree = True
    for description, batch in inputs:
        with exit_on_user_error():  # e.g. the provider does not start
            report = verify_onnx(model, cfg, args.out, batch, args.provider)
        print(f'onnxruntime ({provider}) vs PyTorch on {description}:\n{report}')
        agree = agree and report.ok
    sys.exit(0 if agree else 1)


if __name__ == '__main__':
    main()
