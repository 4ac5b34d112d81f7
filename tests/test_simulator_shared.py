"""Shared arrays under Numba's CUDA simulator: the race in numba-cuda's allocator, and the fix.

numba-cuda's ``FakeCUDAShared.array`` (numba_cuda/numba/cuda/simulator/kernelapi.py) looks a
block's shared array up and inserts it in two steps; a thread switch between them gives two
threads of one block two different "shared" arrays. tests/conftest.py replaces it, under
``NUMBA_ENABLE_CUDASIM=1``, with one that inserts with ``dict.setdefault``. Here a block's lookups
are held at a barrier until every thread has looked up (the worst thread switch, every time):
the original then hands each thread its own array, the replacement one array to all.

The simulator must be on before numba is imported, so the test outside the simulator starts a
child pytest of this file with ``NUMBA_ENABLE_CUDASIM=1``, which runs the tests inside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ROOT = Path(__file__).resolve().parent.parent
THREADS = 32

pytestmark = pytest.mark.cpu_proxy


if not CUDASIM:

    def test_shared_arrays_under_the_cuda_simulator():
        pytest.importorskip("numba")
        pytest.importorskip("numba.cuda")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GPUACT_TEST_BACKENDS="numba")
        env.pop("GPUACT_REQUIRE_GPU", None)
        cmd = [sys.executable, "-m", "pytest", str(Path(__file__).relative_to(ROOT)), "-q", "-p", "no:cacheprovider"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"the simulator run failed:\n{output[-20000:]}"
        assert "3 passed" in output, output[-5000:]

else:
    import threading

    from numba import cuda
    from numba.cuda.simulator import kernelapi

    class _LookupsBeforeInserts(dict):
        """A block's ``_allocations``: each ``get`` waits until every thread has made its own, so
        every insert comes after every lookup. Keeps each array handed out by an insert."""

        def __init__(self, threads):
            super().__init__()
            self._barrier = threading.Barrier(threads, timeout=60)
            self._lock = threading.Lock()
            self.kept = []

        def get(self, key, default=None):
            found = super().get(key, default)
            self._barrier.wait()
            return found

        def _keep(self, value):
            with self._lock:
                self.kept.append(value)

        def __setitem__(self, key, value):
            self._keep(value)  # the racy original keeps and returns what it inserts
            super().__setitem__(key, value)

        def setdefault(self, key, default=None):
            value = super().setdefault(key, default)
            self._keep(value)
            return value

    @cuda.jit
    def _read_the_neighbour(out):
        shared = cuda.shared.array(THREADS, np.int32)
        t = cuda.threadIdx.x
        shared[t] = t + 1
        cuda.syncthreads()
        out[t] = shared[(t + 1) % THREADS]

    def _launch_with_lookups_held(monkeypatch, allocator):
        blocks = []
        init = kernelapi.FakeCUDAShared.__init__

        def held_init(self, dynshared_size):
            init(self, dynshared_size)
            self._allocations = _LookupsBeforeInserts(THREADS)
            blocks.append(self._allocations)

        monkeypatch.setattr(kernelapi.FakeCUDAShared, "__init__", held_init)
        monkeypatch.setattr(kernelapi.FakeCUDAShared, "array", allocator)
        out = cuda.to_device(np.zeros(THREADS, np.int32))
        _read_the_neighbour[1, THREADS](out)
        (allocations,) = blocks
        arrays = {id(a) for a in allocations.kept}
        return out.copy_to_host(), len(arrays)

    WANT = (np.arange(THREADS) + 1) % THREADS + 1

    def test_conftest_replaced_the_allocator():
        assert getattr(kernelapi.FakeCUDAShared.array, "racy_original", None) is not None, (
            "tests/conftest.py did not replace FakeCUDAShared.array: numba-cuda's simulator changed; "
            "check whether its shared arrays are still made without a lock"
        )

    def test_the_original_allocator_splits_a_block(monkeypatch):
        got, arrays = _launch_with_lookups_held(monkeypatch, kernelapi.FakeCUDAShared.array.racy_original)
        assert arrays == THREADS  # each thread kept the array it made
        assert not np.array_equal(got, WANT)  # and read its neighbour's slot in its own array

    def test_the_replacement_gives_a_block_one_array(monkeypatch):
        got, arrays = _launch_with_lookups_held(monkeypatch, kernelapi.FakeCUDAShared.array)
        assert arrays == 1
        np.testing.assert_array_equal(got, WANT)
