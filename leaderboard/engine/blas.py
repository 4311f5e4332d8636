"""Single-threaded BLAS while the engine solves its many small systems.

A Newton step solves a models x models system; a bootstrap solves thousands of them. OpenBLAS
splits even these small factorisations across threads whose workers then busy-wait between calls;
with numpy and scipy each bundling their own OpenBLAS, on a machine with few cores those spinning
workers starve the main thread (measured: 150 models, 2 cores, ~10x slower). OpenBLAS 0.3.27+ has a
per-thread setting, ``openblas_set_num_threads_local``, so the calling thread can go single-threaded
without touching any other thread of the process. Where the symbol or the library is missing this
does nothing.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator


@lru_cache(maxsize=1)
def _thread_local_setters() -> tuple:
    setters = []
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return ()
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            setter = library.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int
        setters.append(setter)
    return tuple(setters)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    # numpy and scipy are imported by now, so their OpenBLAS copies are in the process map.
    setters = _thread_local_setters()
    previous = [setter(1) for setter in setters]
    try:
        yield
    finally:
        for setter, value in zip(setters, previous):
            setter(value)
