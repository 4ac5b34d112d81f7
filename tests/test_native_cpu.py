"""The NumPy path's compiled kernels (kernels/gpuact_cpu.cc through gpuact/backends/_native.py).

The public tests already run every activation twice on the CPU: as installed (``be`` = numpy, the
compiled kernels where they were built) and with them turned off (``be`` = numpy-ufunc). These
tests add what those cannot see: that the library is built wherever it can be, that it exports
every op, the accuracy of its own float32 math over the whole float32 range in ulps, large arrays
cut across threads, in-place and overlapping ``out``, and that loading it leaves the process's
floating-point state alone.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import gpuact
from gpuact._contract.ops import ELEMENTWISE_OPS, GATES
from gpuact.backends import _native
from gpuact.backends.numpy_backend import elementwise_ops, formulas, pool
from tests import reference
from tests.reference import assert_close

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import hatch_build  # noqa: E402  (the checkout root, put on the path just above)


def _skip_unless_loaded():
    reason = _native.unavailable_reason()
    if reason is not None:
        pytest.skip(f"compiled CPU kernels not in use: {reason}")


def test_library_is_built_wherever_a_compiler_is():
    if os.environ.get("GPUACT_NATIVE", "1") == "0" or os.environ.get("GPUACT_BUILD_NATIVE", "1") == "0":
        pytest.skip("turned off in the environment")
    if hatch_build.compiler() is None:
        pytest.skip("no C++ compiler here: the ufunc path is all there is (tested as be=numpy-ufunc)")
    # an install with a compiler that silently fell back to ufuncs would pass every other test
    assert _native.available(), _native.unavailable_reason()


def test_every_op_is_exported():
    _skip_unless_loaded()
    assert _native.exported_ops() == list(ELEMENTWISE_OPS)
    for dtype in (np.float32, np.float64):
        assert _native.compiled_softmax_rows(dtype) is not None
    assert _native.elementwise_kernel("relu", np.float16) is None  # float16 takes the ufunc path
    # what the NumPy path routes to the library
    assert all(_native.elementwise_kernel(op, np.float32) is not None for op in ELEMENTWISE_OPS)
    assert _native.elementwise_kernel("softsign", np.float64) is not None
    assert _native.elementwise_kernel("tanh", np.float64) is None
    assert _native.softmax_rows_kernel(np.float64) is None


def _all_floats32(lo: float, hi: float, step: int) -> np.ndarray:
    """Every ``step``-th float32 between ``lo`` and ``hi`` (both of one sign)."""
    a, b = sorted((np.float32(lo).view(np.int32), np.float32(hi).view(np.int32)))
    return np.arange(a, b, step, dtype=np.int32).view(np.float32)


def _ulps(actual32: np.ndarray, exact64: np.ndarray) -> np.ndarray:
    spacing = np.spacing(np.abs(exact64).astype(np.float32)).astype(np.float64)
    return np.abs(actual32.astype(np.float64) - exact64) / spacing


def _run(op, x, *params):
    kernel = _native.compiled_elementwise(op, x.dtype)  # also the float64 kernels the path does not route to
    y = np.empty_like(x)
    elementwise_ops._native_elementwise(kernel, x, y, params, pool.PARALLEL_MIN)
    return y


@pytest.fixture
def threads_from_parallel_min(monkeypatch):
    """The compiled passes shared among the threads from PARALLEL_MIN elements (their own thresholds
    are 2**16 to 2**19), so that the tests' arrays cross threads at a few hundred thousand
    elements."""
    monkeypatch.setattr(pool, "compiled_parallel_min", lambda op: pool.PARALLEL_MIN)
    monkeypatch.setattr(pool, "COMPILED_SOFTMAX_PARALLEL_MIN", pool.PARALLEL_MIN)
    monkeypatch.setattr(pool, "POOLED_SOFTMAX_PARALLEL_MIN", pool.PARALLEL_MIN)


# (op, params, exact float64 function, input ranges, ulp bound). The bounds are what
# kernels/gpuact_host_simd.h promises for its math, measured here on ~10**6 points per range;
# The contract's float32 tolerance (1e-5 relative, ~84 ulp; docs/contract.rst) is far looser.
ULP_CASES = [
    ("exponential", (), np.exp, [(-87.0, -1e-6), (1e-6, 88.0)], 2.0),
    ("elu", (1.0,), np.expm1, [(-80.0, -1e-30)], 2.0),
    ("tanh", (), np.tanh, [(-9.0, -1e-30), (1e-30, 9.0)], 5.0),
    ("sigmoid", (), lambda v: 1.0 / (1.0 + np.exp(-v)), [(-80.0, -1e-6), (1e-6, 80.0)], 4.0),
    ("softplus", (), lambda v: np.logaddexp(v, 0.0), [(-80.0, -1e-6), (1e-6, 80.0)], 4.0),
    ("log_sigmoid", (), lambda v: -np.logaddexp(-v, 0.0), [(-80.0, -1e-6), (1e-6, 15.0)], 4.0),
]


@pytest.mark.parametrize("op, params, exact, ranges, bound", ULP_CASES, ids=[c[0] for c in ULP_CASES])
def test_float32_math_is_within_its_ulp_bound(op, params, exact, ranges, bound):
    _skip_unless_loaded()
    for lo, hi in ranges:
        x = _all_floats32(lo, hi, 997)
        ulps = _ulps(_run(op, x, *params), exact(x.astype(np.float64)))
        worst = int(np.argmax(ulps))
        assert ulps[worst] <= bound, f"{op}({x[worst]!r}): {ulps[worst]:.2f} ulp"


def test_gelu_erfc_matches_scipy():
    _skip_unless_loaded()
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([_all_floats32(-14.0, -1e-6, 331), _all_floats32(1e-6, 14.0, 331)])
    exact = 0.5 * x.astype(np.float64) * special.erfc(-x.astype(np.float64) / np.sqrt(2.0))
    # the fitted erfc is good to 1e-7 relative; its e**(-a**2) in float32 adds a**2 * 2**-24
    assert_close(_run("gelu", x), exact, np.float32)


def test_gelu_is_within_its_documented_relative_error():
    """kernels/gpuact_host_simd.h and docs/contract.rst promise 1e-6 relative where |gelu| exceeds
    1e-6 and 5e-6 over its normal results (the fitted tail, 2.2e-7 in float32, plus the rounding of
    x**2 / 2); every 61st float32 up to |x| = 14 (where the results turn subnormal) and on to 1e4
    (the measured worst cases, 7.6e-7 near -4.9 and 4.6e-6 near -13.1, are from every 7th)."""
    _skip_unless_loaded()
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([_all_floats32(-14.0, -1e-30, 61), _all_floats32(1e-30, 1e4, 61)])
    exact = 0.5 * x.astype(np.float64) * special.erfc(-x.astype(np.float64) / np.sqrt(2.0))
    rel = np.abs(_run("gelu", x) - exact) / np.abs(exact)
    normal = np.abs(exact) > np.finfo(np.float32).tiny
    above_atol = np.abs(exact) > 1e-6
    assert rel[normal].max() <= 5e-6, x[normal][np.argmax(rel[normal])]
    assert rel[above_atol].max() <= 1e-6, x[above_atol][np.argmax(rel[above_atol])]


def test_gelu_derivative_is_within_its_documented_absolute_error():
    """gelu'(x) = Phi(x) + x e**(-x**2 / 2) / sqrt(2 pi) takes the same fitted tail; its absolute
    error is what a scaled gradient (dy, and geglu's other half) carries into the contract's atol,
    so docs/contract.rst promises 3e-7 (measured 2.2e-7 on 4e6 points; a degree-6 tail, 1.5e-6 relative, gave
    8.7e-7 and put geglu's gradient outside the tolerance)."""
    _skip_unless_loaded()
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-9.0, 9.0, 400_001, dtype=np.float32)
    xd = x.astype(np.float64)
    exact = 0.5 * special.erfc(-xd / np.sqrt(2.0)) + xd * np.exp(-xd * xd / 2) / np.sqrt(2 * np.pi)
    dx = np.empty_like(x)
    _native.compiled_elementwise("gelu", np.float32).grad(np.ones_like(x), x, dx, 0, x.size)
    err = np.abs(dx - exact)
    assert err.max() <= 3e-7, x[np.argmax(err)]


EDGES = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    1e-40,
    -1e-40,
    1.0,
    -1.0,
    20.0,
    -20.0,
    88.0,
    -88.0,
    89.0,
    -89.0,
    1e4,
    -1e4,
    3e38,
    -3e38,
    np.inf,
    -np.inf,
    np.nan,
]
PARAMS = reference.with_derivative_ops(
    {
        "relu": [(0.0, 0.0, -np.inf, np.inf), (0.3, -2.0, -np.inf, 6.0), (0.0, 5.0, -np.inf, np.inf)],
        "elu": [(1.0,), (0.5,)],
        "celu": [(2.0,)],
        "leaky_relu": [(0.2,), (0.0,)],
        "hard_shrink": [(0.5,)],
        "soft_shrink": [(0.5,)],
        "threshold": [(0.1, -1.0)],
        "squareplus": [(4.0,)],
    }
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_compiled_kernels_agree_with_the_ufunc_formulas_across_threads(op, dtype, threads_from_parallel_min):
    """Edge values and a random array long enough to be cut across every thread (not a whole
    number of chunks), against the ufunc formulas they replace: same NaN and inf positions, values
    within the contract's tolerance."""
    _skip_unless_loaded()
    rng = np.random.default_rng(7)
    n = 3 * pool.PARALLEL_MIN + 12345
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 10.0, 100.0], n)).astype(dtype)
    x[: len(EDGES)] = EDGES
    for params in PARAMS.get(op, [()]):
        with np.errstate(all="ignore"):
            expected = np.empty_like(x)
            formulas.KERNELS[op](x, expected, np.empty_like(x), np.empty_like(x), *params)
        assert_close(_run(op, x, *params), expected, dtype)


