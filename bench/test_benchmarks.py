"""pytest-benchmark suites, built from the CLI's own case list (``gpuact.bench.cases``).

    pytest bench/ --benchmark-only                 # time them: one group per op
    pytest bench/ --benchmark-disable -q           # CI smoke mode: each case runs once, checked

Every test runs its case once through ``benchmark(...)`` (once only with ``--benchmark-disable``)
and then checks the result against the float64 reference with the CLI's tolerances, so the suites
cannot rot silently. Backends: gpuact's ``numpy`` path and the ``numpy-naive`` expression always;
gpuact's ``cupy`` and ``numba`` paths and ``cupy-naive`` when a GPU is usable; PyTorch and JAX
too with ``GPUACT_BENCH_PEERS=1``. GPU calls are followed by a device sync inside the timed
function (pytest-benchmark times wall clock); ``gpuact-bench`` is the tool for honest GPU numbers.

Sizes: ``GPUACT_BENCH_SIZES`` (the CLI's syntax, e.g. ``10:20:5``) for elementwise ops; softmax
runs every row length along both axes at ``GPUACT_BENCH_SOFTMAX_SIZE`` elements (default 2**20).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpuact.bench import cases as C
from gpuact.bench.impls import discover

SIZES = C.parse_sizes(os.environ.get("GPUACT_BENCH_SIZES", "2**10,2**16,2**20"))
SOFTMAX_SIZE = C.parse_sizes(os.environ.get("GPUACT_BENCH_SOFTMAX_SIZE", "2**20"))[-1]
PEERS = os.environ.get("GPUACT_BENCH_PEERS") == "1"
REQUIRE_GPU = os.environ.get("GPUACT_REQUIRE_GPU") == "1"

_selected = ["numpy", "numpy-naive", "cupy", "numba", "cupy-naive"] + (["torch", "jax"] if PEERS else [])
IMPLS, STATUSES = discover(_selected)
CASES = (
    C.build_cases(C.DEFAULT_OPS, ("float32",), SIZES, rows=())
    + C.build_cases(C.SOFTMAX_OPS, ("float32",), (SOFTMAX_SIZE,), softmax_limit=1)
    + C.build_training_cases(C.QUICK_GRAD_OPS, ("float32",), (SOFTMAX_SIZE,), rows=(1024,))
)


def _params():
    for case in CASES:
        for impl in IMPLS:
            yield pytest.param(case, impl, id=f"{case.op}-{impl.backend}@{impl.device}-{case.label}")


_inputs: dict = {}


def _input(case, device):
    key = (case.dtype, case.input_shape, C.is_grad(case.op), C.is_bias(case.op), device)
    if key not in _inputs:
        _inputs.clear() if len(_inputs) > 8 else None
        x = C.make_case_input(case)
        if device == "gpu":
            import cupy

            x = cupy.asarray(x)
        _inputs[key] = x
    return _inputs[key]


@pytest.mark.parametrize(("case", "impl"), list(_params()))
def test_activation(benchmark, case, impl):
    benchmark.group = case.op
    benchmark.extra_info.update(
        backend=impl.backend,
        device=impl.device,
        elements=case.elements,
        shape=list(case.shape),
        axis=case.axis,
        bytes_moved=case.bytes_moved,
    )
    x = impl.wrap(_input(case, impl.device))
    fn = impl.function(case)
    if impl.device == "gpu":

        def run(a):
            y = fn(a)
            impl.sync(y)
            return y
    else:
        run = fn
    y = benchmark(run, x)

    slices = C.check_slices(case)
    host_x = _input(case, impl.device)
    got = impl.to_array(y)
    if impl.device == "gpu":
        import cupy

        dev_slices = None if slices is None else cupy.asarray(slices)
        got = cupy.asnumpy(C.sample_view(case, got, dev_slices))
        x_sample = cupy.asnumpy(C.sample_input(case, host_x, dev_slices))
    else:
        got = C.sample_view(case, np.asarray(got), slices)
        x_sample = C.sample_input(case, host_x, slices)
    ok, msg = C.compare(case, got, x_sample, impl.gpuact)
    assert ok, f"{impl.name} {case.op} {case.label}: {msg}"


def test_gpu_backends_are_benchmarked():
    """Says (as a skip, or a failure with GPUACT_REQUIRE_GPU=1) when gpuact's GPU paths are not here."""
    missing = [
        f"{s.backend}: {s.reason}"
        for s in STATUSES
        if s.device == "gpu" and s.backend in ("cupy", "numba") and not s.used
    ]
    if missing:
        if REQUIRE_GPU:
            pytest.fail("GPUACT_REQUIRE_GPU=1 but " + "; ".join(missing))
        pytest.skip("; ".join(missing))
