"""Hand freed heap memory back to the operating system.

A streaming process decodes audio of a different length for every partial and final, so torch,
ONNX Runtime and numpy allocate buffers of ever-changing sizes. glibc's allocator keeps the freed
pages of its arenas for reuse, and with varying sizes they fragment: resident memory of a 10-minute
stream kept climbing (moonshine-tiny: 496 → 953 MB) although nothing leaked; trimming after each
line holds it flat (bench/results/stream-10min). Other C libraries (musl, macOS, Windows) have no
`malloc_trim` and return memory their own way, so there this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import os


@functools.cache
def _malloc_trim():
    if os.name != "posix":
        return None
    # The process's own symbols: libc is loaded already, no library search needed on the streaming path.
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def release_free_heap() -> bool:
    """Return free heap pages to the OS where the C library can (glibc); True when it did."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