def _bits_range(kernel, bits_in, bits_out, p4, start, stop):
    kernel(bits_in, bits_out, start, stop, *p4)


def _same_bits_nan_as_nan(got, want):
    """The same bits, but for a NaN's sign and payload (which order of operations gives)."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(got[numbers].view(np.uint16), want[numbers].view(np.uint16))


@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_bfloat16_kernels_round_the_float32_kernels_once(op, threads_from_parallel_min):
    """The one-pass bfloat16 kernels (bits read and written directly) against the float32 kernel on
    the widened input, rounded to nearest even by ml_dtypes: the same bits, edges included (NaN
    positions, infinities, subnormals), forward and backward, cut across every thread."""
    _skip_unless_loaded()
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(8)
    n = 3 * pool.PARALLEL_MIN + 12345
    x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 10.0, 100.0], n)).astype(bf16)
    x[: len(EDGES)] = np.array(EDGES, np.float32).astype(bf16)
    dy = rng.standard_normal(n).astype(bf16)
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    kernel = _native.bfloat16_kernel(op)
    for params in PARAMS.get(op, [()]):
        p4 = tuple(params) + (0.0,) * (4 - len(params))
        got, want = np.empty_like(x), _run(op, x32, *p4).astype(bf16)
        bits_in, bits_out = x.view(np.uint16), got.view(np.uint16)
        pool.run_ranges(n, functools.partial(_bits_range, kernel, bits_in, bits_out, p4), pool.PARALLEL_MIN)
        _same_bits_nan_as_nan(got, want)
        float32_grad = _native.compiled_elementwise(op, np.float32)
        want_dx = np.empty_like(x32)
        float32_grad.grad(dy32, x32, want_dx, 0, n, *p4)
        got_dx = np.empty_like(x)
        kernel.grad(dy.view(np.uint16), x.view(np.uint16), got_dx.view(np.uint16), 0, n, *p4)
        _same_bits_nan_as_nan(got_dx, want_dx.astype(bf16))


@pytest.mark.parametrize("log", [False, True])
def test_bfloat16_softmax_rows_and_their_backward_round_the_float32_rows_once(log, threads_from_parallel_min):
    # the public call on contiguous bfloat16 rows takes the compiled bfloat16 row kernel: the same
    # bits as the float32 kernel's result rounded by ml_dtypes, rows of -inf and NaN included
    _skip_unless_loaded()
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = np.random.default_rng(9).standard_normal((3 * pool.COMPILED_SOFTMAX_PARALLEL_MIN // 1000 + 7, 1000)) * 4
    x = x.astype(bf16)
    x[1] = -np.inf
    x[2, 5] = np.nan
    x[3, :10] = -np.inf
    function = gpuact.log_softmax if log else gpuact.softmax
    _same_bits_nan_as_nan(function(x), function(x.astype(np.float32)).astype(bf16))
    # the backward likewise (its bfloat16 row kernel)
    dy = np.random.default_rng(10).standard_normal(x.shape).astype(bf16)
    grad = gpuact.backward.log_softmax if log else gpuact.backward.softmax
    _same_bits_nan_as_nan(grad(dy, x), grad(dy.astype(np.float32), x.astype(np.float32)).astype(bf16))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("gate", sorted(GATES))
def test_gated_rows_give_the_blocks_bits(gate, dtype, threads_from_parallel_min):
    """The compiled gated rows (C-contiguous operands) against the block path they replace (the same
    arrays in Fortran order): the same bits, forward and backward, halves along the first, a middle
    and the last axis, and the two-tensor form, cut across every thread."""
    _skip_unless_loaded()
    if dtype == "bfloat16":
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    name, kwargs = {"geglu_tanh": ("geglu", {"approximate": True})}.get(gate, (gate, {}))
    forward, backward = getattr(gpuact, name), getattr(gpuact.backward, name)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((6, 2 * pool.PARALLEL_MIN // 12 + 2, 4)) * 3).astype(dtype)
    x.flat[:4] = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32).astype(dtype)
    for axis in (0, 1, 2):
        if x.shape[axis] % 2:
            continue
        y = forward(x, axis=axis, **kwargs)
        _same_bits_nan_as_nan(y, forward(np.asfortranarray(x), axis=axis, **kwargs))
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = backward(dy, x, axis=axis, **kwargs)
        _same_bits_nan_as_nan(dx, backward(dy, np.asfortranarray(x), axis=axis, **kwargs))
        # dy a slice of a wider array (as a stacked gradient would be): read in place, the same bits
        wide = np.concatenate([dy, dy], axis=axis)
        _same_bits_nan_as_nan(backward(wide[tuple(slice(0, n) for n in dy.shape)], x, axis=axis, **kwargs), dx)
    if name == "glu":
        return
    a, b = x[:, : x.shape[1] // 2].copy(), x[:, x.shape[1] // 2 :].copy()
    _same_bits_nan_as_nan(forward(a, b, **kwargs), forward(np.asfortranarray(a), np.asfortranarray(b), **kwargs))
    dy = rng.standard_normal(a.shape).astype(dtype)
    got = backward(dy, a, b, **kwargs)
    want = backward(dy, np.asfortranarray(a), np.asfortranarray(b), **kwargs)
    for g, w in zip(got, want):
        _same_bits_nan_as_nan(g, w)


def test_public_calls_use_the_compiled_kernels_and_threads(threads_from_parallel_min):
    _skip_unless_loaded()
    x = np.random.default_rng(3).standard_normal(4 * pool.PARALLEL_MIN + 7).astype(np.float32)
    expected = reference.elementwise("gelu", x)
    assert_close(gpuact.gelu(x), expected, np.float32)
    out = np.full_like(x, np.nan)
    assert gpuact.gelu(x, out=out) is out
    assert_close(out, expected, np.float32)


def test_out_is_the_input_or_overlaps_it(threads_from_parallel_min):
    _skip_unless_loaded()
    x = np.linspace(-6.0, 6.0, 2 * pool.PARALLEL_MIN + 3, dtype=np.float32)
    expected = reference.elementwise("silu", x)
    y = x.copy()
    gpuact.silu(y, out=y)  # exactly the same memory: allowed in place
    assert_close(y, expected, np.float32)
    buf = np.concatenate([x, [0.0]]).astype(np.float32)
    gpuact.silu(buf[:-1], out=buf[1:])  # shifted by one element: must read x before it is overwritten
    assert_close(buf[1:], expected, np.float32)


@pytest.mark.parametrize("shape", [(2048, 256), (2, 2048, 300), (64, 512), (3, 5, 7)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_along_a_middle_axis_in_place_gives_the_plain_calls_bits(shape, log):
    """out=x along a middle axis runs the kernel of the plain call (the long-row split, or the column
    kernel for softmax), whose passes read each value before writing it; the gathered rows it took
    before sum in another order, one ulp off at 4096x1024. log_softmax on the column kernel (which
    reads x again after writing exp) still goes through the gathered rows, whose double sum gives
    the same bits."""
    _skip_unless_loaded()
    fn = gpuact.log_softmax if log else gpuact.softmax
    axis = 0 if len(shape) == 2 else 1
    x = (np.random.default_rng(len(shape)).standard_normal(shape) * 8).astype(np.float32)
    want = fn(x, axis=axis)
    y = x.copy()
    assert fn(y, axis=axis, out=y) is y
    np.testing.assert_array_equal(y.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("length", [1, 15, 16, 17, 1000, 4099])
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows(length, log, dtype):
    _skip_unless_loaded()
    rng = np.random.default_rng(length)
    rows = max(2, 3 * pool.PARALLEL_MIN // length)
    x = (rng.standard_normal((rows, length)) * 20).astype(dtype)
    x[0, 0] = np.nan  # a NaN row stays all NaN
    x[1] = -np.inf  # all -inf: NaN, as NumPy's exp(-inf - -inf)
    if length > 1:
        x[-1, :] = -np.inf
        x[-1, length // 2] = 3.0  # one finite value among -inf: 1 there, 0 elsewhere
    with np.errstate(all="ignore"):
        expected = reference.softmax(x.astype(np.float64), axis=-1, log=log)
    y = np.empty_like(x)
    _native.compiled_softmax_rows(dtype)(x, y, 0, rows, length, int(log))
    assert_close(y, expected, dtype)
    if dtype == np.float32:  # the public call: the same kernel, rows shared among the threads
        assert_close((gpuact.log_softmax if log else gpuact.softmax)(x), expected, dtype)


def test_loading_the_library_keeps_subnormals():
    """A library built with -ffast-math would turn on flush-to-zero for the whole process."""
    _skip_unless_loaded()
    tiny = np.float32(1e-40)
    assert tiny * np.float32(0.5) != 0.0
    assert _run("exponential", np.array([-100.0], np.float32))[0] == np.float32(np.exp(-100.0))


@pytest.mark.parametrize("shape, axis", [((5, 300, 17), 1), ((3000, 64), 0), ((16, 7, 40, 3), 2), ((2, 70000, 2), 1)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_columns(shape, axis, log, threads_from_parallel_min):
    """Softmax along a non-last axis: the column kernel, several work units a thread, a last unit
    narrower than the others, NaN and all--inf columns."""
    _skip_unless_loaded()
    x = (np.random.default_rng(sum(shape)).standard_normal(shape) * 20).astype(np.float32)
    index = [0] * x.ndim
    index[axis] = slice(None)
    x[tuple(index)] = -np.inf  # a column of -inf: NaN
    index[-1 if axis != x.ndim - 1 else 0] = 1
    x[tuple(index)] = np.linspace(-5, 5, shape[axis])
    x[tuple(index[:axis] + [0] + index[axis + 1 :])] = np.nan  # a column with a NaN: NaN
    fn = gpuact.log_softmax if log else gpuact.softmax
    with np.errstate(all="ignore"):
        expected = reference.softmax(x.astype(np.float64), axis=axis, log=log)
    assert_close(fn(x, axis=axis), expected, np.float32)


def test_thread_thresholds_follow_the_cost_classes():
    assert all(pool.compiled_parallel_min(op) >= pool.PARALLEL_MIN for op in ELEMENTWISE_OPS)
    cheap, exp, heavy = (pool.compiled_parallel_min(op) for op in ("relu", "sigmoid", "gelu"))
    assert cheap > exp > heavy


# ---- the module's own threads (split passes) -----------------------------------------------------


def _split_operands(n, seed=11):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)  # not a divisor of the range's cut points
    return x, dy, b


@pytest.mark.parametrize("threads", [2, 3, 8])
@pytest.mark.parametrize("n", [1, 1023, 5 * 1024 + 7, 300_001])
def test_a_split_pass_gives_the_bits_of_one_thread(n, threads):
    """unary, unary_bias, grad and grad_bias cut among the module's threads (whole 1024-element
    units, the last range short, more threads than units) write every element once, with the bits
    the same pass on one thread writes, over a sub-range too."""
    _skip_unless_loaded()
    x, dy, b = _split_operands(n)
    for op, params in (("gelu", ()), ("elu", (0.7,)), ("relu", (0.1, 0.5, -1.0, 6.0))):
        kernel = _native.compiled_elementwise(op, np.float32)
        p4 = tuple(params) + (0.0,) * (4 - len(params))
        lo = n // 3
        for method, operands in (
            (kernel, (x,)),
            (kernel.bias, (x, b)),
            (kernel.grad, (dy, x)),
            (kernel.grad_bias, (dy, x, b)),
        ):
            one, split = np.full(n, -7.0, np.float32), np.full(n, -7.0, np.float32)
            method(*operands, one, lo, n, *p4, threads=1)
            method(*operands, split, lo, n, *p4, threads=threads)
            np.testing.assert_array_equal(split.view(np.uint32), one.view(np.uint32))
            assert (split[:lo] == -7.0).all()


def test_split_passes_from_two_python_threads_at_once():
    """A pass that finds the module's threads busy with another caller's runs on its own thread:
    both results are right."""
    _skip_unless_loaded()
    import threading

    x, dy, _ = _split_operands(1 << 20)
    kernel = _native.compiled_elementwise("sigmoid", np.float32)
    want = np.empty_like(x)
    kernel(x, want, 0, x.size)
    outs = [np.empty_like(x) for _ in range(2)]

    def work(out):
        for _ in range(30):
            kernel(x, out, 0, x.size, threads=2)

    threads = [threading.Thread(target=work, args=(out,)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out in outs:
        np.testing.assert_array_equal(out, want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_makes_its_own_split_threads():
    """The parent's threads do not exist in a forked child (a DataLoader worker): its split passes
    start new ones instead of waiting for them."""
    _skip_unless_loaded()
    import multiprocessing

    x, _, _ = _split_operands(1 << 20)
    kernel = _native.compiled_elementwise("tanh", np.float32)
    want = np.empty_like(x)
    kernel(x, want, 0, x.size, threads=2)  # the parent's workers exist before the fork
    with multiprocessing.get_context("fork").Pool(1) as workers:
        got = workers.apply_async(_split_in_child, (x,)).get(timeout=60)
    np.testing.assert_array_equal(got, want)


def _split_in_child(x):
    kernel = _native.compiled_elementwise("tanh", np.float32)
    y = np.empty_like(x)
    kernel(x, y, 0, x.size, threads=2)
    return y


_AFFINITY_CHILD = r"""
import os
import numpy as np
from gpuact.backends import _native

