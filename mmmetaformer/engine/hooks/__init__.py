from .preemption import PreemptionHook, checkpoint_to_continue
from .startup_checks import StartupCheckError, StartupChecksHook, check_run_settings

__all__ = ['PreemptionHook', 'StartupCheckError', 'StartupChecksHook', 'check_run_settings', 'checkpoint_to_continue']
