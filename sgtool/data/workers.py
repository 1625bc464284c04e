"""Worker processes that end with their parent: a SIGKILL of `sgtool prepare` leaves no renderer behind.

On Linux each worker asks the kernel for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG);
elsewhere a daemon thread in the worker watches its parent's pid. Both are set up in the pool's
initializer, which also ends a worker whose parent died before the request took effect.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def _die_with(parent: int) -> None:
    """Pool initializer: end this worker when the process `parent` ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent was gone before the request was made
        os._exit(1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers end when this process ends, however it ends."""
    return ProcessPoolExecutor(max_workers=workers, initializer=_die_with, initargs=(os.getpid(),))
