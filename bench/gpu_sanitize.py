"""Launch every kernel family of gpuact's CuPy and Numba paths once, for compute-sanitizer.

    python bench/gpu_sanitize.py [--backend cupy|numba] [--kernels all|shared] [--json PATH] [--smoke]

``bench/gpu_check.sh`` runs it under ``compute-sanitizer --tool racecheck``, ``memcheck`` and
``synccheck``. Each case calls gpuact (its public functions, the layers' entry points, the
backends' planners) on small float32 and float16 inputs, on CuPy and on Numba device arrays, and
compares the result with gpuact's NumPy path on the same host data. The cases cover:

* the vector elementwise kernel on an odd length, on a misaligned (offset) view and in place; the
  ElementwiseKernel (strided inputs); a trailing and a broadcast bias; every backward; glu, prelu;
* the softmax warp and column kernels (the tile kept in shared memory and not), each call made
  twice (the second through the memoized plan), plain and with log, mask and bias together, and
  their backward;
* the split partials/finish path, forced on small inputs as the tests force it (``FORCED_SPLIT``);
* sparsemax and its backward through both tau searches (warp and column kernels), cached and not.

Each launch is recorded by kernel family and variant (the compile-time and run-time flags: bias,
mask, log, the shared-memory cache). At the end the script prints one line per family it launched
and checks the record against the plan tables (``FUSED_FAMILIES`` of the CUDA sources, the Numba
kernel catalogue): every family, in float32 and float16, with the variant without flags and the
one with all of them. It exits 1 when a case failed, a result differed or a family was not
launched. Every line is flushed as it is printed, so a sanitizer log cut by a time limit still
says which case was running.

CuPy's memory pool is switched off: memcheck sees an access past the end of an array only where
the array is an allocation of its own. ``--kernels shared`` runs only the cases of the kernels with
shared memory and barriers (softmax, sparsemax), all racecheck and synccheck can look at.
``--smoke`` launches one RawKernel (the vector kernel), one ElementwiseKernel and one Numba kernel
and nothing else (``gpu_check.sh`` step 1).

It runs without a GPU too: on the CuPy stand-in (``tests/cupy_standin``) and under Numba's CUDA
simulator, as ``tests/test_gpu_check.py`` does in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/gpu_sanitize.py` from a checkout, gpuact not installed

import gpuact  # noqa: E402
import gpuact.backward  # noqa: E402
from gpuact import _entry  # noqa: E402

DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
TOLERANCE = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float16): (1e-2, 2e-3)}
# The split forced on small rows, as the plan tests force it: CuPy's planners cut L into segments of
# a block's worth from any input size; Numba's plan wants 64 blocks an SM and a thread's worth of
# elements per segment (tests/test_numba_backend.py, split_small).
FORCED_SPLIT = {
    "cupy": {"min_segment": 256, "min_split": 0},
    "numba": {"MIN_SEGMENT_PER_THREAD": 1, "MIN_BLOCKS_PER_SM": 64},
}


def _say(*parts) -> None:
    print(*parts, flush=True)


# ---------------------------------------------------------------------------------------------
# what was launched


class Record:
    """Launches counted by (backend, family, variant flags, dtype), the dtype of the case running."""

    def __init__(self):
        self.launches: Counter = Counter()
        self.dtype = None
        self.backend = None  # the backend under check, also while its NumPy reference runs

    def add(self, backend: str, family: str, flags=()) -> None:
        self.launches[(backend, family, frozenset(flags), self.dtype)] += 1


RECORD = Record()


def _is_null(a) -> bool:
    return isinstance(a, (int, np.integer)) and int(a) == 0


class _Recorded:
    """A CuPy kernel object that records each call, and passes everything else through."""

    def __init__(self, inner, on_call):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_on_call", on_call)

    def __call__(self, *args, **kwargs):
        self._on_call(args, kwargs)
        return self._inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)


def _flags_of_fused(ks, name: str, args: tuple) -> tuple[str, set]:
    spec = ks.fused_kernels()[name]
    bound = dict(zip([n for _, n in spec.params], args))
    flags = set()
    if name.endswith("_bias") or ("bias" in bound and not _is_null(bound["bias"])):
        flags.add("bias")
    if "mask" in bound and not _is_null(bound["mask"]):
        flags.add("masked")
    if "log_mode" in bound and int(bound["log_mode"]):
        flags.add("log")
    if "cache" in bound and int(bound["cache"]):
        flags.add("cached")
    return spec.family, flags


def fused_flag_universe(ks, family: str) -> set:
    """The flags a fused family's launches can carry (from its parameters in ``FUSED_FAMILIES``)."""
    names = {n for _, n in ks.FUSED_FAMILIES[family][2]}
    flags = {
        flag
        for param, flag in (("mask", "masked"), ("bias", "bias"), ("log_mode", "log"), ("cache", "cached"))
        if param in names
    }
    if family in getattr(ks, "BIASED_WARP_FAMILIES", ()):
        flags.add("bias")
    return flags


