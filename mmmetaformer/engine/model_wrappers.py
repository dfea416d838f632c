"""Model wrappers for distributed runs on machines without GPUs."""
import torch
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

from ..registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """Device-less DistributedDataParallel for processes training on the CPU (gloo), as ``--launcher pytorch`` uses
    without GPUs.

    SyncBN only runs on GPUs (DDP refuses a CPU model with it), so its layers (e.g. in mmseg's decode heads) are
    reverted to BatchNorm with per-process statistics, as mmengine itself does for single-process runs. GPU runs
    keep SyncBN: they never get this wrapper.
    """

    def __init__(self, module: torch.nn.Module, **kwargs) -> None:
        if any(type(layer).__name__ == 'SyncBatchNorm' for layer in module.modules()):  # torch's or mmcv's
            print_log('SyncBN needs GPUs: its layers are reverted to BatchNorm (statistics per process) for this CPU '
                      'distributed run.', logger='current')
        kwargs['device_ids'] = None  # mmengine passes [LOCAL_RANK], a GPU index
        super().__init__(module=revert_sync_batchnorm(module), **kwargs)
