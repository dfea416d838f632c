"""Throughput of mmmetaformer's backbones beside timm's implementation of the same models, measured in one run.

    python tools/benchmark.py                       # CPU (and GPU when present), the four models timm also has
    python tools/benchmark.py --models caformer_s18 --batch-size 16 --threads 2 --device cpu
    python tools/benchmark.py --onnx                # onnxruntime vs PyTorch: classifier, segmentor, detector

Both sides compute the four stages of the same model (timm ``forward_features``, ours ``out_indices=(3,)`` without
output norm), from the same random weights, in eval mode under ``torch.inference_mode`` (inference) or with a
backward pass and an SGD step (training). Runs alternate between the two implementations so that drifting machine
load hits both alike; the median per-batch time is reported.
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch

from mmmetaformer.models import FAMILIES
DEFAULT_MODELS = ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18']


def build_pair(name: str, device: str):
    import timm
    from mmmetaformer.checkpoint import to_canonical
    family, arch = name.split('_')
    if name not in timm.list_models():
        raise SystemExit(f'timm has no {name} to compare with (timm has PoolFormer, PoolFormerV2, ConvFormer and '
                         f'CAFormer, not IdentityFormer or RandFormer)')
    reference = timm.create_model(name, pretrained=False, num_classes=0).to(device)
    ours = FAMILIES[family](arch=arch, out_indices=(3, ), norm_outputs=False)
    canonical, _, _ = to_canonical(reference.state_dict())
    ours.load_state_dict({k[len('backbone.'):]: v for k, v in canonical.items() if k.startswith('backbone.')})
    return ours.to(device), reference, (lambda x: ours(x)[0]), reference.forward_features


def time_step(step: Callable[[], None], device: str) -> float:
    if device == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_step(module: torch.nn.Module, forward: Callable, x: torch.Tensor, train: bool, amp: bool) -> Callable:
    device_type = x.device.type
    dtype = torch.float16 if device_type == 'cuda' else torch.bfloat16
    if not train:
        module.eval()

        def infer():
            with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=amp):
                forward(x)
        return infer
    module.train()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1e-6)

    def train_step():
        with torch.autocast(device_type, dtype=dtype, enabled=amp):
            loss = forward(x).float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return train_step


def compare(name: str, device: str, batch_size: int, size: int, iters: int, warmup: int, train: bool,
            amp: bool) -> Dict[str, float]:
    ours, reference, ours_forward, reference_forward = build_pair(name, device)
    x = torch.randn(batch_size, 3, size, size, device=device)
    steps = {'mmmetaformer': make_step(ours, ours_forward, x, train, amp),
             'timm': make_step(reference, reference_forward, x, train, amp)}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {key: [] for key in steps}
    for _ in range(iters):
        for key, step in steps.items():
            times[key].append(time_step(step, device))
    return {key: batch_size / statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS)
    parser.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--modes', nargs='+', choices=['inference', 'train'], default=['inference', 'train'])
    parser.add_argument('--amp', action='store_true', help='bf16 (CPU) / fp16 (GPU) autocast')
    parser.add_argument('--onnx', action='store_true', help='instead: the exported ONNX graphs in onnxruntime '
                        'against PyTorch on the CPU (a classifier, a segmentor, a detector; --threads, --iters, '
                        '--warmup apply)')
    args = parser.parse_args()
    if args.onnx:
        from mmmetaformer.export.benchmark import print_onnx_comparison
        print_onnx_comparison(args.threads, args.iters, args.warmup)
        return

    torch.set_num_threads(args.threads)
    devices = ['cpu', 'cuda'] if args.device == 'all' else [args.device]
    devices = [d for d in devices if d == 'cpu' or torch.cuda.is_available()]
    print(f'torch {torch.__version__}, batch {args.batch_size}, {args.size}x{args.size}, '
          f'{args.threads} CPU threads, amp={args.amp}')
    print(f"{'model':<18}{'device':<7}{'mode':<10}{'ours img/s':>12}{'timm img/s':>12}{'ours/timm':>11}")
    for device in devices:
        for name in args.models:
            for mode in args.modes:
                rates = compare(name, device, args.batch_size, args.size, args.iters, args.warmup,
                                mode == 'train', args.amp)
                ratio = rates['mmmetaformer'] / rates['timm']
                print(f"{name:<18}{device:<7}{mode:<10}{rates['mmmetaformer']:>12.1f}{rates['timm']:>12.1f}"
                      f'{ratio:>11.2f}', flush=True)


if __name__ == '__main__':
    main()
