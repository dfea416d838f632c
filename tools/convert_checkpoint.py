"""Convert a MetaFormer checkpoint of any known layout to an mm checkpoint of a full classifier.

    python tools/convert_checkpoint.py poolformer_s12.pth.tar poolformer_s12_mm.pth

Input layouts: sail-sg PoolFormer v1, sail-sg MetaFormer baselines, timm, mmpretrain PoolFormer, mmmetaformer.
Output: ``{'state_dict': {'backbone.*', 'head.*'}, 'meta': ...}``, loadable by the configs in configs/mmpretrain
(as a test checkpoint) and, through ``init_cfg`` or ``load_from``, by the mmdet and mmseg configs.
"""
import argparse
import os
import os.path as osp

import torch

from mmmetaformer.checkpoint import identify_arch, read_checkpoint, to_canonical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='source checkpoint (path or URL)')
    parser.add_argument('dst', help='output .pth file')
    args = parser.parse_args()

    canonical, unused, layout = to_canonical(read_checkpoint(args.src))
    matches = identify_arch(canonical)
    if not matches:
        print('warning: the backbone matches none of the published sizes (a custom arch?)')
    for key in unused:
        print(f'dropped (not part of the model): {key}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    described = ' or '.join(f'{family} {arch}' for family, arch in matches) or 'unknown arch'
    meta = dict(source=args.src, source_layout=layout, model=described)
    torch.save(dict(state_dict=canonical, meta=meta), args.dst)
    print(f'{args.src} ({layout} layout, {described}): wrote {len(canonical)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