cpus = sorted(os.sched_getaffinity(0))
kernel = _native.compiled_elementwise("sigmoid", np.float32)
x = np.linspace(-30, 30, 1 << 21, dtype=np.float32)
want, got = np.empty_like(x), np.empty_like(x)
kernel(x, want, 0, x.size, threads=1)
kernel(x, got, 0, x.size, threads=2)  # the worker exists from here, with the process's affinity
me = os.getpid()
workers = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
if len(cpus) >= 2:
    os.sched_setaffinity(0, {cpus[0]})  # the caller (this thread only) on the first CPU
    for _ in range(20):
        kernel(x, got, 0, x.size, threads=2)
        # the worker, still spinning after that pass, moved onto the caller's CPU, its affinity
        # given back at once; it meets the next pass there
        for tid in workers:
            os.sched_setaffinity(tid, {cpus[0]})
            os.sched_setaffinity(tid, set(cpus))
        kernel(x, got, 0, x.size, threads=2)
        assert (got.view(np.uint32) == want.view(np.uint32)).all()
    masks = {tid: sorted(os.sched_getaffinity(tid)) for tid in workers}
    assert all(m == cpus for m in masks.values()), (cpus, masks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU affinity is Linux's")
@pytest.mark.parametrize("one_cpu", [False, True])
def test_the_workers_keep_their_affinity_and_the_bits(one_cpu):
    """A worker that finds itself on the caller's CPU moves off it by a passing change of affinity
    (SplitPool::move_off). Put there between passes, the workers give the bits of one thread and
    end with the affinity they had; with one CPU allowed there is nowhere to go and the pass still
    runs. Whether a worker is still on the caller's CPU when it joins is the scheduler's to say
    (here it often is not), so the move itself is measured (docs/backends.rst), not asserted.
    In a child process, whose threads this test pins."""
    _skip_unless_loaded()
    import subprocess

    allowed = sorted(os.sched_getaffinity(0))
    if not one_cpu and len(allowed) < 2:
        pytest.skip("needs two CPUs")
    cmd = [sys.executable, "-c", _AFFINITY_CHILD]
    if one_cpu:
        cmd = [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{allowed[0]}}}); exec({_AFFINITY_CHILD!r})"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr


