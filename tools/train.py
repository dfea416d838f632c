"""Train any mmdet / mmseg / mmpretrain config (the config's ``default_scope`` picks the library)."""
import argparse
import sys

from mmmetaformer.utils.cli import (
    add_shared_options,
    build_runner,
    enable_amp,
    exit_on_user_error,
    load_config,
    require_data,
    run_checked,
)
from mmmetaformer.utils.distributed import finish_distributed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--amp', action='store_true', help='mixed precision (fp16 on GPU, bf16 on CPU)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from PATH, or without PATH from the last checkpoint in the work dir')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real total batch size over the config\'s base_batch_size')
    add_shared_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            sys.exit('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    with exit_on_user_error():
        require_data(cfg, ['train', 'val'])
    run_checked(build_runner(cfg).train)
    finish_distributed()


if __name__ == '__main__':
    main()
