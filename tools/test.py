"""Test a checkpoint of any mmdet / mmseg / mmpretrain config (the config's ``default_scope`` picks the library)."""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict

from mmmetaformer.models.utils import check_checkpoint_path
from mmmetaformer.utils.cli import (
    add_shared_options,
    build_runner,
    enable_tta,
    exit_on_user_error,
    load_config,
    require_data,
    run_checked,
)
from mmmetaformer.utils.distributed import finish_distributed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a detector, segmentor or classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (any layout tools/convert_checkpoint.py writes)')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', help='save the predictions: a .pkl file (mmdet, mmpretrain) or a folder of '
                        'prediction maps (mmseg)')
    parser.add_argument('--show-dir', help='write pictures of the predictions to this folder')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation with the config\'s tta_pipeline '
                        'and tta_model (mmseg configs: multi-scale 0.5-1.75 + horizontal flip)')
    add_shared_options(parser)
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


def dump_results(cfg: Config, out: str) -> None:
    """``--out``: the predictions as each library saves them (mmdet: RLE masks, no ground truth; mmseg: the
    prediction maps as images in a folder; mmpretrain: a pickle of the predictions)."""
    scope = cfg.get('default_scope')
    if scope == 'mmseg':
        cfg.test_evaluator.update(output_dir=out, keep_results=True)
        return
    if not out.endswith(('.pkl', '.pickle')):
        sys.exit('error: --out must be a .pkl or .pickle file')
    evaluator = cfg.test_evaluator
    dump = dict(type='DumpDetResults' if scope == 'mmdet' else 'DumpResults', out_file_path=out)
    cfg.test_evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]) + [dump]


def main() -> None:
    args = parse_args()
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    with exit_on_user_error():
        require_data(cfg, ['test'])
    with exit_on_user_error():
        check_checkpoint_path(args.checkpoint)
    if args.show_dir:
        enable_visualization(cfg, osp.abspath(args.show_dir))
    if args.out:
        dump_results(cfg, args.out)
    if args.tta:
        with exit_on_user_error():
            enable_tta(cfg)
    run_checked(lambda: build_runner(cfg).test())  # the runner refuses a bad checkpoint too
    finish_distributed()


if __name__ == '__main__':
    main()
