"""Input that must never crash, corrupt or mislead, class by class, on every path that can take it.

Every public test here runs through the ``be`` fixture: the NumPy path as installed (compiled
kernels) and on its ufunc formulas, CuPy and Numba where a GPU is usable, Numba under the CUDA
simulator (tests/test_numba_simulator.py) and CuPy under the stand-in (tests/test_cupy_standin.py).
Crash cases (read-only outputs) run in a subprocess, so that a segfault fails one test instead of
ending the run.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import gpuact
from gpuact.backends import _native
from gpuact.layers import PReLU, Softmax
from tests import reference
from tests.reference import assert_close

ROOT = Path(__file__).resolve().parents[1]
FLOATS = [np.float16, np.float32, np.float64]


def _run_python(code: str, env_extra=None, timeout=300):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ufunc_result(fn, *args, **kwargs):
    """What the NumPy ufunc path gives (the compiled kernels off), the cross-path reference."""
    saved = _native._state
    _native._state = {"lib": None, "reason": "off for a cross-path comparison"}
    try:
        return fn(*args, **kwargs)
    finally:
        _native._state = saved


# ---- 1. read-only out ---------------------------------------------------------------------------


@pytest.mark.parametrize("native", ["1", "0"], ids=["compiled", "ufunc"])
def test_read_only_out_is_refused_before_any_work(native, tmp_path):
    code = f"""
        import numpy as np, gpuact
        from gpuact.layers import PReLU, Softmax
        x = np.linspace(-3, 3, 4096, dtype=np.float32).reshape(64, 64)
        path = {str(tmp_path / "ro.bin")!r}
        np.zeros(x.shape, np.float32).tofile(path)
        frozen = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
        raw = bytes(x.size * 4)
        from_bytes = np.frombuffer(raw, dtype=np.float32).reshape(x.shape)
        calls = [lambda out: gpuact.sigmoid(x, out=out), lambda out: gpuact.relu(x, out=out),
                 lambda out: gpuact.softmax(x, axis=0, out=out), lambda out: gpuact.log_softmax(x, out=out),
                 lambda out: gpuact.sparsemax(x, out=out), lambda out: PReLU(0.1)(x, out=out),
                 lambda out: Softmax()(x, mask=x > 0, out=out), lambda out: gpuact.glu(x, out=out[:, :32])]
        for out in (frozen, from_bytes):
            for call in calls:
                try:
                    call(out)
                except ValueError as exc:
                    assert "read-only" in str(exc), exc
                else:
                    raise AssertionError("a read-only out was accepted")
        # out=x where x itself is read-only (frombuffer of bytes): refused, the bytes unchanged
        try:
            gpuact.sigmoid(from_bytes, out=from_bytes)
        except ValueError:
            pass
        else:
            raise AssertionError("wrote into a bytes object")
        assert raw == bytes(x.size * 4) and not np.asarray(frozen).any()
        print("ok")
    """
    result = _run_python(code, {"GPUACT_NATIVE": native})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# ---- 2. partly overlapping out ------------------------------------------------------------------


def _shifted_pair(be, n, shift, dtype, seed=0):
    """A buffer and its host copy; ``x`` and ``out`` are windows of it ``shift`` elements apart."""
    host = (np.random.default_rng(seed).normal(0, 3, n + abs(shift))).astype(dtype)
    buf = be.asarray(host.copy())  # the NumPy backend's asarray would hand back host itself
    if shift > 0:
        return buf, host, buf[shift:], buf[:-shift], slice(shift, None), slice(None, -shift)
    return buf, host, buf[:shift], buf[-shift:], slice(None, shift), slice(-shift, None)


@pytest.mark.parametrize("shift", [1, -1, 5, -64])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("large", [False, True])
def test_partly_overlapping_out_elementwise(be, dtype, shift, large):
    # large: beyond one 128K block (and the threads) on the CPU; small: the CPU's one-call fast path
    n = (200_001 if be.name == "numpy" else 3001) if large else 301
    buf, host, x, out, xs, outs = _shifted_pair(be, n, shift, dtype)
    expected = reference.elementwise("sigmoid", host[xs])
    gpuact.sigmoid(x, out=out)
    got = be.to_numpy(buf)[outs]
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("shift", [1, -5])
@pytest.mark.parametrize("n", [301, 200_001])
def test_partly_overlapping_out_backward(be, shift, n):
    n = n if be.name == "numpy" else min(n, 3001)
    buf, host, x, out, xs, outs = _shifted_pair(be, n, shift, np.float32)
    dy_host = np.random.default_rng(9).normal(0, 1, host[xs].shape).astype(np.float32)
    expected = dy_host * reference.grad("sigmoid", host[xs])
    gpuact.backward.sigmoid(be.asarray(dy_host), x, out=out)  # out overlaps x
    assert_close(be.to_numpy(buf)[outs], expected, np.float32)
    buf, host, dy, out, dys, outs = _shifted_pair(be, n, shift, np.float32, seed=3)
    x_host = np.random.default_rng(4).normal(0, 3, host[dys].shape).astype(np.float32)
    expected = host[dys] * reference.grad("sigmoid", x_host)
    gpuact.backward.sigmoid(dy, be.asarray(x_host), out=out)  # out overlaps dy
    assert_close(be.to_numpy(buf)[outs], expected, np.float32)


@pytest.mark.parametrize("shift", [1, -3])
def test_partly_overlapping_out_softmax_glu_sparsemax_prelu(be, shift):
    rows, length = 40, 50
    n = rows * length
    dtype = np.float32
    for name in ("softmax", "log_softmax", "sparsemax", "prelu", "masked"):
        buf, host, x, out, xs, outs = _shifted_pair(be, n, shift, dtype, seed=len(name))
        x2, out2, xh = x.reshape(rows, length), out.reshape(rows, length), host[xs].reshape(rows, length)
        if name == "softmax":
            gpuact.softmax(x2, axis=0, out=out2)
            expected = reference.softmax(xh, axis=0)
        elif name == "log_softmax":
            gpuact.log_softmax(x2, out=out2)
            expected = reference.softmax(xh, axis=-1, log=True)
        elif name == "sparsemax":
            gpuact.sparsemax(x2, out=out2)
            expected = reference.sparsemax(xh)
        elif name == "prelu":
            PReLU(np.linspace(0.1, 0.5, length))(x2, out=out2)
            expected = np.where(xh > 0, xh, np.linspace(0.1, 0.5, length) * xh)
        else:
            keep = np.arange(length) % 3 != 0
            Softmax()(x2, mask=be.asarray(keep), out=out2)
            expected = reference.softmax(np.where(keep, xh, -np.inf), axis=-1) * keep
        assert_close(be.to_numpy(buf)[outs].reshape(rows, length), expected, dtype)
    # glu: the output (half the size) overlaps the input's second half
    host = np.random.default_rng(3).normal(0, 3, (rows, 2 * length)).astype(dtype)
    buf = be.asarray(host.reshape(-1).copy())
    x = buf.reshape(rows, 2 * length)
    out = buf[n - shift * 7 : 2 * n - shift * 7].reshape(rows, length) if shift > 0 else buf[:n].reshape(rows, length)
    gpuact.glu(x, out=out)
    assert_close(be.to_numpy(out), reference.glu(host), dtype)


# ---- 3. Ctrl-C ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("native", ["1", "0"], ids=["compiled", "ufunc"])
def test_an_interrupted_call_writes_nothing_after_it_returns(native):
    code = """
        import _thread, threading, time
        import numpy as np, gpuact
        from gpuact.backends import numpy_backend
        if numpy_backend.THREADS < 2:
            print("ok (one core: no pool threads to outlive the call)"); raise SystemExit
        x = np.random.default_rng(0).normal(0, 3, 1 << 25).astype(np.float64)
        for delay in (0.02, 0.05, 0.1, 0.2, 0.4):
            out = np.zeros_like(x)
            timer = threading.Timer(delay, _thread.interrupt_main)
            timer.start()
            try:
                gpuact.gelu(x, out=out)
            except KeyboardInterrupt:
                pass
            else:
                timer.cancel()
                continue  # finished before the interrupt: try a shorter call window
            written = np.count_nonzero(out)
            time.sleep(0.5)
            assert np.count_nonzero(out) == written, "a pool thread kept writing after the call returned"
            if 0 < written < out.size:
                print("ok"); break
        else:
            print("ok (never caught mid-call)")
    """
    result = _run_python(code, {"GPUACT_NATIVE": native}, timeout=600)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stdout + result.stderr[-3000:]


# ---- 4. long reductions ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", ["compiled", "ufunc"])
def test_long_float32_reductions_keep_their_accuracy(path, monkeypatch):
    # The NumPy path's (the GPU kernels' compensated sums are checked on the shim and the simulator
    # with long split rows: 2**25 elements are beyond either)
    if path == "ufunc":
        monkeypatch.setattr(_native, "_state", {"lib": None, "reason": "off"})
    zeros = np.zeros((2**25, 2), np.float32)
    y = gpuact.softmax(zeros, axis=0)
    np.testing.assert_allclose(y, 2.0**-25, rtol=1e-5)
    x = np.random.default_rng(0).standard_normal((2**21, 4)).astype(np.float32)
    assert_close(gpuact.log_softmax(x, axis=0), reference.softmax(x.astype(np.float64), axis=0, log=True), np.float32)
    row = np.random.default_rng(1).standard_normal(2**25).astype(np.float32)
    assert_close(gpuact.softmax(row), reference.softmax(row.astype(np.float64)), np.float32)
    assert_close(gpuact.log_softmax(row), reference.softmax(row.astype(np.float64), log=True), np.float32)


# ---- 5. sparsemax is shift-invariant ------------------------------------------------------------


@pytest.mark.parametrize("offset", [1e6, -1e6, 1e8, 3e30])
def test_sparsemax_is_shift_invariant(be, offset):
    x = np.random.default_rng(2).normal(0, 1, (8, 33)).astype(np.float32)
    x[0] = [1.0] + [0.0] * 32
    shifted = (x.astype(np.float64) + offset).astype(np.float32)  # what float32 can hold of x + offset
    y = be.to_numpy(gpuact.sparsemax(be.asarray(shifted)))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    assert_close(y, reference.sparsemax(shifted.astype(np.float64) - offset), np.float32)
    big = be.to_numpy(gpuact.sparsemax(be.asarray(np.array([1e8, 0.0], np.float32))))
    np.testing.assert_array_equal(big, [1.0, 0.0])


def test_sparsemax_of_non_finite_slices(be):
    x = np.array([[np.inf, 0.0, 1.0], [-np.inf] * 3, [np.nan, 1.0, 2.0], [-np.inf, 1.0, 1.0]], np.float32)
    y = be.to_numpy(gpuact.sparsemax(be.asarray(x)))
    assert np.isnan(y[:3]).all()  # +inf, all -inf, NaN: no projection
    np.testing.assert_allclose(y[3], [0.0, 0.5, 0.5])


# ---- 6, 7. parameter edges, one answer on every path ---------------------------------------------


def test_limits_at_parameter_edges(be):
    x = np.array([-np.inf, -1.0, 0.0, 1.0, np.inf, np.nan], np.float32)
    xd = be.asarray(x)
    np.testing.assert_array_equal(be.to_numpy(PReLU(0.0)(xd)), [0, 0, 0, 1, np.inf, np.nan])
    np.testing.assert_array_equal(be.to_numpy(PReLU(np.zeros(6, np.float32))(xd)), [0, 0, 0, 1, np.inf, np.nan])
    tiny = be.to_numpy(gpuact.celu(xd, alpha=1e-39))  # a subnormal float32 alpha: 1 / alpha is inf
    np.testing.assert_array_equal(tiny[2:], [0, 1, np.inf, np.nan])
    assert np.all(tiny[:2] <= 0) and np.all(tiny[:2] >= -2e-39)
    with pytest.raises(ValueError, match="alpha"):
        gpuact.celu(xd, alpha=0.0)
    big = np.array([3e38, 2e38, -3e38, 1.7e38], np.float32)
    y = be.to_numpy(gpuact.squareplus(be.asarray(big)))
    assert np.isfinite(y).all()
    assert_close(y, reference.elementwise("squareplus", big), np.float32)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("soft_shrink", {"threshold": math.nan}),
        ("relu", {"alpha": math.nan}),
        ("relu", {"max_value": math.nan}),
        ("elu", {"alpha": math.nan}),
        ("leaky_relu", {"negative_slope": math.nan}),
        ("squareplus", {"b": math.nan}),
        ("hard_shrink", {"threshold": math.nan}),
    ],
)
def test_nan_parameters_are_refused(be, name, kwargs):
    with pytest.raises(ValueError, match="NaN"):
        getattr(gpuact, name)(be.asarray(np.ones(3, np.float32)), **kwargs)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("leaky_relu", {"negative_slope": 1e-45}),
        ("leaky_relu", {"negative_slope": 1e-50}),
        ("squareplus", {"b": 1e39}),
        ("squareplus", {"b": 1e70}),
        ("squareplus", {"b": 1e-45}),
        ("elu", {"alpha": 1e-45}),
        ("relu", {"alpha": 1e-50, "threshold": 1e-45}),
        ("threshold", {"threshold": 1e-46, "default_value": math.nan}),
    ],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_every_path_gives_the_same_answer_on_odd_parameters(be, name, kwargs, dtype):
    with np.errstate(over="ignore"):  # float16 holds neither 1e30 nor 3e38: they become inf
        x = np.array([-np.inf, -1e30, -1.0, -1e-45, 0.0, 1e-45, 1.0, 3e38, np.inf, np.nan]).astype(dtype)
    want = _ufunc_result(getattr(gpuact, name), x, **kwargs)
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(x), **kwargs))
    if dtype == np.float16 or be.name != "numpy":
        assert_close(got, want.astype(np.float64), dtype)  # another math library: within tolerance
    else:
        np.testing.assert_array_equal(got, want)  # the same formulas: the same bits


# ---- 8. subnormals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "sigmoid",
        "silu",
        "gelu",
        "softplus",
        "exponential",
        "elu",
        "selu",
        "celu",
        "log_sigmoid",
        "mish",
        "tanh",
        "softsign",
        "leaky_relu",
        "swish",
    ],
)
def test_subnormal_results_are_kept(be, name):
    x = np.array([-100.0, -103.0, -87.5, -1e-40, 1e-40, -3e-45, -1e-38], np.float32)
    want = reference.elementwise({"swish": "silu"}.get(name, name), x.astype(np.float64))
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(x)))
    # within the float32 tolerance relatively, or absolutely within a few of the smallest
    # subnormal, times |x| where a subnormal intermediate is scaled by x (silu, mish: x * s(x))
    err = np.abs(got.astype(np.float64) - want)
    bound = np.maximum(1e-5 * np.abs(want), 8 * 2.0**-149 * np.maximum(1.0, np.abs(x.astype(np.float64))))
    assert (err <= bound).all(), f"{name}: {got} against {want}"
    tiny = (np.abs(want) >= 2.0**-149) & (np.abs(want) < np.finfo(np.float32).tiny)
    assert (got[tiny] != 0).all(), f"{name} flushed {x[tiny & (got == 0)]} to zero"


# ---- 9. masked arrays -------------------------------------------------------------------------------


def test_masked_arrays_keep_their_mask():
    data = np.random.default_rng(4).normal(0, 2, (4, 6)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[0, 1] = mask[2, :] = True
    x = np.ma.MaskedArray(data, mask=mask)
    y = gpuact.sigmoid(x)
    assert isinstance(y, np.ma.MaskedArray) and (y.mask == mask).all()
    assert_close(y.data[~mask], reference.elementwise("sigmoid", data[~mask]), np.float32)
    s = gpuact.softmax(x)
    assert isinstance(s, np.ma.MaskedArray) and (s.mask == mask).all()
    expected = reference.softmax(np.where(mask, -np.inf, data), axis=-1)
    assert_close(s.data[~mask], expected[~mask], np.float32)
    assert np.allclose(s.sum(axis=-1)[[0, 1, 3]], 1.0)  # masked entries left out of every row
    sp = gpuact.sparsemax(x)
    assert (sp.mask == mask).all() and np.allclose(sp.sum(axis=-1)[[0, 1, 3]], 1.0)
    assert (sp.data[mask[:, :] & ~mask.all(axis=-1, keepdims=True)] == 0).all()
    g = gpuact.glu(x)
    assert (g.mask == (mask[:, :3] | mask[:, 3:])).all()
    out = np.ma.MaskedArray(np.zeros_like(data))
    assert gpuact.relu(x, out=out) is out and (out.mask == mask).all()
    with pytest.raises(TypeError, match="MaskedArray"):
        gpuact.relu(x, out=np.zeros_like(data))
    with pytest.raises(TypeError, match="NumPy path"):
        gpuact.relu(x, backend="cupy")
    layer = Softmax()(x, mask=np.arange(6) < 5)
    assert (layer.mask == (mask | ~(np.arange(6) < 5))).all()


# ---- 10, 11. byte order and subclasses -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", ">i4", "<f4"])
def test_other_byte_orders_are_computed_into_native_order(dtype):
    x = np.random.default_rng(5).normal(0, 3, (6, 8)).astype(dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    for fn in (
        gpuact.sigmoid,
        gpuact.softmax,
        gpuact.sparsemax,
        gpuact.glu,
        gpuact.log_softmax,
        lambda a: gpuact.softmax(a, axis=0),
        PReLU(0.25),
    ):
        got, want = fn(x), fn(native)
        assert got.dtype.isnative and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclasses_are_computed_as_plain_arrays(tmp_path):
    m = np.matrix(np.random.default_rng(6).normal(0, 1, (1, 300_000)))
    for fn in (gpuact.sigmoid, gpuact.sparsemax, gpuact.softmax, gpuact.glu, gpuact.relu):
        y = fn(m)
        assert type(y) is np.ndarray
        np.testing.assert_array_equal(y, fn(np.asarray(m)))
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float32, mode="w+", shape=(5, 7))
    mm[:] = np.arange(35).reshape(5, 7)
    out = np.memmap(tmp_path / "y.bin", dtype=np.float32, mode="w+", shape=(5, 7))
    assert gpuact.tanh(mm, out=out) is out
    np.testing.assert_array_equal(np.asarray(out), gpuact.tanh(np.asarray(mm)))


# ---- 12. a CUDA array with no GPU library -----------------------------------------------------------


def test_a_cuda_array_without_any_gpu_library_says_what_to_install():
    code = """
        import sys
        sys.modules["cupy"] = None       # as if neither were installed
        sys.modules["numba"] = None
        import gpuact
        class Foreign:
            __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}
        try:
            gpuact.relu(Foreign())
        except RuntimeError as exc:
            assert "pip install" in str(exc), exc
            print("ok")
    """
    result = _run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# ---- 13. memory: no full copies of broadcast inputs, bounded scratch ----------------------------------


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


MIB = 1 << 20


@pytest.mark.parametrize("path", ["compiled", "ufunc"])
def test_peak_memory_stays_near_the_output(path, monkeypatch):
    from gpuact.backends.numpy_backend import pool

    if path == "ufunc":
        monkeypatch.setattr(_native, "_state", {"lib": None, "reason": "off"})
    n = 1 << 22
    # scratch the NumPy path may use beyond the result: a few 128K-element blocks per thread
    # (float64 at most), or for slice-wise ops two chunks of slices per thread
    slack = 16 * pool.BLOCK * 8 * pool.THREADS + 4 * MIB
    cases = {
        "relu of a broadcast scalar": (lambda: gpuact.relu(np.broadcast_to(np.float32(2.0), (n,))), 4 * n),
        "gelu of a strided view": (lambda: gpuact.gelu(_STRIDED[::2]), 4 * n),
        "float16 sigmoid": (lambda: gpuact.sigmoid(_F16), 2 * n),
        "float16 softmax": (lambda: gpuact.softmax(_F16.reshape(1024, -1)), 2 * n),
        "softmax over non-adjacent axes": (lambda: gpuact.softmax(_F32.reshape(64, 256, 256), axis=(0, 2)), 4 * n),
        "sparsemax": (lambda: gpuact.sparsemax(_F32.reshape(4096, -1)), 4 * n),
        "glu": (lambda: gpuact.glu(_F32.reshape(2048, -1)), 2 * n),
        "PReLU": (lambda: PReLU(np.linspace(0, 1, 1024, dtype=np.float32))(_F32.reshape(-1, 1024)), 4 * n),
    }
    over = {}
    for name, (fn, result_bytes) in cases.items():
        peak, _ = _peak_bytes(fn)
        if peak > result_bytes + slack:
            over[name] = f"{peak / MIB:.1f} MiB for a {result_bytes / MIB:.1f} MiB result"
    assert not over, over


_F32 = np.random.default_rng(7).normal(0, 3, 1 << 22).astype(np.float32)
_F16 = _F32.astype(np.float16)
_STRIDED = np.repeat(_F32, 2)


# ---- 14. Keras 3 interop ------------------------------------------------------------------------------


def test_keras3_serialized_functions_and_layer_configs_load():
    fn = {"module": "builtins", "class_name": "function", "config": "gelu", "registered_name": "function"}
    assert gpuact.deserialize(fn) is gpuact.gelu
    assert gpuact.get(fn) is gpuact.gelu
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    configs = {
        "ReLU": {
            "name": "re_lu",
            "trainable": True,
            "dtype": dtype,
            "max_value": 6.0,
            "negative_slope": 0.0,
            "threshold": 0.0,
        },
        "LeakyReLU": {"name": "leaky_re_lu", "trainable": True, "dtype": dtype, "negative_slope": 0.3},
        "PReLU": {
            "name": "p_re_lu",
            "trainable": True,
            "dtype": dtype,
            "alpha_initializer": {
                "module": "keras.initializers",
                "class_name": "Zeros",
                "config": {},
                "registered_name": None,
            },
            "alpha_regularizer": None,
            "alpha_constraint": None,
            "shared_axes": None,
        },
        "ELU": {"name": "elu", "alpha": 1.0, "trainable": True, "dtype": dtype},
        "Softmax": {"name": "softmax", "trainable": True, "dtype": dtype, "axis": 1},
        "Activation": {"name": "activation", "trainable": True, "dtype": dtype, "activation": "gelu"},
    }
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    for name, config in configs.items():
        layer = getattr(gpuact.layers, name).from_config(config)
        assert layer(x).shape == x.shape
        again = gpuact.layers.deserialize({"module": "keras.layers", "class_name": name, "config": config})
        np.testing.assert_array_equal(again(x), layer(x))
    np.testing.assert_array_equal(gpuact.layers.PReLU.from_config(configs["PReLU"])(x), np.maximum(x, 0))


# ---- 15. small items -----------------------------------------------------------------------------------


def test_prelu_arguments_are_checked_whatever_their_form():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="shared"):
        PReLU([0.1, 0.2, 0.3, 0.4], shared_axes=[2])(x)  # a list alpha is checked like an array
    with pytest.raises(TypeError, match="real"):
        PReLU(np.array([0.1 + 1j]))
    with pytest.raises(ValueError, match="shared_axes"):
        PReLU(0.1, shared_axes=True)


def test_softmax_of_a_0d_array_says_why():
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else ValueError, match="0-d"):
        gpuact.softmax(np.float32(1.0) + np.zeros((), np.float32), backend="numpy")


def test_out_of_the_wrong_kind_names_the_input_kind():
    with pytest.raises(TypeError, match="numpy.ndarray"):
        gpuact.relu(np.ones(3, np.float32), out=[0.0] * 3, backend="numpy")
