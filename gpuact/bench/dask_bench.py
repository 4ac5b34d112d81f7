"""``gpuact-bench --dask``: gpuact on a chunked Dask array against the same data in one array.

Softmax along a chunked axis and one elementwise op (gelu) on a 2**26-element float32 array, in
chunks of 2**22, each run three ways:

* ``gpuact``: the gpuact function on the Dask array (``gpuact.softmax(x, axis=0)``);
* ``dask``: the plain ``dask.array`` expression (``da.exp(x - x.max(0)) / ...``; gelu via erf);
* ``single array``: gpuact's NumPy path on the whole array in this process.

on each configuration found: Dask's threaded scheduler, a ``distributed.LocalCluster`` of 2
workers, and with a GPU and dask-cuda a ``LocalCUDACluster`` with CuPy chunks. The input is
persisted in the workers first, and each result is persisted (computed and kept in the workers,
not sent back), so the time is the computation's. Reported: median seconds of a few runs, the
single-array time over this time, and the task count of the graph.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np

ELEMENTS = 2**26
COLUMNS = 2**10
CHUNK_ROWS = 2**12  # chunks of 2**22 elements, 16 along the softmax axis
RUNS = 3


def _expressions(da):
    def softmax(x):
        e = da.exp(x - x.max(axis=0, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)

    def gelu(x):
        from scipy.special import erf

        return 0.5 * x * (1 + da.map_blocks(erf, x * np.float32(1 / math.sqrt(2)), dtype=x.dtype))

    return {"softmax": softmax, "gelu": gelu}


def _same(block, run):
    return block


def _time(fn, runs=RUNS):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def _configurations(gpu: bool):
    """(name, context manager factory giving a client or None) for each configuration available."""
    import contextlib

    yield "threads", contextlib.nullcontext
    try:
        import distributed
    except ImportError:
        return

    @contextlib.contextmanager
    def local():
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client

    yield "LocalCluster(2 workers)", local
    if gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            return

        @contextlib.contextmanager
        def cuda():
            with LocalCUDACluster(dashboard_address="127.0.0.1:0") as cluster, distributed.Client(cluster) as client:
                yield client

        yield "LocalCUDACluster", cuda


def run(out, gpu: bool = False) -> list[dict]:
    """Time every (configuration, op, way) and print a table; returns the JSON entries."""
    try:
        import dask.array as da
    except ImportError:
        out.note("--dask needs Dask: pip install gpuact[dask]")
        return []
    import gpuact

    rows = ELEMENTS // COLUMNS
    host = np.random.default_rng(0).standard_normal((rows, COLUMNS), dtype=np.float32)
    single = {"softmax": lambda: gpuact.softmax(host, axis=0), "gelu": lambda: gpuact.gelu(host)}
    single_times = {op: _time(fn)[0] for op, fn in single.items()}
    plain = _expressions(da)
    entries = []
    for config, make in _configurations(gpu):
        with make() as client:
            x = da.from_array(host, chunks=(CHUNK_ROWS, COLUMNS))
            if config == "LocalCUDACluster":
                import cupy

                x = x.map_blocks(cupy.asarray)
            with warnings.catch_warnings():
                # the one-time shipping of the input to the workers (256 MiB), not part of any timing
                warnings.filterwarnings("ignore", message="Sending large graph")
                x = x.persist()
            if client is not None:
                from distributed import wait

                wait(x)
            ways = {"gpuact": {"softmax": lambda a: gpuact.softmax(a, axis=0), "gelu": gpuact.gelu}, "dask": plain}
            for op in ("softmax", "gelu"):
                for way, table in ways.items():
                    tasks = len(table[op](x).__dask_graph__())
                    runs = iter(range(RUNS))

                    def compute(table=table, op=op, runs=runs):
                        # a fresh input name a run, so no run finds the last one's results in memory
                        xr = x.map_blocks(_same, run=next(runs), dtype=x.dtype, meta=x._meta)
                        result = table[op](xr).persist()
                        if client is not None:
                            from distributed import wait

                            wait(result)
                        del result

                    median, samples = _time(compute)
                    entries.append(
                        {
                            "config": config,
                            "op": op,
                            "way": way,
                            "elements": ELEMENTS,
                            "chunks": [CHUNK_ROWS, COLUMNS],
                            "median_s": median,
                            "samples_s": samples,
                            "vs_single_array": single_times[op] / median,
                            "tasks": tasks,
                        }
                    )
    for op, t in single_times.items():
        entries.append(
            {
                "config": "single array",
                "op": op,
                "way": "gpuact (NumPy path)",
                "elements": ELEMENTS,
                "chunks": None,
                "median_s": t,
                "samples_s": None,
                "vs_single_array": 1.0,
                "tasks": None,
            }
        )
    _print(entries)
    return entries


def _print(entries):
    print(
        f"Dask: softmax along axis 0 and gelu on a {ELEMENTS // COLUMNS}x{COLUMNS} float32 array "
        f"({ELEMENTS // (CHUNK_ROWS * COLUMNS)} chunks of {CHUNK_ROWS}x{COLUMNS}); 'of single' = the single-array "
        "NumPy-path time / this time"
    )
    print(f"  {'configuration':<24} {'op':<8} {'way':<22} {'median':>9} {'of single':>10} {'tasks':>6}")
    for e in entries:
        tasks = "-" if e["tasks"] is None else str(e["tasks"])
        print(
            f"  {e['config']:<24} {e['op']:<8} {e['way']:<22} {e['median_s'] * 1e3:8.1f}ms "
            f"{e['vs_single_array']:9.2f}x {tasks:>6}"
        )
