"""The NumPy path's threads: the pool, the thresholds from which work is shared out, and the
drivers that cut a call into one range per thread and stop every range when one fails.

Tests shrink ``BLOCK``, ``PARALLEL_MIN``, ``THREADS``, ``COMPILED_SOFTMAX_PARALLEL_MIN``,
``POOLED_SOFTMAX_PARALLEL_MIN`` and ``compiled_parallel_min`` here to send
small inputs down the routes large ones take; the sibling modules therefore read them as
``pool.NAME`` at call time, never as names imported once.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpuact._contract.ops import OPS, Cost

# 131072 elements: 512 KiB per float32 buffer, so a thread's input, output and two scratch
# blocks (2 MiB) stay in the shared L3 while every ufunc call has enough work that its Python
# overhead, and the GIL it holds meanwhile, stay small next to the loop that runs without the GIL.
# Measured on the 2-core EPYC (float32, 2**22, two threads): 32K-element blocks left the second
# thread idle (softsign 4.1 ms, elu 6.1 ms), 128K ones halved that (2.5 ms, 3.4 ms), 512K gained
# little more.
BLOCK = 131072
# Below this many elements a second thread costs more (start-up, cache traffic) than it saves: the
# ufunc formulas' passes, on this module's Python pool.
PARALLEL_MIN = 1 << 16
# The compiled passes that the module cuts among its own threads (kernels/gpuact_cpu.cc, SplitPool:
# awake within microseconds when calls come back to back, and never waited for when asleep) share
# out from far fewer elements, by the op's cost class in the op table. Measured, float32,
# back-to-back calls on the 2-core EPYC, one thread against two: relu 15.6 against 9.6 us at 2**17,
# 24.6 against 16.9 at 2**18; sigmoid 23.4 against 23.6 at 2**16, 57.8 against 30.7 at 2**17; gelu
# 52.3 against 27.6 at 2**16; softmax rows of 1024, 38.3 against 20.3 at 2**16. An isolated call,
# whose helper is asleep, takes at most a few microseconds longer than on one thread.
COMPILED_SOFTMAX_PARALLEL_MIN = 1 << 16
_COMPILED_PARALLEL_MIN: dict[Cost, int] = {"cheap": 1 << 18, "exp": 1 << 17, "heavy": 1 << 16}
# The compiled pass still shared out on the Python pool (the narrow-column softmax), whose threads
# take 50-200 us to wake: from longer arrays (measured the same way: softmax rows, 131 us against
# 145 at 2**18, 269 against 210 at 2**19).
POOLED_SOFTMAX_PARALLEL_MIN = 1 << 19


def compiled_parallel_min(op: str) -> int:
    """Elements from which a compiled elementwise pass of ``op`` (forward, bias or backward, and
    the gated rows of a gate applying ``op``) is shared among the module's threads."""
    return _COMPILED_PARALLEL_MIN[OPS[op].cost]


THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="gpuact")
    return _pool