def record_cupy(cupy_backend) -> None:
    """Wrap the CuPy backend's kernel getters so that each launch is recorded."""
    ks = cupy_backend.ks
    inplace = getattr(ks, "INPLACE_SUFFIX", "_inplace")

    def vector_flags(kernel):
        return {"inplace"} if str(getattr(kernel, "name", "")).endswith(inplace) else set()

    def wrap(getter, on_call_for):
        original = getattr(cupy_backend, getter, None)
        if original is None:
            return
        signature = inspect.signature(original)

        @functools.wraps(original)
        def recorded(*args, **kwargs):
            kernel = original(*args, **kwargs)
            return _Recorded(kernel, on_call_for(kernel, signature.bind(*args, **kwargs).arguments))

        setattr(cupy_backend, getter, recorded)

    wrap("_vec_kernel", lambda k, a: lambda args, kw: RECORD.add("cupy", "vector", vector_flags(k)))
    wrap(
        "_vec_training_kernel",
        lambda k, a: lambda args, kw: RECORD.add("cupy", f"vector_{a['kind']}", vector_flags(k)),
    )

    def elementwise_family(a):
        kind = a.get("kind")
        if kind == "special":  # prelu's backward, or a gated unit's (one family: glu's)
            return "elementwise_prelu_grad" if a["op"] == "prelu_grad" else "elementwise_glu_grad"
        return "elementwise" if kind is None else f"elementwise_{kind}"

    wrap("_ew_kernel", lambda k, a: lambda args, kw: RECORD.add("cupy", elementwise_family(a)))

    def fused(k, a):
        def on_call(args, kw):
            launch_args = args[2] if len(args) > 2 else kw.get("args", ())
            RECORD.add("cupy", *_flags_of_fused(ks, a["name"], tuple(launch_args)))

        return on_call

    wrap("_fused_kernel", fused)


_NUMBA_SOFTMAX = re.compile(
    r"(?P<log>log_)?softmax_(?P<kind>grad_tile|grad_partials|grad_finish|tile|partials|finish)"
    r"(?P<masked>_masked)?(?P<bias>_bias)?"
)
_NUMBA_SPARSEMAX = re.compile(r"sparsemax_(?P<kind>grad_tile|tile)(?P<rest>.*)")
_NUMBA_SPECIAL = re.compile(r"(?P<kind>copy|mask|glu_grad|prelu_grad|glu|prelu)_nd\d+")
# the other gated units' kernels are glu's families, with another gate
_NUMBA_GATED = re.compile(r"(?:swiglu|geglu_tanh|geglu|reglu)(?P<grad>_grad)?_nd\d+")
_NUMBA_ELEMENTWISE = re.compile(r"(?P<op>[a-z0-9_]+?)(?P<kind>_grad_bias|_grad|_bias)?_(?P<walk>contig|nd)\d*")


def numba_family(kernel_name: str) -> tuple[str, set]:
    """(family, flags) of a Numba kernel from its function's name (``kernels.py`` names them)."""
    name = kernel_name.removeprefix("gpuact_")
    m = _NUMBA_SOFTMAX.fullmatch(name)
    if m:
        flags = {flag for flag in ("log", "masked", "bias") if m.group(flag)}
        return f"softmax_{m.group('kind')}", flags
    m = _NUMBA_SPARSEMAX.fullmatch(name)
    if m:
        return f"sparsemax_{m.group('kind')}", {"cached"} if "cached" in m.group("rest") else set()
    m = _NUMBA_SPECIAL.fullmatch(name)
    if m:
        return f"{m.group('kind')}_nd", set()
    m = _NUMBA_GATED.fullmatch(name)
    if m:
        return f"glu{m.group('grad') or ''}_nd", set()
    m = _NUMBA_ELEMENTWISE.fullmatch(name)
    if m:
        return f"elementwise{m.group('kind') or ''}_{m.group('walk')}", set()
    return name, set()


