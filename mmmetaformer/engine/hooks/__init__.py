from .startup_checks import StartupCheckError, check_run_settings

__all__ = ['StartupCheckError', 'check_run_settings']
