"""The main job on an embedded default: RetinaNet-PoolFormer-S12 on a generated COCO-format data set.

    python tools/demo.py

1. generates ``data/demo_shapes/`` (drawn squares, circles and triangles with boxes and instance masks, COCO format,
   a training and a held-out validation split), unless it is there already with the requested sizes;
2. trains ``configs/mmdet/demo/retinanet_poolformer_s12_shapes.py`` with ``tools/train.py`` (the main RetinaNet
   config with 3 classes and a CPU-sized schedule; the backbone starts from scratch, no download needed);
3. evaluates COCO mAP on the held-out split with ``tools/test.py``;
4. writes ``<work-dir>/predictions.png`` (detections on validation images) and ``<work-dir>/loss_curve.png``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'mmdet', 'demo', 'retinanet_poolformer_s12_shapes.py')


def run(args, log_path: str) -> str:
    """Run a tool, streaming its output to the terminal and a log file; return the output."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    lines = []
    with open(log_path, 'w') as log, subprocess.Popen([sys.executable, '-u'] + args, cwd=ROOT, env=env,
                                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True) as process:
        for line in process.stdout:
            log.write(line)
            lines.append(line)
            shown = re.search(r'Epoch\((train|val|test)\).*|coco/bbox_mAP.*|Traceback.*|\w*Error: .*', line)
            if shown:
                print('  ' + shown.group(0).rstrip()[:200], flush=True)
    if process.returncode:
        sys.exit(f'{args[0]} failed (exit code {process.returncode}); full log: {log_path}')
    return ''.join(lines)


def plot_loss(work_dir: str, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    scalars = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    records = [json.loads(line) for path in scalars for line in open(path)]
    records = [r for r in records if 'loss' in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ('loss', 'loss_cls', 'loss_bbox'):
        ax.plot([r['iter'] for r in records], [r[key] for r in records], label=key)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title('RetinaNet-PoolFormer-S12 on demo shapes')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def split_size(data_root: str, split: str) -> int:
    """Number of images in a split of the data set (0 when it is not there)."""
    path = osp.join(data_root, 'annotations', f'instances_{split}.json')
    return len(json.load(open(path))['images']) if osp.exists(path) else 0


def plot_predictions(checkpoint: str, data_root: str, out: str, count: int = 6, score_thr: float = 0.3) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(CONFIG, checkpoint, device='cpu', cfg_options={'model.backbone.init_cfg': None})
    classes = model.dataset_meta['classes']
    listed = json.load(open(osp.join(data_root, 'annotations', 'instances_val.json')))['images']
    images = [osp.join(data_root, 'val', image['file_name']) for image in listed[:count]]
    fig, axes = plt.subplots(2, (count + 1) // 2, figsize=(3 * ((count + 1) // 2), 6))
    for ax, path in zip(axes.flat, images):
        result = inference_detector(model, path).pred_instances
        ax.imshow(plt.imread(path))
        for box, label, score in zip(result.bboxes, result.labels, result.scores):
            if score < score_thr:
                continue
            x0, y0, x1, y1 = box.tolist()
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color='lime', linewidth=1.5))
            ax.text(x0, y0, f'{classes[int(label)]} {score:.2f}', color='black', fontsize=7,
                    bbox=dict(facecolor='lime', alpha=0.8, pad=1, linewidth=0))
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'demo_shapes'))
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--train-images', type=int, default=400)
    parser.add_argument('--val-images', type=int, default=80)
    parser.add_argument('--epochs', type=int, help='train for fewer epochs than the config (a quick look)')
    args = parser.parse_args()
    args.data_root, args.work_dir = osp.abspath(args.data_root), osp.abspath(args.work_dir)  # tools run in ROOT
    start = time.time()
    os.makedirs(args.work_dir, exist_ok=True)

    from mmmetaformer.testing import make_coco_shapes
    sizes = (split_size(args.data_root, 'train'), split_size(args.data_root, 'val'))
    if sizes != (args.train_images, args.val_images):
        print(f'[demo] 1/4 generating {args.train_images} training and {args.val_images} validation images '
              f'in {args.data_root}', flush=True)
        make_coco_shapes(args.data_root, splits=(('train', args.train_images), ('val', args.val_images)))
    else:
        print(f'[demo] 1/4 using the data set in {args.data_root} ({sizes[0]} training, {sizes[1]} validation '
              f'images)', flush=True)

    root = args.data_root.rstrip('/') + '/'
    data_options = ['--cfg-options', f'train_dataloader.dataset.data_root={root}',
                    f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}',
                    f'val_evaluator.ann_file={root}annotations/instances_val.json',
                    f'test_evaluator.ann_file={root}annotations/instances_val.json']
    schedule = []
    if args.epochs:
        schedule = [f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
                    f'default_hooks.checkpoint.interval={args.epochs}']
    print('[demo] 2/4 training RetinaNet-PoolFormer-S12 with tools/train.py (progress below; a few minutes on a '
          'CPU)', flush=True)
    run(['tools/train.py', CONFIG, '--work-dir', args.work_dir] + data_options + schedule,
        osp.join(args.work_dir, 'train_output.log'))
    checkpoint = osp.join(args.work_dir, open(osp.join(args.work_dir, 'last_checkpoint')).read().strip())

    print('[demo] 3/4 evaluating COCO mAP on the held-out split with tools/test.py', flush=True)
    output = run(['tools/test.py', CONFIG, checkpoint, '--work-dir', args.work_dir] + data_options,
                 osp.join(args.work_dir, 'test_output.log'))
    found = re.findall(r'coco/bbox_mAP: ([\d.]+)', output)
    # mmdet reports no metric at all when the detector outputs no box (too short a training)
    result = f'{float(found[-1]):.3f}' if found else '0.000 (the detector output no boxes: train longer)'

    print('[demo] 4/4 drawing predictions and the loss curve', flush=True)
    predictions = osp.join(args.work_dir, 'predictions.png')
    loss_curve = osp.join(args.work_dir, 'loss_curve.png')
    plot_predictions(checkpoint, args.data_root, predictions)
    plot_loss(args.work_dir, loss_curve)
    print(f'[demo] done in {time.time() - start:.0f} s: COCO bbox mAP {result} on {args.val_images} held-out '
          f'images\n[demo] checkpoint {checkpoint}\n[demo] pictures {predictions}, {loss_curve}', flush=True)


if __name__ == '__main__':
    main()
