"""Speed and peak memory of mmmetaformer beside other implementations of the same models, measured in one run.

    python tools/benchmark.py                          # backbones vs timm: inference and training steps
    python tools/benchmark.py --modes train --models caformer_s18 --batch-size 16
    python tools/benchmark.py --modes whole            # RetinaNet and Semantic FPN vs mmpretrain's PoolFormer
    python tools/benchmark.py --modes whole --whole-models retinanet --whole-size 512 640 --compile
    python tools/benchmark.py --onnx                   # onnxruntime vs PyTorch: classifier, segmentor, detector
    python tools/benchmark.py --device cuda --modes dense --models caformer_s18   # four stages, 2x3x800x1333
    python tools/benchmark.py --modes startup --device cpu   # form timing at start-up against a training step

Modes: ``inference`` and ``train`` compare backbones with timm (same weights; a training step is forward, backward
and AdamW); ``dense`` compares the four-stage training step at the detectors' input size (2x3x800x1333 unless
``--whole-size``) with timm's ``features_only`` model; ``whole`` compares whole detectors/segmentors
(``--whole-models``, at their published input sizes unless ``--whole-size``) with the same model on mmpretrain's
PoolFormer; ``startup`` compares the time our first training step spends timing the fast paths' forms with one
training step (``--models``; a ratio above 1: less than one step). The two sides alternate in one process and the
median step is reported, with each side's peak memory during a step. ``--compile`` adds torch.compile rows,
``--compile-blocks`` rows of our backbone with ``compile_blocks=True`` against eager timm; on a GPU, fp16 and bf16
autocast rows run channels-last. See ``mmmetaformer/apis/benchmark.py``.
"""
import argparse

import torch

from mmmetaformer.apis import benchmark
from mmmetaformer.apis.benchmark import MODES, PUBLISHED_SIZES, TIMM_MODELS, Options, Setting
from mmmetaformer.utils.cli import exit_on_user_error


def settings(device: str, amp: bool, compile_too: bool, compile_blocks: bool, precisions, backend: str = 'inductor'):
    """The rows to run: fp32 eager on each device; CPU bf16 autocast with --amp; GPU fp16/bf16 autocast
    channels-last always; each also compiled with --compile, and with our blocks compiled with --compile-blocks
    (``torch.compile`` backend ``backend``); only the ``precisions`` asked for."""
    devices = ['cpu', 'cuda'] if device == 'all' else [device]
    for dev in devices:
        if dev == 'cuda' and not torch.cuda.is_available():
            continue
        variants = [Setting(dev)]
        if dev == 'cpu' and amp:
            variants.append(Setting(dev, 'bf16'))
        if dev == 'cuda':
            variants += [Setting(dev, precision, channels_last=True) for precision in ('fp16', 'bf16')]
        for setting in (variant for variant in variants if variant.precision in precisions):
            yield setting
            if compile_too:
                yield Setting(setting.device, setting.precision, setting.channels_last, compiled=True,
                              compile_backend=backend)
            if compile_blocks:
                yield Setting(setting.device, setting.precision, setting.channels_last, compiled_blocks=True,
                              compile_backend=backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--modes', nargs='+', choices=sorted(MODES), default=['inference', 'train'])
    parser.add_argument('--models', nargs='+', default=TIMM_MODELS, help='backbones (inference/train modes)')
    parser.add_argument('--whole-models', nargs='+', choices=sorted(PUBLISHED_SIZES),
                        default=['retinanet', 'semantic_fpn'])
    parser.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all')
    parser.add_argument('--batch-size', type=int, default=8, help='backbone batch')
    parser.add_argument('--size', type=int, default=224, help='backbone input size')
    parser.add_argument('--whole-batch-size', type=int, default=2)
    parser.add_argument('--whole-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='whole-model input size (default: published, 800x1333 COCO, 512x512 ADE20K)')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--amp', action='store_true', help='also bf16 autocast rows on the CPU')
    parser.add_argument('--compile', action='store_true', help='also torch.compile rows (both sides compiled)')
    parser.add_argument('--compile-blocks', action='store_true',
                        help='also rows with our backbone built with compile_blocks=True (timm eager)')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend of the compiled rows (default inductor; aot_eager compiles fast)')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', 'fp16', 'bf16'], default=['fp32', 'fp16', 'bf16'],
                        help='only these rows (fp16/bf16: autocast rows, on the GPU or with --amp)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory step')
    parser.add_argument('--steady-heap', action='store_true',
                        help='make glibc keep freed memory for reuse (mallopt), so that neither side pays for fresh '
                        'pages and the ratios do not depend on the rows that ran before')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='also print the N operators that take the most time in each side\'s step')
    parser.add_argument('--onnx', action='store_true', help='instead: the exported ONNX graphs in onnxruntime '
                        'against PyTorch on the CPU (a classifier at --size, a segmentor and a detector at '
                        '--whole-size or their published sizes; --threads, --iters, --warmup apply)')
    args = parser.parse_args()
    if args.onnx:
        from mmmetaformer.export.onnx_benchmark import onnx_models, print_onnx_comparison
        with exit_on_user_error():
            print_onnx_comparison(args.threads, args.iters, args.warmup, onnx_models(args.size, args.whole_size))
        return

    torch.set_num_threads(args.threads)
    if args.steady_heap:
        with exit_on_user_error():
            benchmark.keep_freed_memory()
    options = Options(models=args.models, whole_models=args.whole_models, batch_size=args.batch_size,
                      size=args.size, whole_batch_size=args.whole_batch_size,
                      whole_size=tuple(args.whole_size) if args.whole_size else None, iters=args.iters,
                      warmup=args.warmup, memory=not args.no_memory, profile=args.profile)
    print(f'torch {torch.__version__}, {args.threads} CPU threads; backbones: batch {args.batch_size}, '
          f'{args.size}x{args.size}; whole models: batch {args.whole_batch_size}; img/s (median step), peak MiB; '
          f'heap: {"freed memory kept (--steady-heap)" if args.steady_heap else "the C library defaults"}')
    print(benchmark.HEADER, flush=True)
    with exit_on_user_error():
        for setting in settings(args.device, args.amp, args.compile, args.compile_blocks, args.precisions,
                                args.compile_backend):
            for mode in args.modes:
                for row in MODES[mode](options, setting):
                    print(benchmark.format_row(row), flush=True)


if __name__ == '__main__':
    main()
