"""Parameters and MACs at 224x224 of every published variant, beside the published numbers.

    python tools/get_flops.py                  # all 28 classifiers from configs/mmpretrain
    python tools/get_flops.py --models caformer_s18 --size 384

Each model is built from its mmpretrain config (backbone and official head). Parameters include RandFormer's frozen
random matrices, as the published counts do. MACs are counted by ``torch.utils.flop_counter`` (convolutions,
matrix products, attention); element-wise work (norms, pooling, activations) is not counted, as in the papers.
Attention runs on PyTorch's math backend while counting: the counter has no formula for the fused CPU kernel.
"""
import argparse
import os.path as osp

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

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


def build_classifier(name: str) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    import mmmetaformer.integrations.mmpretrain  # noqa: F401  (registers the head)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmpretrain', f'{name}_in1k.py'))
    init_default_scope('mmpretrain')
    cfg.model.backbone.pop('init_cfg', None)
    return MODELS.build(cfg.model).eval()


def count(name: str, size: int):
    model = build_classifier(name)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.randn(1, 3, size, size), mode='tensor')
    return params, trainable, counter.get_total_flops() / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(PUBLISHED))
    parser.add_argument('--size', type=int, default=224)
    args = parser.parse_args()
    print(f"{'model':<20}{'params (M)':>11}{'trainable':>11}{'published':>11}{'MACs (G)':>10}{'published':>11}")
    for name in args.models:
        params, trainable, macs = count(name, args.size)
        published_params, published_macs = PUBLISHED.get(name, (float('nan'), '-'))
        if args.size != 224:
            published_macs = PUBLISHED_MACS_384.get(name, '-') if args.size == 384 else '-'
        print(f'{name:<20}{params / 1e6:>11.2f}{trainable / 1e6:>11.2f}{published_params:>11.2f}'
              f'{macs / 1e9:>10.2f}{published_macs:>11}', flush=True)


if __name__ == '__main__':
    main()