def test_a_split_pass_refuses_a_bad_thread_count():
    _skip_unless_loaded()
    kernel = _native.compiled_elementwise("relu", np.float32)
    x = np.zeros(4096, np.float32)
    for bad in (0, -1, 65):
        with pytest.raises(ValueError, match="threads"):
            kernel(x, x.copy(), 0, x.size, threads=bad)


def test_exp_of_negative_arguments_keeps_subnormal_results():
    """sigmoid, softplus and gelu's tail take e**-|t| by a cheaper exp for t <= 0 (no overflow to
    handle, one scaling): results below the smallest normal float stay subnormal, within one of
    their ulps (2**-149) of the float64 value, as exp's own."""
    _skip_unless_loaded()
    x = np.linspace(-103.0, -87.0, 4001, dtype=np.float32)
    got = _run("sigmoid", x)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert (got[want > 2.0**-149] > 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2.0**-149)
    g = np.linspace(-14.0, -13.2, 801, dtype=np.float32)  # gelu's results there are subnormal
    special = pytest.importorskip("scipy.special")
    exact = 0.5 * g.astype(np.float64) * special.erfc(-g.astype(np.float64) / np.sqrt(2.0))
    np.testing.assert_allclose(_run("gelu", g), exact, rtol=1e-4, atol=2.0**-149 * 16)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 100, 300), (3, 37, 256), (2, 1000, 257)])
