"""Convert a MetaFormer checkpoint of any known layout to an mm checkpoint of a full classifier.

    python tools/convert_checkpoint.py poolformer_s12.pth.tar poolformer_s12_mm.pth

Input layouts: sail-sg PoolFormer v1, sail-sg MetaFormer baselines, timm, mmpretrain PoolFormer, mmmetaformer, and
whole PoolFormer detectors/segmentors (official dense-prediction models, backbone with norm0/2/4/6).
Output: ``{'state_dict': {'backbone.*', 'head.*'}, 'meta': ...}``, loadable by the configs in configs/mmpretrain
(as a test checkpoint) and, through ``init_cfg`` or ``load_from``, by the mmdet and mmseg configs; a whole
dense-prediction model keeps its neck and heads, so it can be tested with the matching mmdet/mmseg config.
"""
import argparse
import os
import os.path as osp

import torch

from mmmetaformer.models import identify_arch
from mmmetaformer.models.utils import read_checkpoint, to_canonical
from mmmetaformer.utils.cli import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='source checkpoint (path or URL)')
    parser.add_argument('dst', help='output .pth file')
    args = parser.parse_args()

    with exit_on_user_error():  # unreadable, failed download, unknown layout
        state_dict = read_checkpoint(args.src)
        canonical, unused, layout = to_canonical(state_dict)
    matches = identify_arch(canonical)
    if not matches:
        print('warning: the backbone matches none of the published sizes (a custom arch?)')
    if layout == 'sail_v1_dense':  # a whole detector/segmentor: its neck and heads keep their mm names
        canonical.update((key, state_dict[key]) for key in unused)
        print(f'kept as they are (the rest of the dense-prediction model): {len(unused)} tensors')
    else:
        for key in unused:
            print(f'dropped (not part of the model): {key}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    described = ' or '.join(f'{family} {arch}' for family, arch in matches) or 'unknown arch'
    meta = dict(source=args.src, source_layout=layout, model=described)
    torch.save(dict(state_dict=canonical, meta=meta), args.dst)
    print(f'{args.src} ({layout} layout, {described}): wrote {len(canonical)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
