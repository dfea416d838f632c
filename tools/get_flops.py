"""Parameters and MACs of any config's model, or of every published classifier beside the published numbers.

    python tools/get_flops.py CONFIG                   # at the library's published size: 512x2048 (mmseg),
                                                       # H=800 W=1333 (mmdet), 224x224 (mmpretrain)
    python tools/get_flops.py CONFIG --shape 512 512   # height width (one number: a square)
    python tools/get_flops.py                          # all 28 classifiers from configs/mmpretrain, beside the papers
    python tools/get_flops.py --models caformer_s18 --shape 384

Parameters include frozen ones (RandFormer's random matrices), as the published counts do. MACs are counted by
``torch.utils.flop_counter`` on ``forward(mode='tensor')`` of one image (see :mod:`mmmetaformer.utils.complexity`):
convolutions, matrix products and attention; element-wise work (norms, pooling, activations) is not counted, as in
the papers.
"""
import argparse
import os.path as osp

from mmengine.config import Config

from mmmetaformer.utils.complexity import build_model_from_config, count_params_and_macs, input_shape

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# name: (params in M, including RandFormer's frozen matrices; MACs in G), from the papers and official code.
PUBLISHED = {
    'poolformer_s12': (11.92, '1.8'), 'poolformer_s24': (21.39, '3.4'), 'poolformer_s36': (30.86, '5.0'),
    'poolformer_m36': (56.17, '8.8'), 'poolformer_m48': (73.47, '11.6'),
    'identityformer_s12': (11.89, '1.8'), 'identityformer_s24': (21.34, '3.4'),
    'identityformer_s36': (30.79, '5.0'), 'identityformer_m36': (56.08, '8.8'), 'identityformer_m48': (73.35, '11.5'),
    'randformer_s12': (12.13, '1.9'), 'randformer_s24': (21.81, '3.5'), 'randformer_s36': (31.50, '5.2'),
    'randformer_m36': (56.78, '9.0'), 'randformer_m48': (74.29, '11.9'),
    'poolformerv2_s12': (11.89, '1.8'), 'poolformerv2_s24': (21.34, '3.4'), 'poolformerv2_s36': (30.79, '5.0'),
    'poolformerv2_m36': (56.08, '8.8'), 'poolformerv2_m48': (73.35, '11.5'),
    'convformer_s18': (26.77, '3.9'), 'convformer_s36': (40.01, '7.6'), 'convformer_m36': (57.05, '12.8'),
    'convformer_b36': (99.88, '22.6'),
    'caformer_s18': (26.34, '4.1'), 'caformer_s36': (39.30, '8.0'), 'caformer_m36': (56.20, '13.2'),
    'caformer_b36': (98.75, '23.2'),
}
# MACs in G of the models fine-tuned at 384 (same parameters).
PUBLISHED_MACS_384 = {
    'convformer_s18': '11.6', 'convformer_s36': '22.4', 'convformer_m36': '37.7', 'convformer_b36': '66.5',
    'caformer_s18': '13.4', 'caformer_s36': '26.0', 'caformer_m36': '42.0', 'caformer_b36': '72.2',
}


def print_published_table(names, size: int) -> None:
    print(f"{'model':<20}{'params (M)':>11}{'trainable':>11}{'published':>11}{'MACs (G)':>10}{'published':>11}")
    for name in names:
        config = osp.join(ROOT, 'configs', 'mmpretrain', f'{name}_in1k.py')
        params, macs = count_params_and_macs(config, size)
        trainable = sum(p.numel() for p in build_model_from_config(config, 'meta').parameters() if p.requires_grad)
        published_params, published_macs = PUBLISHED.get(name, (float('nan'), '-'))
        if size != 224:
            published_macs = PUBLISHED_MACS_384.get(name, '-') if size == 384 else '-'
        print(f'{name:<20}{params / 1e6:>11.2f}{trainable / 1e6:>11.2f}{published_params:>11.2f}'
              f'{macs / 1e9:>10.2f}{published_macs:>11}', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='an mmdet, mmseg or mmpretrain config (without: the table of the '
                        '28 published classifiers)')
    parser.add_argument('--shape', '--size', type=int, nargs='+', metavar='SIZE',
                        help='input height and width, or one size for a square')
    parser.add_argument('--models', nargs='+', default=list(PUBLISHED), help='without a config: the classifiers')
    args = parser.parse_args()
    if args.shape is not None and len(args.shape) > 2:
        parser.error(f'--shape takes one size or height and width, got {args.shape}')
    if args.config is None:
        if args.shape is not None and len(set(args.shape)) != 1:
            parser.error('the classifier table takes a square input: --shape SIZE')
        print_published_table(args.models, args.shape[0] if args.shape else 224)
        return
    cfg = Config.fromfile(args.config)
    shape = input_shape(cfg, args.shape)
    params, macs = count_params_and_macs(cfg, shape)
    print(f'{args.config}\ninput shape: {shape[0]}x{shape[1]} (height x width)\n'
          f'params: {params / 1e6:.2f} M ({params})\nMACs: {macs / 1e9:.2f} G ({macs})')


if __name__ == '__main__':
    main()