@pytest.mark.parametrize("log", [0, 1])
def test_softmax_along_long_rows_split_among_threads(shape, log, threads):
    """The column softmax that shares whole rows among the module's threads (running max and sum
    per column, block by block, merged across the parts) against the column kernel it replaces for
    long rows: rows whose maximum rises block after block (every rescale taken), columns of -inf, a
    +inf, a NaN, and lengths that are no multiple of the block; same NaN positions, values within
    the contract's tolerance."""
    _skip_unless_loaded()
    rng = np.random.default_rng(5)
    outer, length, inner = shape
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x[:, :, 0] = np.linspace(-50, 80, length, dtype=np.float32)  # the max moves in every block
    x[:, :, 1] = -np.inf
    x[0, length // 2, 2] = np.inf
    x[0, length // 3, 3] = np.nan
    x[:, :, 4] = np.float32(-1e30)  # one value a column, far below: exps of 0
    x[:, 0, 4] = 0.0
    want = np.empty_like(x)
    old = _native.softmax_columns_kernel(np.float32)
    old(x, want, length, inner, 64, 0, outer * -(-inner // 64), log)
    got = np.full_like(x, 7.0)
    _native.softmax_columns_split_kernel(np.float32)(x, got, length, inner, log, threads)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(got, want, np.float32)
    inplace = x.copy()
    _native.softmax_columns_split_kernel(np.float32)(inplace, inplace, length, inner, log, threads)
    np.testing.assert_array_equal(inplace.view(np.uint32), got.view(np.uint32))


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_rows_shared_among_the_module_threads_give_the_bits_of_one(threads):
    """softmax_rows and rows_grad with a thread count: each part its own rows and its own scratch
    (bfloat16's widened rows, the backward's row of exps); the bits of one thread, rows outside the
    range untouched."""
    _skip_unless_loaded()
    rng = np.random.default_rng(3)
    rows, length = 37, 300
    x = (rng.standard_normal((rows, length)) * 3).astype(np.float32)
    dy = rng.standard_normal((rows, length)).astype(np.float32)
    r0, r1 = 2, 35
    cases = [
        (_native.compiled_softmax_rows(np.float32), (x,)),
        (_native.rows_grad_kernel("softmax", np.float32), (dy, x)),
        (_native.rows_grad_kernel("sparsemax", np.float32), (dy, x)),
    ]
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = [a.astype(ml_dtypes.bfloat16).view(np.uint16) for a in (dy, x)]
    cases += [
        (_native.bfloat16_softmax_rows_kernel(), (bits[1],)),
        (_native.bfloat16_softmax_grad_rows_kernel(), tuple(bits)),
    ]
    for kernel, operands in cases:
        for log in (0, 1):
            one, split = np.full_like(operands[0], 7), np.full_like(operands[0], 7)
            kernel(*operands, one, r0, r1, length, log)
            kernel(*operands, split, r0, r1, length, log, threads)
            np.testing.assert_array_equal(split, one)
            assert (split[:r0] == 7).all() and (split[r1:] == 7).all()


@pytest.mark.parametrize("log", [False, True])
def test_the_numpy_path_takes_the_long_row_split_for_softmax_along_axis_0(log, monkeypatch):
    """gpuact.softmax along axis 0 of 2048 rows of 300: the route to the split kernel (and its
    thread count from the size), against the float64 reference."""
    _skip_unless_loaded()
    calls = []
    real = _native.softmax_columns_split_kernel

    def recording(dtype):
        kernel = real(dtype)
        return None if kernel is None else (lambda *a: (calls.append(a[-1]), kernel(*a)))

    monkeypatch.setattr(_native, "softmax_columns_split_kernel", recording)
    x = (np.random.default_rng(2).standard_normal((2048, 300)) * 5).astype(np.float32)
    fn = gpuact.log_softmax if log else gpuact.softmax
    assert_close(fn(x, axis=0), reference.softmax(x.astype(np.float64), axis=0, log=log), np.float32)
    assert calls and calls[0] == pool.THREADS
