"""The process's standard streams, silenced for a block: also what C++ code under Python writes to them."""
import os
import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def silenced_descriptor(descriptor: int) -> Iterator[None]:
    """Send whatever is written to file descriptor ``descriptor`` (1: standard output, 2: standard error) inside the
    block to the null device: Python's writes and those of C++ code such as TorchScript's graph dumps or the
    profiler's start and stop lines, which Python's ``sys.stdout``/``sys.stderr`` redirections do not reach."""
    python_stream = {1: sys.stdout, 2: sys.stderr}[descriptor]
    python_stream.flush()
    saved = os.dup(descriptor)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), descriptor)
            yield
    finally:
        python_stream.flush()
        os.dup2(saved, descriptor)
        os.close(saved)
