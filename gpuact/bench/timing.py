"""How times are taken. See ``gpuact.bench`` for the method in words.

CPU: ``time.perf_counter_ns`` around each call after a warm-up; repeat until at least
``min_runs`` samples *and* ``min_time`` seconds (whichever gives more samples), bounded by
``max_runs`` samples and ``max_time`` seconds (then at least 3 samples).

GPU: CUDA events recorded on the stream the op runs on, around each call, no host sync between
calls (so the host runs ahead and the device times are back to back); the median of ``runs``.
Inputs rotate among buffers cut from one pool of at least twice the L2 size, so no timed call
reads L2-hot input.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    """Per-call seconds, rounded to the nanosecond (the clock's resolution; keeps the JSON short)."""

    samples: list[float]

    def __post_init__(self):
        self.samples = [round(s, 9) for s in self.samples]

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def min(self):
        return min(self.samples)

    @property
    def max(self):
        return max(self.samples)


@dataclass
class CpuBudget:
    min_time: float = 0.2
    min_runs: int = 10
    max_runs: int = 500
    max_time: float = 1.0
    warmup: int = 1


@dataclass
class GpuBudget:
    runs: int = 50
    warmup: int = 3


def cpu_time(fn, x, budget: CpuBudget) -> Timing:
    for _ in range(budget.warmup):
        fn(x)
    samples: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        fn(x)
        t1 = clock()
        samples.append((t1 - t0) * 1e-9)
        elapsed = (t1 - start) * 1e-9
        n = len(samples)
        if n >= budget.max_runs:
            break
        if n >= budget.min_runs and elapsed >= budget.min_time:
            break
        if elapsed >= budget.max_time and n >= 3:
            break
    return Timing(samples)


# ---------------------------------------------------------------------------------------------
# GPU


def l2_bytes() -> int:
    import cupy

    try:
        return int(cupy.cuda.Device().attributes["L2CacheSize"])
    except Exception:
        return 64 << 20


class GpuPool:
    """Rotating device inputs of one (dtype, elements): views into one CuPy pool.

    When one buffer is smaller than twice the L2 size, the pool holds ``ceil(2 * L2 / bytes)``
    of them and calls use them in turn, the earliest-filled first, so every timed call reads data
    that has left L2 since it was written. ``count`` views are made (as many as calls need).
    """

    def __init__(self, dtype: str, elements: int, count: int, seed: int = 0):
        import cupy

        from gpuact.bench.cases import INPUT_HIGH, INPUT_LOW

        nbytes = elements * cupy.dtype(dtype).itemsize
        self.slots = max(1, math.ceil(2 * l2_bytes() / max(nbytes, 1)))
        self.count = min(count, self.slots)
        gen = cupy.random.RandomState(seed)
        fill_dtype = "float64" if dtype == "float64" else "float32"
        pool = gen.uniform(INPUT_LOW, INPUT_HIGH, size=self.slots * elements, dtype=fill_dtype)
        self.pool = pool.astype(dtype, copy=False)
        self.elements = elements
        self.buffers = [self.pool[i * elements : (i + 1) * elements] for i in range(self.count)]
        cupy.cuda.Device().synchronize()

    def views(self, shape):
        return [b.reshape(shape) for b in self.buffers]


def gpu_time(fn, inputs, budget: GpuBudget, timer: str, sync=None) -> Timing:
    """Per-call device times of ``fn`` over rotating ``inputs``."""
    count = len(inputs)
    y = None
    for i in range(budget.warmup):
        y = fn(inputs[i % count])
    if timer == "wall-sync":
        sync(y)
        return _wall_sync_time(fn, inputs, budget, sync)
    if timer == "torch-event":
        import torch

        torch.cuda.synchronize()
        make = lambda: torch.cuda.Event(enable_timing=True)
        elapsed = lambda s, e: s.elapsed_time(e) * 1e-3
    else:
        import cupy

        cupy.cuda.Device().synchronize()
        make = cupy.cuda.Event
        elapsed = lambda s, e: cupy.cuda.get_elapsed_time(s, e) * 1e-3
    events = [(make(), make()) for _ in range(budget.runs)]
    offset = budget.warmup
    for i, (start, end) in enumerate(events):
        x = inputs[(offset + i) % count]
        start.record()
        y = fn(x)
        end.record()
    events[-1][1].synchronize()
    del y
    return Timing([elapsed(s, e) for s, e in events])


def _wall_sync_time(fn, inputs, budget: GpuBudget, sync) -> Timing:
    # JAX runs on its own CUDA streams, so events on CuPy's stream could not bracket its work:
    # wall clock from the call to block_until_ready. This includes JAX's dispatch (tens of
    # microseconds), so JAX's small-size times are upper bounds.
    count = len(inputs)
    samples = []
    clock = time.perf_counter_ns
    for i in range(budget.runs):
        x = inputs[(budget.warmup + i) % count]
        t0 = clock()
        sync(fn(x))
        samples.append((clock() - t0) * 1e-9)
    return Timing(samples)


def host_overhead(fn, x, sync, calls: int = 200, repeats: int = 5) -> Timing:
    """Per-call wall time of ``calls`` back-to-back calls with one sync at the end."""
    sync(fn(x))
    samples = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        t0 = clock()
        y = None
        for _ in range(calls):
            y = fn(x)
        sync(y)
        samples.append((clock() - t0) * 1e-9 / calls)
    return Timing(samples)


# ---------------------------------------------------------------------------------------------
# Copy bandwidth


def cpu_copy(elements: int, dtype: str, budget: CpuBudget, threads: int):
    """(Timing, method) of the fastest copy of ``elements`` this machine does, the same way as an op.

    Candidates: ``np.copyto`` (libc memcpy, which switches to non-temporal stores above a
    fraction of the last-level cache) and ``np.positive(src, out=dst)`` (a ufunc loop with
    ordinary stores, what an activation does), each on one thread and, for large arrays, split
    over ``threads`` (gpuact's NumPy path spreads large arrays over threads too). The bound an op
    is held against is the best of these.
    """
    import numpy as np

    src = np.full(elements, 0.5, dtype=dtype)
    dst = np.empty_like(src)
    kinds = {"np.copyto": lambda d, s: np.copyto(d, s), "np.positive": lambda d, s: np.positive(s, out=d)}
    best = None
    pool = None
    try:
        for name, copy in kinds.items():
            candidates = [(lambda s, copy=copy: copy(dst, s), name)]
            if threads > 1 and elements >= 1 << 16:
                if pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    pool = ThreadPoolExecutor(max_workers=threads)
                bounds = [(i * elements // threads, (i + 1) * elements // threads) for i in range(threads)]

                def threaded(s, copy=copy, pool=pool, bounds=bounds):
                    futures = [pool.submit(copy, dst[lo:hi], s[lo:hi]) for lo, hi in bounds[1:]]
                    lo, hi = bounds[0]
                    copy(dst[lo:hi], s[lo:hi])
                    for f in futures:
                        f.result()

                candidates.append((threaded, f"{name} on {threads} threads"))
            for fn, method in candidates:
                t = cpu_time(fn, src, budget)
                if best is None or t.median < best[0].median:
                    best = (t, method)
    finally:
        if pool is not None:
            pool.shutdown()
    return best


def gpu_copy(pool: GpuPool, budget: GpuBudget):
    """(Timing, method): the faster of cudaMemcpyAsync device-to-device and CuPy's copy kernel."""
    import cupy

    dst = cupy.empty_like(pool.buffers[0])
    nbytes = dst.nbytes

    def memcpy(x):
        dst.data.copy_from_device_async(x.data, nbytes)

    def kernel(x):
        cupy.copyto(dst, x)

    best = None
    for fn, method in ((memcpy, "cudaMemcpyAsync D2D"), (kernel, "cupy.copyto kernel")):
        t = gpu_time(fn, pool.buffers, budget, "cuda-event")
        if best is None or t.median < best[0].median:
            best = (t, method)
    return best