def _numba_kernel_name(kernel) -> str:
    for attr in ("py_func", "fn"):
        fn = getattr(kernel, attr, None)
        if fn is not None:
            return fn.__name__
    name = getattr(kernel, "name", None)  # tests/numba_launch_checks.py's CheckedKernel
    return name if isinstance(name, str) else repr(kernel)


class _NumbaRecorded:
    """A Numba kernel whose launches (``kernel[config](*args)``) are recorded."""

    def __init__(self, inner):
        self.inner = inner
        self.family, self.flags = numba_family(_numba_kernel_name(inner))

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __getitem__(self, config):
        launch = self.inner[config]

        def run(*args):
            RECORD.add("numba", self.family, self.flags)
            return launch(*args)

        return run


def record_numba(numba_backend) -> None:
    original = numba_backend._kernel
    wrapped: dict = {}  # one wrapper a kernel: the backend memoizes launch configurations by kernel

    def kernel(key, make, make_signature):
        inner = original(key, make, make_signature)
        rec = wrapped.get(id(inner))
        if rec is None or rec.inner is not inner:
            rec = wrapped[id(inner)] = _NumbaRecorded(inner)
        return rec

    numba_backend._kernel = kernel
    for cache in ("_launches_default", "_launches_by_stream"):
        getattr(numba_backend, cache, {}).clear()


# ---------------------------------------------------------------------------------------------
# the expected families


def expected(backend: str, kernels: str) -> dict[str, list[set]]:
    """{family: [the variants that must be launched]} for ``backend``, from the plan tables: every
    family with no flags and with all the flags it can take (every line of its source compiled and
    run at least once)."""
    if backend == "cupy":
        from gpuact.backends import cupy_backend

        ks = cupy_backend.ks
        out = {f: [set(), fused_flag_universe(ks, f)] for f in ks.FUSED_FAMILIES}
        if kernels == "all":
            out["vector"] = [set()]
            for kind in ks.VEC_TRAINING_KINDS:
                out[f"vector_{kind}"] = [set()]
            for family in ("elementwise", "elementwise_bias", "elementwise_grad", "elementwise_grad_bias"):
                out[family] = [set()]
            out["elementwise_glu_grad"] = out["elementwise_prelu_grad"] = [set()]
        return out
    from gpuact.backends._numba import kernels as K

    universe: dict[str, set] = {}
    for _, fn, _ in K.catalogue(np.float32, ndims=(1,)):
        family, flags = numba_family(fn.__name__)
        universe.setdefault(family, set()).update(flags)
    shared = ("softmax_", "sparsemax_")
    return {
        f: [set(), flags] if flags else [set()]
        for f, flags in universe.items()
        if kernels == "all" or f.startswith(shared)
    }


def missing(backend: str, kernels: str, dtypes=DTYPES) -> list[str]:
    seen: dict = {}
    for (b, family, flags, dtype), _ in RECORD.launches.items():
        if b == backend:
            seen.setdefault((family, dtype), []).append(flags)
    out = []
    for family, variants in expected(backend, kernels).items():
        for dtype in dtypes:
            for want in variants:
                if not any(want == got for got in seen.get((family, dtype.name), [])):
                    out.append(f"{backend} {family} {dtype.name} [{'+'.join(sorted(want)) or 'plain'}]")
    return out


# ---------------------------------------------------------------------------------------------
# devices


class Host:
    name = "numpy"
    backend = None

    def put(self, a):
        return np.array(a, copy=True)

    def get(self, a):
        return np.asarray(a)

    def forced_split(self):
        return contextlib.nullcontext()

    uncached = forced_split


class Cupy:
    name = "cupy"
    backend = None  # detected from the array: the common call takes the fast path where it can

    def __init__(self):
        import cupy

        from gpuact.backends import cupy_backend

        reason = cupy_backend.unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.cp = cupy
        set_allocator = getattr(cupy.cuda, "set_allocator", None)
        if set_allocator is not None:
            set_allocator(None)
        record_cupy(cupy_backend)
        self.module = cupy_backend

    def put(self, a):
        return self.cp.asarray(np.ascontiguousarray(a))

    def get(self, a):
        return a.get()

    @contextlib.contextmanager
    def forced_split(self):
        ks = self.module.ks
        saved = {}
        for planner in ("softmax_plan", "softmax_grad_plan", "sparsemax_plan", "sparsemax_grad_plan"):
            fn = getattr(ks, planner, None)
            if fn is None:
                continue
            force = {k: v for k, v in FORCED_SPLIT["cupy"].items() if k in inspect.signature(fn).parameters}
            if force:
                saved[planner] = fn
                setattr(ks, planner, functools.partial(_with_defaults, fn, force))
        try:
            yield
        finally:
            for planner, fn in saved.items():
                setattr(ks, planner, fn)

    @contextlib.contextmanager
    def uncached(self):
        yield  # the cases pick shapes whose tile does not fit the kernels' shared-memory cache


