"""Training-loop pieces that mmengine lacks: the crash-safe runner, the CPU optimizer and model wrappers, the
layer-wise learning-rate decay constructor and the start-up checks of a run."""
from .hooks import StartupCheckError, check_run_settings
from .optimizers import LayerDecayOptimizerConstructor
from .runner import AutocastOptimWrapper, CPUDistributedDataParallel, CrashSafeRunner, latest_complete_checkpoint

__all__ = ['AutocastOptimWrapper', 'CPUDistributedDataParallel', 'CrashSafeRunner', 'LayerDecayOptimizerConstructor',
           'StartupCheckError', 'check_run_settings', 'latest_complete_checkpoint']