def _forget_pool_after_fork():
    # A forked child inherits the pool object but not its threads: work submitted to it would
    # wait forever (multiprocessing with fork, DataLoader workers). The child starts a new pool.
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def parallel_ranges(count: int, work: int, minimum: int = PARALLEL_MIN) -> list[tuple[int, int]]:
    """``count`` items (blocks, rows, ...) cut into one contiguous range per thread, or a single
    range when the ``work`` (elements) is below ``minimum``, too little for a second thread to pay
    off."""
    if work < minimum or count < 2 or THREADS == 1:
        return [(0, count)]
    per = -(-count // THREADS)
    return [(i * per, min(count, (i + 1) * per)) for i in range(THREADS) if i * per < count]


def block_ranges(n: int) -> list[tuple[int, int]]:
    """Element ranges, one per thread, each a whole number of blocks (but the last)."""
    return [(lo * BLOCK, min(n, hi * BLOCK)) for lo, hi in parallel_ranges(-(-n // BLOCK), n)]


class Stop(Exception):
    """Raised inside a pool task told to stop (its call was interrupted, or failed elsewhere)."""


def run_parallel(fn, ranges):
    """``fn(lo, hi, stop)`` for each range: the first on this thread, the others on the pool.

    ``stop`` is a ``threading.Event`` (None for a lone range) that ``fn`` checks between pieces of
    its range (see ``pieces``). When this thread is interrupted (Ctrl-C) or any range fails, the
    others are told to stop and are waited for before the exception propagates: no thread keeps
    writing into the caller's arrays after the call has returned.
    """
    if len(ranges) == 1:
        fn(*ranges[0], None)
        return
    stop = threading.Event()
    futures = [_executor().submit(fn, lo, hi, stop) for lo, hi in ranges[1:]]
    try:
        fn(*ranges[0], stop)
        for f in futures:
            f.result()
    except BaseException:
        stop.set()
        concurrent.futures.wait(futures)
        raise


# The largest piece of a range a thread works on between two checks for a stop: 4 MiB of float32,
# about a millisecond, so an interrupted call returns promptly and the checks cost nothing.
PIECE = 1 << 20


def pieces(lo: int, hi: int, stop, step: int = PIECE):
    """``(start, end)`` pieces of ``[lo, hi)``; raises ``Stop`` once ``stop`` is set."""
    for start in range(lo, hi, step):
        if stop is not None and stop.is_set():
            raise Stop
        yield start, min(start + step, hi)


def check_stop(stop):
    """Raises ``Stop`` once ``stop`` (a ``threading.Event`` or None) is set."""
    if stop is not None and stop.is_set():
        raise Stop


def each_in_parallel(fn, count):
    """fn(0, stop) ... fn(count - 1, stop), one per thread; warnings are off in each (errstate is
    per thread)."""

    def body(lo, hi, stop):
        with np.errstate(all="ignore"):
            for k in range(lo, hi):
                fn(k, stop)

    run_parallel(body, [(k, k + 1) for k in range(count)])


# The compiled kernels run in chunks of whole cache lines, one contiguous range a thread.
_NATIVE_CHUNK = 1024

# The most elements one split pass covers (see run_split): the module's threads cannot be stopped
# inside a pass, so an interrupt waits for at most this much work (16 MiB of float32, a few ms).
SPLIT_PIECE = 1 << 22


def split_threads(elements: int, minimum: int, share: bool = True) -> int:
    """How many of the module's threads a compiled pass of ``elements`` takes: ``THREADS`` from
    ``minimum`` elements where ``share`` allows, else 1 (run_split's choice, and the direct calls'
    that skip it)."""
    return THREADS if share and elements >= minimum else 1


def run_split(count: int, call, minimum: int, item: int = 1, share: bool = True):
    """``call(start, end, threads)`` over [0, count) items of ``item`` elements each (elements,
    rows, slabs): a compiled pass that the module cuts among ``threads`` of its own threads
    (``THREADS`` when the pass has ``minimum`` elements and ``share`` allows, else 1;
    ``kernels/gpuact_cpu.cc``'s ``SplitPool``, whose threads wake in microseconds where this
    module's Python pool takes 50-200), in pieces of about ``SPLIT_PIECE`` elements (at least one
    item) between which an interrupt (Ctrl-C) is taken."""
    threads = split_threads(count * item, minimum, share)
    step = max(1, SPLIT_PIECE // item)
    for start in range(0, count, step):
        call(start, min(count, start + step), threads)


def run_ranges(n: int, call, minimum: int):
    """``call(start, end)`` over [0, n) in whole cache lines, on every core from ``minimum``
    elements, in pieces between stop checks (see ``run_parallel``)."""
    if n < minimum:
        call(0, n)
        return
    chunks = -(-n // _NATIVE_CHUNK)

    def run(lo, hi, stop):
        for start, end in pieces(lo * _NATIVE_CHUNK, min(n, hi * _NATIVE_CHUNK), stop):
            call(start, end)

    run_parallel(run, parallel_ranges(chunks, n, minimum))