def _with_defaults(fn, force, *args, **kwargs):
    return fn(*args, **{**kwargs, **force})


class Numba:
    name = "numba"
    backend = "numba"

    def __init__(self):
        from numba import cuda

        from gpuact.backends import numba_backend

        reason = numba_backend.unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.cuda = cuda
        record_numba(numba_backend)
        self.module = numba_backend
        self.plan = numba_backend.P

    def put(self, a):
        return self.cuda.to_device(np.array(a, order="C", copy=True))

    def get(self, a):
        return a.copy_to_host()

    @contextlib.contextmanager
    def _patched(self, **values):
        saved = {k: getattr(self.plan, k) for k in values}
        for k, v in values.items():
            setattr(self.plan, k, v)
        try:
            yield
        finally:
            for k, v in saved.items():
                setattr(self.plan, k, v)

    def forced_split(self):
        return self._patched(**FORCED_SPLIT["numba"])

    def uncached(self):
        return self._patched(SPARSEMAX_CACHE_BYTES=0)  # the cached tile needs L * tx values of room


HOST = Host()


# ---------------------------------------------------------------------------------------------
# the cases: each returns its results (one array or a tuple), computed on device `d` from host data


def data(shape, dtype, seed=0, scale=2.0):
    rng = np.random.default_rng(hash((shape, seed)) % 2**32)
    return (rng.normal(0.0, scale, shape)).astype(dtype)


def mask_for(shape, seed=1):
    m = np.random.default_rng(seed).random(shape) > 0.3
    m.reshape(-1, shape[-1])[0] = False  # one slice fully masked: zeros
    return m


CASES: list = []


def case(kind: str, backends=("cupy", "numba")):
    def deco(fn):
        CASES.append((fn.__name__, kind, backends, fn))
        return fn

    return deco


@case("elementwise")
def vector_odd_length(d, dt):
    return gpuact.gelu(d.put(data((1001,), dt)), backend=d.backend)


@case("elementwise")
def vector_misaligned(d, dt):
    x = d.put(data((1002,), dt))[1:]  # one element in: not 16-byte aligned
    return gpuact.gelu(x, backend=d.backend), gpuact.backward.gelu(d.put(data((1001,), dt, 2)), x, backend=d.backend)


@case("elementwise")
def vector_in_place(d, dt):
    x = d.put(data((1001,), dt))
    gpuact.gelu(x, out=x, backend=d.backend)
    dy = d.put(data((1001,), dt, 3))
    gpuact.backward.gelu(dy, d.put(data((1001,), dt)), out=dy, backend=d.backend)
    return x, dy


@case("elementwise")
def vector_bias_and_grad(d, dt):
    x, dy, b = d.put(data((8, 125), dt)), d.put(data((8, 125), dt, 4)), d.put(data((125,), dt, 5))
    return (
        gpuact.gelu(x, bias=b, backend=d.backend),
        gpuact.backward.gelu(dy, x, backend=d.backend),
        gpuact.backward.gelu(dy, x, bias=b, backend=d.backend),
    )


@case("elementwise")
def elementwise_strided(d, dt):
    x, dy = d.put(data((64, 34), dt))[:, ::2], d.put(data((64, 34), dt, 6))[:, ::2]
    b = d.put(data((8, 1), dt, 7))  # along the leading axis: not a trailing bias
    x2, dy2 = d.put(data((8, 125), dt)), d.put(data((8, 125), dt, 8))
    return (
        gpuact.gelu(x, backend=d.backend),
        gpuact.backward.gelu(dy, x, backend=d.backend),
        gpuact.gelu(x2, bias=b, backend=d.backend),
        gpuact.backward.gelu(dy2, x2, bias=b, backend=d.backend),
    )


@case("elementwise")
def glu_and_prelu(d, dt):
    x, dy = d.put(data((6, 10), dt)), d.put(data((6, 5), dt, 9))
    alpha = d.put(np.linspace(0.0, 0.5, 10).astype(dt))
    dyp = d.put(data((6, 10), dt, 10))
    return (
        _entry.glu(x, -1, backend=d.backend),
        _entry.glu_grad(dy, x, -1, backend=d.backend),
        _entry.glu(x, -1, gate="swiglu", backend=d.backend),
        _entry.glu_grad(dy, x, -1, gate="geglu", backend=d.backend),
        _entry.prelu(x, alpha, backend=d.backend),
        _entry.prelu_grad(dyp, x, alpha, backend=d.backend),
    )


