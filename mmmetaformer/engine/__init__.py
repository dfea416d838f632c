"""Training-loop pieces that mmengine lacks: the crash-safe runner, the CPU optimizer and model wrappers, the
layer-wise learning-rate decay constructor, the start-up checks of a run and the stop on pre-emption signals."""
from .hooks import PreemptionHook, StartupCheckError, StartupChecksHook, check_run_settings
from .model_wrappers import CPUDistributedDataParallel
from .optimizers import AutocastOptimWrapper, LayerDecayOptimizerConstructor
from .runner import CrashSafeRunner, latest_complete_checkpoint

__all__ = ['AutocastOptimWrapper', 'CPUDistributedDataParallel', 'CrashSafeRunner', 'LayerDecayOptimizerConstructor',
           'PreemptionHook', 'StartupCheckError', 'StartupChecksHook', 'check_run_settings',
           'latest_complete_checkpoint']
