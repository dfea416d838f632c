"""The error types of problems a user can fix: a missing or unreadable file, a setting that cannot work, a
checkpoint of another model.

Every such problem raised by mmmetaformer is a :class:`UserError`; the tools print its message in one line and exit,
while any other exception (a bug, running out of memory) keeps its traceback. Each subclass also derives from the
built-in type that callers would expect (``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ``OSError``).
"""


class UserError(Exception):
    """A problem with what the user asked for or gave, explained by the message; nothing is wrong with the code."""


class InvalidSettingError(UserError, ValueError):
    """A setting that cannot work: a command-line option, a config value, an unknown name, a checkpoint that does
    not fit its model."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the user named and that does not exist."""


class FileAccessError(UserError, RuntimeError):
    """A file or URL that cannot be read, downloaded or written (not a checkpoint, no network, no permission)."""


class WorkDirInUseError(UserError, RuntimeError):
    """Another training run holds the lock of the work dir (two runs would mix their checkpoints and logs)."""


class DiskFullError(UserError, OSError):
    """A file could not be written because its disk is full; the message names the file, the bytes it needed and
    the bytes free."""
