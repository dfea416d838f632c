"""Test a checkpoint of any mmdet / mmseg / mmpretrain config (the config's ``default_scope`` picks the library)."""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict, DictAction

from mmmetaformer.runtime import build_runner, finish_distributed, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (any layout tools/convert_checkpoint.py writes)')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='write pictures of the predictions to this folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int)
    return parser.parse_args()


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Turn on the library's visualization hook so that it writes its pictures under ``show_dir``."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        hook = cfg.default_hooks.visualization = ConfigDict(type='VisualizationHook')
    hook_type = hook.get('type', '')
    if hook_type.endswith('DetVisualizationHook'):
        hook.update(draw=True, test_out_dir=show_dir)
    elif hook_type.endswith('SegVisualizationHook'):
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir
    else:  # mmpretrain's VisualizationHook
        hook.update(enable=True, out_dir=show_dir)


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        sys.exit(f'error: checkpoint {args.checkpoint} does not exist')
    if args.show_dir:
        enable_visualization(cfg, osp.abspath(args.show_dir))
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            sys.exit('error: --out must be a .pkl or .pickle file')
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]) + \
            [dict(type='DumpResults', out_file_path=args.out)]
    build_runner(cfg, ['test']).test()
    finish_distributed()


if __name__ == '__main__':
    main()
