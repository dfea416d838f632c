from .startup_checks import StartupCheckError, StartupChecksHook, check_run_settings

__all__ = ['StartupCheckError', 'StartupChecksHook', 'check_run_settings']
