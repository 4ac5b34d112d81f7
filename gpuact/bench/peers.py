"""Side by side: gpuact's NumPy path against the CPU peers, interleaved, with the ratio.

The main table times one backend after another, so a machine whose speed drifts (a shared VM,
turbo, another process) moves one backend's rows against another's. This section answers "is
gpuact ahead of PyTorch, JAX and TensorFlow on this machine" with the drift taken out: for each
case, ``rounds`` rounds, each timing every backend in turn (``calls`` calls, their median), the
order rotated between rounds; a backend's time is the median of its round medians, and the
ratio is gpuact's time over the peer's (above 1: gpuact is slower). Each backend's calls start
after a pause (``SETTLE_S``) in which threads the previous backend left spinning go to sleep, then
untimed calls for ``WARM_S`` (at least one), which wake its own threads and bring the machine back
to its steady speed. The copy roof (``np.copyto``
between two arrays of as many bytes as the case moves: input read plus output written) is timed in
the same rounds, so a bandwidth-bound op's fraction of it is measured beside it.

The cases are the ones the performance goal names: float32, 2**22 elements for the elementwise
ops and their gradients, softmax on 4096x1024 along the last axis and along axis 0.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from gpuact.bench import cases as C

ELEMENTWISE = ("relu", "sigmoid", "tanh", "gelu", "silu", "softsign", "linear", "relu6", "elu", "selu", "softplus")
GRADIENTS = ("relu", "sigmoid", "tanh", "gelu", "silu", "softsign", "elu", "softplus")
SIZE = 2**22
SOFTMAX_SHAPE = (4096, 1024)
ROUNDS = 9
CALLS = 5
# A pause before each backend's calls: PyTorch's OpenMP threads, TensorFlow's and XLA's pools and
# gpuact's own threads spin for a while after a call before they sleep, and on a machine with few
# cores the next backend would share them with those spinners.
SETTLE_S = 0.01
# Untimed calls after the pause, for at least this long: on the project's 2-core VM a pass over 32
# MiB runs at about half its speed right after a 10 ms idle and takes some 10 calls (8 ms) to get
# back, np.copyto of 16 MiB as much as gpuact's relu (1.64 ms in the first call, 0.78 ms from the
# twelfth on; median over 8 rounds), while a loop on data in L1 shows no such ramp. With one untimed
# call the timed calls fell in that ramp, and every backend's time was mostly the machine's.
WARM_S = 0.02
PEER_BACKENDS = ("torch", "jax", "tensorflow")
COPY = "copy"


def default_cases(dtype: str = "float32") -> list[C.Case]:
    out = [C.Case(op, dtype, (SIZE,), None) for op in ELEMENTWISE]
    out += [C.Case(C.grad_of(op), dtype, (SIZE,), None) for op in GRADIENTS]
    out += [C.Case(op, dtype, SOFTMAX_SHAPE, axis) for op in ("softmax", C.grad_of("softmax")) for axis in (-1, 0)]
    return out


def _median_of(fn, x, calls: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = clock()
        fn(x)
        samples.append((clock() - t0) * 1e-9)
    return statistics.median(samples)


def _copy_roof(case: C.Case):
    """A copy moving the case's bytes (``Case.bytes_moved``: half read, half written)."""
    elements = max(1, case.bytes_moved // (2 * case.itemsize))
    src = C.make_input((elements,), case.dtype)
    dst = np.empty_like(src)
    return (lambda a: np.copyto(dst, a)), src


def side_by_side(
    impls, cases, rounds: int = ROUNDS, calls: int = CALLS, tick=None, warm_s: float = WARM_S
) -> list[dict]:
    """One entry per case: every backend's median-of-medians time and gpuact's ratio to each."""
    numpy_impl = next((i for i in impls if i.backend == "numpy" and i.device == "cpu"), None)
    peers = [i for i in impls if i.device == "cpu" and i.backend in PEER_BACKENDS]
    if numpy_impl is None or not peers:
        return []
    entries = []
    for case in cases:
        x = C.make_case_input(case)
        runners: dict = {}
        skipped: dict = {}
        for impl in (numpy_impl, *peers):
            reason = impl.unsupported(case)
            if reason:
                skipped[impl.backend] = reason
                continue
            try:
                fn, xn = impl.function(case), impl.wrap(x)
                fn(xn)  # compile (JAX jit, TF function) and warm
                runners[impl.backend] = (fn, xn)
            except Exception as exc:  # a peer that cannot run the case is listed, not fatal
                skipped[impl.backend] = f"{type(exc).__name__}: {exc}"
        if "numpy" not in runners:
            continue
        runners[COPY] = _copy_roof(case)
        names = list(runners)
        medians: dict = {name: [] for name in names}
        for r in range(rounds):
            if tick is not None:
                tick(f"side by side {case.op} {case.label} round {r + 1}/{rounds}")
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                fn, xn = runners[name]
                time.sleep(SETTLE_S)
                warm_until = time.perf_counter() + warm_s
                fn(xn)
                while time.perf_counter() < warm_until:
                    fn(xn)
                medians[name].append(_median_of(fn, xn, calls))
        times = {name: statistics.median(ts) for name, ts in medians.items()}
        ours = times["numpy"]
        entries.append(
            {
                "op": case.op,
                "dtype": case.dtype,
                "shape": list(case.shape),
                "axis": case.axis,
                "label": case.label,
                "rounds": rounds,
                "calls": calls,
                "warm_s": warm_s,
                "seconds": times,
                "round_medians": medians,
                "ratio": {name: ours / t for name, t in times.items() if name not in ("numpy", COPY) and t > 0},
                "frac_of_copy": times[COPY] / ours if ours > 0 else None,
                "skipped": skipped,
            }
        )
    return entries


def table_rows(entries) -> list[list[str]]:
    """Rows of the printed table: op, shape, gpuact's time, its ratio to each peer, the copy
    fraction (the copy's time over gpuact's: 1 is the copy's speed)."""
    rows = []
    for e in entries:
        ratios = [f"{e['ratio'][p]:.2f}" if p in e["ratio"] else "-" for p in PEER_BACKENDS]
        copy = "-" if e["frac_of_copy"] is None else f"{e['frac_of_copy']:.2f}"
        rows.append([e["op"], e["label"], f"{e['seconds']['numpy'] * 1e3:.3f} ms", *ratios, copy])
    return rows


HEADER = ["op", "shape", "gpuact", *(f"gpuact/{p}" for p in PEER_BACKENDS), "of copy"]
TITLE = (
    "Side by side on the CPU, interleaved ({rounds} rounds of {calls} calls, median of the round medians): "
    "gpuact/X = gpuact's time / X's (below 1: gpuact is faster); 'of copy' = a copy of as many bytes' "
    "time / gpuact's"
)