def _softmax_both(d, dt, shape, axis, twice=False):
    """softmax and its backward plain (in place too), then log_softmax with a mask and a bias."""
    xh, dyh = data(shape, dt), data(shape, dt, 11)
    bh = data(shape[axis:], dt, 12)  # along the reduced axis and those after it
    x, dy, b, m = d.put(xh), d.put(dyh), d.put(bh), d.put(mask_for(shape))
    out = []
    for _ in range(2 if twice else 1):  # the second call takes the memoized plan and launch
        out.append(_entry.softmax(x, axis, log=False, backend=d.backend))
        out.append(_entry.softmax_grad(dy, x, axis, log=False, backend=d.backend))
        out.append(_entry.softmax(x, axis, log=True, mask=m, bias=b, backend=d.backend))
        out.append(_entry.softmax_grad(dy, x, axis, log=True, mask=m, bias=b, backend=d.backend))
    y = d.put(xh)
    _entry.softmax(y, axis, log=False, out=y, backend=d.backend)
    return (*out, y)


@case("shared")
def softmax_warp(d, dt):
    return _softmax_both(d, dt, (16, 100), -1, twice=True)


@case("shared")
def softmax_cols_cached(d, dt):
    return _softmax_both(d, dt, (4, 200, 8), 1, twice=True)


@case("shared", backends=("cupy",))
def softmax_cols_uncached(d, dt):
    # 32 columns of 1000: a tile of 128 KB, beyond the kernels' 96 KiB shared-memory cache (Numba's
    # softmax keeps no tile)
    return _softmax_both(d, dt, (1, 1000, 32), 1)


@case("shared")
def softmax_split(d, dt):
    with d.forced_split():
        return (*_softmax_both(d, dt, (2, 3000), -1), *_softmax_both(d, dt, (600, 2), 0)[:2])


@case("shared")
def softmax_transposed(d, dt):
    x = d.put(data((40, 30), dt)).T  # not contiguous: the Numba path copies it into rows first
    return _entry.softmax(x, 0, log=False, backend=d.backend)


def _sparsemax_both(d, dt, shape, axis):
    x, dy = d.put(data(shape, dt)), d.put(data(shape, dt, 13))
    y = d.put(data(shape, dt))
    _entry.sparsemax(y, axis, out=y, backend=d.backend)
    return (
        _entry.sparsemax(x, axis, backend=d.backend),
        _entry.sparsemax_grad(dy, x, axis, backend=d.backend),
        y,
    )


@case("shared")
def sparsemax_warp(d, dt):
    return _sparsemax_both(d, dt, (16, 100), -1)


@case("shared")
def sparsemax_cols_cached(d, dt):
    return _sparsemax_both(d, dt, (4, 200, 8), 1)


@case("shared")
def sparsemax_cols_uncached(d, dt):
    # CuPy: 32 columns of 1000, beyond the shared-memory cache; Numba: its cache switched off (the
    # simulator runs each GPU thread as Python, so the shape stays small)
    with d.uncached():
        return _sparsemax_both(d, dt, (1, 1000, 32) if RECORD.backend == "cupy" else (4, 200, 8), 1)


@case("shared")
def sparsemax_long_rows(d, dt):
    # where a split path would take over: a long row, and a non-last axis with a small inner size
    with d.forced_split():
        return (*_sparsemax_both(d, dt, (2, 3000), -1), *_sparsemax_both(d, dt, (600, 2), 0))


def elementwise_kernel_smoke(d, dt):
    return gpuact.gelu(d.put(data((64, 34), dt))[:, ::2], backend=d.backend)


# --smoke: a RawKernel (the vector kernel) and an ElementwiseKernel (a strided input) on CuPy, a
# Numba kernel: one compile each, within the check's first 20 s
SMOKE = {"cupy": (vector_odd_length, elementwise_kernel_smoke), "numba": (vector_odd_length,)}


# ---------------------------------------------------------------------------------------------


def compare(got, want, dtype) -> str | None:
    rtol, atol = TOLERANCE[dtype]
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        first = f"{got.ravel()[i]!r} != {want.ravel()[i]!r}"
        return f"{int(bad.sum())} of {bad.size} elements differ, the first at flat index {i}: {first}"
    return None


