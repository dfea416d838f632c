"""onnxruntime against PyTorch on the CPU: the same model, the same input, in one process
(``tools/benchmark.py --onnx``).

The PyTorch side is what a user runs without the export: the model's data preprocessor and
``predict(..., rescale=False)`` under ``torch.inference_mode``; the onnxruntime side is the exported graph (fixed
size, CPU provider, graph optimisations on) from the raw image to the same outputs. Both use the same number of
threads (onnxruntime's idle threads do not spin); runs alternate so that drifting machine load hits both alike;
the median per-image time is reported.
"""
import os
import os.path as osp
import tempfile
from typing import Dict, List, Tuple

import torch

from ..apis.benchmark import median_step_times
from ..utils.package_files import config_file

# (label, config name relative to configs/, input (H, W)): a backbone with its classifier head, a segmentor, a
# detector.
DEFAULT_MODELS: List[Tuple[str, str, Tuple[int, int]]] = [
    ('PoolFormer-S12 classifier', 'mmpretrain/poolformer_s12_in1k.py', (224, 224)),
    ('Semantic FPN PoolFormer-S12', 'mmseg/fpn_poolformer_s12_40k_ade20k.py', (512, 512)),
    ('RetinaNet PoolFormer-S12', 'mmdet/retinanet_poolformer_s12_1x.py', (800, 1344)),
]


def compare_onnx_runtime(config: str, shape: Tuple[int, int], threads: int = 2, iters: int = 10,
                         warmup: int = 2) -> Dict[str, float]:
    """Seconds per image of PyTorch and of onnxruntime for the model (random weights) of ``config`` (a file, or a
    name relative to the packaged configs/ such as ``'mmdet/retinanet_poolformer_s12_1x.py'``) at ``shape``."""
    import onnxruntime as ort
    from mmengine.config import Config

    from . import build_export_model
    from .exporter import build_model, example_input, export_onnx
    from .verify import torch_outputs
    torch.set_num_threads(threads)
    cfg = Config.fromfile(config if osp.isfile(config) else config_file(config))
    model = build_model(cfg)
    x = example_input(shape)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'model.onnx')
        export_onnx(build_export_model(model, cfg), path, shape, config=config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle onnxruntime threads would otherwise spin and take the CPU from the PyTorch runs in between
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feed = {'input': x.numpy()}

    def run_torch():
        with torch.inference_mode():
            torch_outputs(model, cfg, x)

    return median_step_times({'pytorch': run_torch, 'onnxruntime': lambda: session.run(None, feed)}, iters, warmup)


def print_onnx_comparison(threads: int = 2, iters: int = 10, warmup: int = 2,
                          models: List[Tuple[str, str, Tuple[int, int]]] = DEFAULT_MODELS) -> None:
    """Print the comparison for each (label, config, shape) of ``models``."""
    import onnxruntime as ort

    from .exporter import quiet_mm_logs
    quiet_mm_logs()
    print(f'torch {torch.__version__}, onnxruntime {ort.__version__}, {threads} CPU threads, batch 1, '
          f'random weights; ms per image (median of {iters})')
    print(f"{'model':<30}{'input':>10}{'PyTorch ms':>12}{'ORT ms':>10}{'ORT speed-up':>14}")
    for label, config, shape in models:
        seconds = compare_onnx_runtime(config, shape, threads, iters, warmup)
        speedup = seconds['pytorch'] / seconds['onnxruntime']
        print(f"{label:<30}{f'{shape[0]}x{shape[1]}':>10}{seconds['pytorch'] * 1e3:>12.1f}"
              f"{seconds['onnxruntime'] * 1e3:>10.1f}{speedup:>13.2f}x", flush=True)