def run_case(dev, name, fn, dtype) -> bool:
    start = time.perf_counter()
    _say(f"case {dev.name} {dtype.name} {name} ...")
    RECORD.dtype, RECORD.backend = dtype.name, dev.name
    try:
        got = fn(dev, dtype)
        got = tuple(dev.get(a) for a in (got if isinstance(got, tuple) else (got,)))
        RECORD.dtype = None
        want = fn(HOST, dtype)
        want = want if isinstance(want, tuple) else (want,)
    except Exception:
        _say(f"FAIL {dev.name} {dtype.name} {name}: raised\n{traceback.format_exc()}")
        return False
    finally:
        RECORD.dtype = None
    problems = [f"result {k}: {p}" for k, (g, w) in enumerate(zip(got, want)) if (p := compare(g, w, dtype))]
    if problems:
        _say(f"FAIL {dev.name} {dtype.name} {name}: " + "; ".join(problems))
        return False
    _say(f"ok   {dev.name} {dtype.name} {name} ({time.perf_counter() - start:.2f} s)")
    return True


def header() -> None:
    from importlib import metadata

    versions = []
    for dist in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    where = Path(gpuact.__file__).parent
    _say(
        f"gpuact {getattr(gpuact, '__version__', '?')} from {where}; python {sys.version.split()[0]}; "
        + ", ".join(versions)
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", action="append", choices=("cupy", "numba"), help="repeat for both (default both)")
    p.add_argument(
        "--kernels",
        choices=("all", "shared"),
        default="all",
        help="shared: only the softmax and sparsemax cases (racecheck, synccheck)",
    )
    p.add_argument(
        "--dtype",
        action="append",
        choices=[d.name for d in DTYPES],
        help="repeat for both (default both); racecheck and synccheck take one each: the kernels' shared "
        "memory and barriers are in the compute type, float32 for both",
    )
    p.add_argument("--smoke", action="store_true", help="one RawKernel, one ElementwiseKernel, one Numba kernel")
    p.add_argument("--json", metavar="PATH", help="write what was launched, what is missing and what failed")
    args = p.parse_args(argv)
    header()
    backends = args.backend or ["cupy", "numba"]
    dtypes = tuple(d for d in DTYPES if not args.dtype or d.name in args.dtype)
    failures: list[str] = []
    report = {"backends": {}, "launched": [], "missing": [], "failures": failures}
    for backend in backends:
        try:
            dev = {"cupy": Cupy, "numba": Numba}[backend]()
        except Exception as exc:
            failures.append(f"{backend}: not usable: {type(exc).__name__}: {exc}")
            _say(f"FAIL {backend}: not usable: {type(exc).__name__}: {exc}")
            report["backends"][backend] = f"not usable: {exc}"
            continue
        report["backends"][backend] = "ran"
        if args.smoke:
            todo = [(fn.__name__, fn, dtypes[:1]) for fn in SMOKE[backend]]
        else:
            todo = [
                (name, fn, dtypes)
                for name, kind, where, fn in CASES
                if backend in where and (args.kernels == "all" or kind == "shared")
            ]
        for name, fn, dtypes in todo:
            for dtype in dtypes:
                if not run_case(dev, name, fn, dtype):
                    failures.append(f"{backend} {dtype.name} {name}")
        if not args.smoke:
            report["missing"] += missing(backend, args.kernels, dtypes)

    families: dict = {}
    for (backend, family, flags, dtype), count in sorted(RECORD.launches.items(), key=lambda kv: repr(kv[0])):
        entry = families.setdefault((backend, family), {"dtypes": set(), "variants": set(), "launches": 0})
        entry["dtypes"].add(dtype)
        entry["variants"].add("+".join(sorted(flags)) or "plain")
        entry["launches"] += count
        report["launched"].append(
            {"backend": backend, "family": family, "flags": sorted(flags), "dtype": dtype, "launches": count}
        )
    for (backend, family), e in sorted(families.items()):
        _say(
            f"launched {backend:5} {family:28} {','.join(sorted(e['dtypes'])):16} "
            f"{e['launches']:4} launches; variants: {', '.join(sorted(e['variants']))}"
        )
    for line in report["missing"]:
        _say(f"NOT LAUNCHED {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    bad = bool(failures or report["missing"])
    _say(f"{'FAILED' if bad else 'passed'}: {len(failures)} failures, {len(report['missing'])} families not launched")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
