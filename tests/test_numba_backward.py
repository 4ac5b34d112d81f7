"""The Numba backend's training kernels against the NumPy backend, on Numba device arrays: the
backward of every activation, the fused bias (forward and backward), softmax / log_softmax /
sparsemax / glu / prelu backward, over views, in place, broadcasts, masks, long split rows,
float16/32/64 and integer inputs.

Runs where Numba can run kernels: a GPU, or Numba's CUDA simulator (started by
``tests/test_numba_simulator.py``), where every launch is also typed against its kernel's
signature (``tests/numba_launch_checks.py``). Inputs are small: the simulator runs each GPU
thread as Python.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact import _entry
from gpuact._contract import checks
from gpuact.backends import numpy_backend as ref_backend

from .conftest import backend_unusable
from .test_numba_backend import (  # noqa: F401 - sim_grid and split_small are fixtures used here
    CASES,
    FLOATS,
    ND_VIEWS,
    _backend,
    _device_view,
    _softmax_plan,
    assert_close,
    dev,
    host,
    inputs,
    sim_grid,
    split_small,
)

pytestmark = pytest.mark.skipif(backend_unusable("numba") is not None, reason=str(backend_unusable("numba")))


def _launched_since(mark):
    """Names of the kernels launched since ``mark`` (the simulator's launch recorder), or None on
    a GPU, where launches are not recorded."""
    if not _backend().SIMULATOR:
        return None
    from tests import numba_launch_checks as checks

    return [launch.kernel for launch in checks.LAUNCHES[mark:]]


def _mark():
    from tests import numba_launch_checks as checks

    return len(checks.LAUNCHES)


def _grad_ref(op, dy, x, params, dtype, bias=None):
    return ref_backend.elementwise_grad(op, dy, x, params, None, np.dtype(dtype), bias=bias)


# ---------------------------------------------------------------------------------------------
# elementwise backward


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op,params", CASES, ids=[f"{op}{p}" for op, p in CASES])
def test_elementwise_grad_matches_numpy(op, params, dtype):
    x = inputs(dtype, 100)
    dy = np.random.default_rng(1).uniform(-2, 2, x.shape).astype(dtype)
    dy[:3] = [np.nan, np.inf, 0.0]
    got = _entry.elementwise_grad(op, dev(dy), dev(x), params, backend="numba")
    assert_close(host(got), _grad_ref(op, dy, x, params, dtype), dtype)


@pytest.mark.parametrize("view", ND_VIEWS, ids=list(ND_VIEWS))
def test_elementwise_grad_over_strided_views_and_in_place(view, sim_grid):
    rng = np.random.default_rng(2)
    x_host = rng.normal(0, 3, (6, 4, 10)).astype(np.float32)
    dy_host = rng.normal(0, 1, (6, 4, 10)).astype(np.float32)
    x_base, dy_base = dev(x_host), dev(dy_host)
    xv, xv_host = _device_view(x_base, x_host, ND_VIEWS[view])
    dyv, dyv_host = _device_view(dy_base, dy_host, ND_VIEWS[view])
    want = _grad_ref("gelu", np.ascontiguousarray(dyv_host), np.ascontiguousarray(xv_host), (), np.float32)
    assert_close(host(gpuact.backward.gelu(dyv, xv)), want, np.float32)
    # in place into the strided dy, then into the strided x: the rest of each base untouched
    assert gpuact.backward.gelu(dyv, xv, out=dyv) is dyv
    after = dy_host.copy()
    ND_VIEWS[view](after)[...] = want
    assert_close(host(dy_base), after, np.float32)
    xv2, _ = _device_view(x_base, x_host, ND_VIEWS[view])
    gpuact.backward.gelu(dev(np.ascontiguousarray(dyv_host)), xv2, out=xv2)
    after = x_host.copy()
    ND_VIEWS[view](after)[...] = want
    assert_close(host(x_base), after, np.float32)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_elementwise_grad_in_place_contiguous(dtype):
    x_host = inputs(dtype, 60, seed=3)
    dy_host = np.random.default_rng(4).normal(0, 1, x_host.shape).astype(dtype)
    want = _grad_ref("elu", dy_host, x_host, (0.7,), dtype)
    x, dy = dev(x_host), dev(dy_host)
    assert gpuact.backward.elu(dy, x, 0.7, out=dy) is dy
    assert_close(host(dy), want, dtype)
    x, dy = dev(x_host), dev(dy_host)
    assert gpuact.backward.elu(dy, x, 0.7, out=x) is x
    assert_close(host(x), want, dtype)


@pytest.mark.parametrize(
    "x_dtype,dy_dtype",
    [
        (np.int32, np.float32),
        (np.uint8, np.float16),
        (np.bool_, np.float32),
        (np.float32, np.float16),
        (np.float16, np.float64),
        (np.int64, np.int16),
    ],
)
def test_elementwise_grad_integer_and_mixed_dtypes(x_dtype, dy_dtype):
    x = np.array([0, 1, 2, 3, 100, 7, 5]).astype(x_dtype)
    dy = np.array([1, -2, 3, 1, 2, -1, 4]).astype(dy_dtype)
    got = gpuact.backward.silu(dev(dy), dev(x))
    dtype = np.promote_types(checks.result_dtype(dy.dtype), checks.result_dtype(x.dtype))
    assert got.dtype == dtype
    assert_close(host(got), _grad_ref("silu", dy, x, (), dtype), dtype)
    with_bias = gpuact.backward.silu(dev(dy), dev(x), bias=dev(np.array([0.5], np.float32)))
    assert_close(host(with_bias), _grad_ref("silu", dy, x, (), dtype, bias=np.array([0.5], np.float32)), dtype)


# ---------------------------------------------------------------------------------------------
# the fused bias

# (x shape, bias shape, x's view) -> the path taken: "contig" (the flat kernel's column counter)
BIAS_CASES = [
    ((4, 6), (6,), None, "contig"),
    ((4, 6), (1, 6), None, "contig"),
    ((2, 3, 5), (3, 5), None, "contig"),
    ((2, 3, 5), (5,), None, "contig"),
    ((3, 1, 4), (1, 4), None, "contig"),
    ((4, 6), (), None, "contig"),
    ((4, 6), (4, 1), None, "nd"),
    ((2, 3, 5), (2, 1, 5), None, "nd"),
    ((2, 3, 5), (2, 3, 5), None, "contig"),
    ((4, 12), (12,), "every_other", "nd"),
    ((6, 4), (4,), "transposed", "nd"),
]


def _x_view(x_host, how):
    """(device x, host x) for a contiguous x or a strided view of a bigger one."""
    if how is None:
        return dev(x_host), x_host
    if how == "every_other":
        base = np.zeros((x_host.shape[0], 2 * x_host.shape[1]), x_host.dtype)
        base[:, ::2] = x_host
        return dev(base)[:, ::2], base[:, ::2]
    base = np.ascontiguousarray(x_host.T)  # "transposed"
    return dev(base).T, base.T


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("x_shape,bias_shape,view,path", BIAS_CASES, ids=[f"{x}-{b}-{v}" for x, b, v, _ in BIAS_CASES])
def test_bias_forward_and_backward_against_numpy(x_shape, bias_shape, view, path, dtype):
    rng = np.random.default_rng(5)
    x_host = rng.normal(0, 2, x_shape).astype(dtype)
    b_host = rng.normal(0, 1, bias_shape).astype(dtype)
    dy_host = rng.normal(0, 1, x_shape).astype(dtype)
    x, x_ref = _x_view(x_host, view)
    bias = dev(b_host)
    mark = _mark()
    y = gpuact.gelu(x, bias=bias)
    assert_close(
        host(y),
        ref_backend.elementwise("gelu", np.ascontiguousarray(x_ref), (), None, np.dtype(dtype), bias=b_host),
        dtype,
    )
    dx = gpuact.backward.gelu(dev(dy_host), x, bias=bias)
    assert_close(host(dx), _grad_ref("gelu", dy_host, np.ascontiguousarray(x_ref), (), dtype, bias=b_host), dtype)
    names = _launched_since(mark)
    if names is not None:
        assert len(names) == 2, names
        assert all(("_bias_contig" in n) == (path == "contig") for n in names), names


def test_bias_of_other_dtypes_and_strided_biases(sim_grid):
    rng = np.random.default_rng(6)
    x_host = rng.normal(0, 2, (5, 8)).astype(np.float32)
    dy_host = rng.normal(0, 1, (5, 8)).astype(np.float32)
    for b_host in (
        np.arange(8, dtype=np.int32) - 4,
        rng.normal(0, 1, 8),
        rng.normal(0, 1, 8).astype(np.float16),
        np.arange(8) % 2 == 0,
    ):
        y = gpuact.mish(dev(x_host), bias=dev(b_host))
        assert_close(
            host(y), ref_backend.elementwise("mish", x_host, (), None, np.dtype(np.float32), bias=b_host), np.float32
        )
        dx = gpuact.backward.mish(dev(dy_host), dev(x_host), bias=dev(b_host))
        assert_close(host(dx), _grad_ref("mish", dy_host, x_host, (), np.float32, bias=b_host), np.float32)
    # a strided bias (every other element of a device array): the N-D path reads it in place
    b_base = rng.normal(0, 1, 16).astype(np.float32)
    bias = dev(b_base)[::2]
    dx = gpuact.backward.tanh(dev(dy_host), dev(x_host), bias=bias)
    assert_close(host(dx), _grad_ref("tanh", dy_host, x_host, (), np.float32, bias=b_base[::2]), np.float32)
    # in place into x with a bias
    x = dev(x_host)
    gpuact.backward.tanh(dev(dy_host), x, bias=bias, out=x)
    assert_close(host(x), _grad_ref("tanh", dy_host, x_host, (), np.float32, bias=b_base[::2]), np.float32)


def test_contiguous_bias_column_counter_wraps_across_grid_strides(sim_grid):
    """A bias longer and shorter than the grid stride (32 or 96 threads under the simulator), and
    not dividing it: the column counter must wrap exactly like i % nb."""
    rng = np.random.default_rng(7)
    for units in (1, 5, 31, 33, 97, 200):
        x_host = rng.normal(0, 2, (3, units)).astype(np.float32)
        b_host = rng.normal(0, 2, units).astype(np.float32)
        dy_host = rng.normal(0, 1, (3, units)).astype(np.float32)
        dx = gpuact.backward.relu(dev(dy_host), dev(x_host), bias=dev(b_host))
        np.testing.assert_array_equal(host(dx), np.where(x_host + b_host > 0, dy_host, 0))
        y = gpuact.relu(dev(x_host), bias=dev(b_host))
        np.testing.assert_array_equal(host(y), np.maximum(x_host + b_host, 0))


# ---------------------------------------------------------------------------------------------
# softmax / log_softmax backward


def _softmax_grad_ref(dy, x, axes, dtype, log, mask=None, bias=None):
    """The NumPy backend's backward, with dx = 0 at every masked position (gpuact.backward's rule:
    the NumPy path's softmax, unlike its log_softmax, leaves 0 * NaN = NaN there in a slice whose
    max is not finite)."""
    want = ref_backend.softmax_grad(dy, x, tuple(axes), None, np.dtype(dtype), log=log, mask=mask, bias=bias)
    if mask is not None:
        want[~np.broadcast_to(np.asarray(mask, bool), want.shape)] = 0
    return want


SOFTMAX_GRAD_CASES = [
    ((7,), (0,)),
    ((3, 70), (1,)),
    ((3, 70), (0,)),
    ((2, 3, 4), (1,)),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (1, 2)),
    ((1, 130, 2), (1,)),
    ((2, 3, 2, 5), (0, 3)),
]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axes", SOFTMAX_GRAD_CASES, ids=[f"{s}-{a}" for s, a in SOFTMAX_GRAD_CASES])
def test_softmax_grad_axes(shape, axes, log):
    rng = np.random.default_rng(8)
    x = rng.normal(0, 3, shape).astype(np.float32)
    dy = rng.normal(0, 1, shape).astype(np.float32)
    got = _entry.softmax_grad(dev(dy), dev(x), axes if len(axes) > 1 else axes[0], log=log, backend="numba")
    assert_close(host(got), _softmax_grad_ref(dy, x, axes, np.float32, log), np.float32)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_softmax_grad_dtypes_non_finite_and_integers(dtype):
    rng = np.random.default_rng(9)
    x = rng.normal(0, 3, (6, 40)).astype(dtype)
    dy = rng.normal(0, 1, (6, 40)).astype(dtype)
    x[1, :] = -np.inf  # all -inf: NaN
    x[2, ::3] = -np.inf  # -inf among finite: y = 0 there
    x[3, 7] = np.nan
    x[4, 9] = np.inf
    dy[5, 3] = np.nan  # a NaN dy: the slice's sums are NaN
    for log in (False, True):
        for axis in (1, 0):
            got = _entry.softmax_grad(dev(dy), dev(x), axis, log=log, backend="numba")
            assert_close(host(got), _softmax_grad_ref(dy, x, (axis,), dtype, log), dtype)
    xi = np.arange(12).reshape(3, 4) % 5
    dyi = rng.normal(0, 1, (3, 4)).astype(np.float32)
    for xx in (xi.astype(np.int32), xi.astype(np.uint8)):
        got = _entry.softmax_grad(dev(dyi), dev(xx), 1, log=False, backend="numba")
        assert got.dtype == np.float32
        assert_close(host(got), _softmax_grad_ref(dyi, xx, (1,), np.float32, False), np.float32)


def test_softmax_grad_masks():
    rng = np.random.default_rng(10)
    x = rng.normal(0, 3, (4, 30)).astype(np.float32)
    dy = rng.normal(0, 1, (4, 30)).astype(np.float32)
    x[3] = -np.inf
    mask = rng.random((4, 30)) > 0.3
    mask[1] = False  # fully masked: all 0
    mask[3] = True  # all -inf, unmasked: NaN
    dy[0, ~mask[0]] = np.nan  # a NaN dy at masked positions does not count
    for log in (False, True):
        want = _softmax_grad_ref(dy, x, (1,), np.float32, log, mask=mask)
        assert not np.isnan(want[0]).any()
        for m in (mask, dev(mask), dev(mask.astype(np.float32))):
            got = _entry.softmax_grad(dev(dy), dev(x), 1, log=log, mask=m, backend="numba")
            assert_close(host(got), want, np.float32)
        row = mask[0:1]  # a broadcast mask, along axis 0
        want0 = _softmax_grad_ref(dy, x, (0,), np.float32, log, mask=np.broadcast_to(row, x.shape))
        got0 = _entry.softmax_grad(dev(dy), dev(x), 0, log=log, mask=dev(row), backend="numba")
        assert_close(host(got0), want0, np.float32)


# (x shape, axes, bias shape): the bias read in its compact form ("compact"), or expanded into
# the reduced-axes-last layout first ("expanded")
SOFTMAX_BIAS_CASES = [
    ((4, 9), (1,), (9,), "compact"),
    ((4, 9), (1,), (4, 1), "compact"),
    ((4, 9), (0,), (9,), "compact"),
    ((2, 3, 4, 5), (3,), (2, 1, 4, 5), "compact"),
    ((2, 3, 4, 5), (3,), (1, 3, 4, 5), "compact"),
    ((2, 3, 4, 5), (3,), (2, 1, 1, 5), "compact"),
    ((2, 3, 4, 5), (2, 3), (1, 3, 1, 5), "expanded"),
    ((2, 3, 4, 5), (1,), (2, 3, 4, 5), "compact"),
    ((2, 3, 4, 5), (0, 2), (3, 1, 1), "compact"),
    ((2, 3, 2, 3, 2), (4,), (2, 1, 2, 1, 2), "expanded"),
    ((3, 5), (1,), (), "compact"),
]


@pytest.mark.parametrize(
    "shape,axes,bias_shape,how", SOFTMAX_BIAS_CASES, ids=[f"{s}-{a}-{b}" for s, a, b, _ in SOFTMAX_BIAS_CASES]
)
def test_softmax_forward_and_backward_with_a_bias(shape, axes, bias_shape, how):
    rng = np.random.default_rng(11)
    x = rng.normal(0, 2, shape).astype(np.float32)
    dy = rng.normal(0, 1, shape).astype(np.float32)
    b = rng.normal(0, 2, bias_shape).astype(np.float32)
    from gpuact.backends._numba import plan as P

    bshape = (1,) * (len(shape) - b.ndim) + b.shape
    strides = [t if m == n else 0 for t, m, n in zip(P.contiguous_strides(bshape), bshape, shape)]
    assert (P.softmax_bias_layout(shape, strides, axes) is None) == (how == "expanded")
    axis = axes if len(axes) > 1 else axes[0]
    for log in (False, True):
        y = _entry.softmax(dev(x), axis, log=log, bias=dev(b), backend="numba")
        assert_close(host(y), ref_backend.softmax(x, axes, None, np.float32, log=log, bias=b), np.float32)
        got = _entry.softmax_grad(dev(dy), dev(x), axis, log=log, bias=dev(b), backend="numba")
        assert_close(host(got), _softmax_grad_ref(dy, x, axes, np.float32, log, bias=b), np.float32)
    # with a mask and a bias of another dtype, in place into dy
    mask = rng.random(shape) > 0.25
    b16 = b.astype(np.float16)
    d = dev(dy)
    _entry.softmax_grad(d, dev(x), axis, log=False, mask=dev(mask), bias=dev(b16), out=d, backend="numba")
    assert_close(host(d), _softmax_grad_ref(dy, x, axes, np.float32, False, mask=mask, bias=b16), np.float32)


def test_softmax_grad_views_and_in_place():
    rng = np.random.default_rng(12)
    x_host = rng.normal(0, 3, (6, 5, 4)).astype(np.float32)
    dy_host = rng.normal(0, 1, (6, 5, 4)).astype(np.float32)
    for axis in (-1, 1, (0, 2)):
        axes = tuple(sorted(a % 3 for a in (axis if isinstance(axis, tuple) else (axis,))))
        want = _softmax_grad_ref(dy_host, x_host, axes, np.float32, False)
        d = dev(dy_host)
        assert _entry.softmax_grad(d, dev(x_host), axis, log=False, out=d, backend="numba") is d
        assert_close(host(d), want, np.float32)
        xd = dev(x_host)
        _entry.softmax_grad(dev(dy_host), xd, axis, log=False, out=xd, backend="numba")
        assert_close(host(xd), want, np.float32)
        big = dev(np.zeros((6, 5, 8), np.float32))
        _entry.softmax_grad(dev(dy_host), dev(x_host), axis, log=False, out=big[:, :, ::2], backend="numba")
        assert_close(host(big)[:, :, ::2], want, np.float32)
        assert (host(big)[:, :, 1::2] == 0).all()
    # strided x and dy (copied into rows)
    xs, dys = dev(x_host)[::2, 1:], dev(dy_host)[1::2, :4]
    xs_host, dys_host = np.ascontiguousarray(x_host[::2, 1:]), np.ascontiguousarray(dy_host[1::2, :4])
    for log in (False, True):
        for axis in (1, 2):
            got = _entry.softmax_grad(dys, xs, axis, log=log, backend="numba")
            assert_close(host(got), _softmax_grad_ref(dys_host, xs_host, (axis,), np.float32, log), np.float32)


SPLIT_GRAD_CASES = [
    ((2, 40), 1, FLOATS),
    ((40, 2), 0, (np.float32,)),
    ((2, 12, 3), 1, (np.float64,)),
    ((1, 64), -1, (np.float32,)),
]
SPLIT_GRAD_CASES = [(s, a, d) for s, a, dtypes in SPLIT_GRAD_CASES for d in dtypes]


@pytest.mark.parametrize(
    "shape,axis,dtype", SPLIT_GRAD_CASES, ids=[f"{s}-{a}-{np.dtype(d).name}" for s, a, d in SPLIT_GRAD_CASES]
)
def test_softmax_grad_split_across_blocks(shape, axis, dtype, split_small):
    axis %= len(shape)
    assert _softmax_plan(shape, axis).split
    rng = np.random.default_rng(13)
    length = shape[axis]
    slices = rng.normal(0, 3, (math.prod(shape) // length, length))
    slices[0, ::3] = -np.inf  # -inf among finite values
    if slices.shape[0] > 1:
        slices[1, :] = -np.inf  # all -inf: NaN
    if slices.shape[0] > 3:
        slices[2, -5] = np.nan  # NaN in the last segment
        slices[3, 1] = np.inf  # +inf in the first
    rest = tuple(d for i, d in enumerate(shape) if i != axis)
    x = np.ascontiguousarray(np.moveaxis(slices.reshape(rest + (length,)), -1, axis)).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    bias = rng.normal(0, 1, length).astype(dtype)
    bias_nd = bias.reshape((length,) + (1,) * (len(shape) - 1 - axis))
    mask = rng.random(shape) > 0.3
    mark = _mark()
    for log in (False, True):
        got = _entry.softmax_grad(dev(dy), dev(x), axis, log=log, backend="numba")
        assert_close(host(got), _softmax_grad_ref(dy, x, (axis,), dtype, log), dtype)
        got = _entry.softmax_grad(dev(dy), dev(x), axis, log=log, mask=mask, bias=dev(bias_nd), backend="numba")
        assert_close(host(got), _softmax_grad_ref(dy, x, (axis,), dtype, log, mask=mask, bias=bias_nd), dtype)
    names = _launched_since(mark)
    if names is not None:
        assert any("grad_partials" in n for n in names) and any("grad_finish" in n for n in names), names
    d = dev(dy)  # in place
    _entry.softmax_grad(d, dev(x), axis, log=True, out=d, backend="numba")
    assert_close(host(d), _softmax_grad_ref(dy, x, (axis,), dtype, True), dtype)


def test_softmax_grad_split_with_a_fully_masked_segment(split_small):
    rng = np.random.default_rng(14)
    x = rng.normal(0, 3, (3, 40)).astype(np.float32)
    dy = rng.normal(0, 1, (3, 40)).astype(np.float32)
    mask = rng.random((3, 40)) > 0.3
    mask[0, :30] = False  # the first segments fully masked, the last not
    mask[1] = False
    assert _softmax_plan(x.shape, 1).split
    for log in (False, True):
        got = _entry.softmax_grad(dev(dy), dev(x), 1, log=log, mask=dev(mask), backend="numba")
        assert_close(host(got), _softmax_grad_ref(dy, x, (1,), np.float32, log, mask=mask), np.float32)


def test_softmax_grad_sums_are_compensated(monkeypatch):
    """One row, one block: log_softmax's sum of dy adds 2**-24 terms onto one 1 (512 of them per
    thread under the simulator), where an uncompensated float32 sum rounds each away."""
    from gpuact.backends._numba import plan as P

    monkeypatch.setattr(P, "MIN_BLOCKS_PER_SM", 0)  # never split
    length = 16384
    x = np.zeros((1, length), np.float32)
    dy = np.full((1, length), 2.0**-24, np.float32)
    dy[0, 0] = 1.0
    total = 1.0 + (length - 1) * 2.0**-24
    got = host(_entry.softmax_grad(dev(dy), dev(x), 1, log=True, backend="numba")).astype(np.float64)
    np.testing.assert_allclose(got, dy.astype(np.float64) - total / length, rtol=1e-6, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# sparsemax, glu, prelu


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_sparsemax_grad(dtype):
    rng = np.random.default_rng(15)
    x = rng.normal(0, 1, (5, 7, 3)).astype(dtype)
    dy = rng.normal(0, 1, (5, 7, 3)).astype(dtype)
    x[0, 0, :] = 0.5  # ties
    x[1, :, 0] = np.nan
    x[2, 2, 1] = -np.inf
    dy[3, 0, 0] = np.nan
    for axis in (0, 1, 2):
        got = _entry.sparsemax_grad(dev(dy), dev(x), axis, backend="numba")
        assert_close(host(got), ref_backend.sparsemax_grad(dy, x, axis, None, np.dtype(dtype)), dtype)
    want = ref_backend.sparsemax_grad(dy, x, 1, None, np.dtype(dtype))
    d = dev(dy)
    assert _entry.sparsemax_grad(d, dev(x), 1, out=d, backend="numba") is d
    assert_close(host(d), want, dtype)
    xd = dev(x)
    _entry.sparsemax_grad(dev(dy), xd, 1, out=xd, backend="numba")
    assert_close(host(xd), want, dtype)
    strided = _entry.sparsemax_grad(dev(dy)[:, ::2], dev(x)[:, ::2], 1, backend="numba")
    assert_close(
        host(strided),
        ref_backend.sparsemax_grad(
            np.ascontiguousarray(dy[:, ::2]), np.ascontiguousarray(x[:, ::2]), 1, None, np.dtype(dtype)
        ),
        dtype,
    )


@pytest.mark.parametrize("cache", ["cached", "uncached"])
def test_sparsemax_grad_search_variants(cache, monkeypatch):
    if cache == "uncached":
        from gpuact.backends._numba import plan as P

        monkeypatch.setattr(P, "SPARSEMAX_CACHE_BYTES", 0)
    rng = np.random.default_rng(16)
    n = 90
    x = np.array(
        [
            rng.normal(0, 1, n),
            rng.standard_t(2, n) * 5,
            -np.arange(n) * 1e-3,
            np.full(n, 0.5),
            np.r_[1e8, np.zeros(n - 1)],
            np.r_[np.inf, np.zeros(n - 1)],
        ],
        np.float32,
    )
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    for xx, dd, axis in ((x, dy, 1), (np.ascontiguousarray(x.T), np.ascontiguousarray(dy.T), 0)):
        got = _entry.sparsemax_grad(dev(dd), dev(xx), axis, backend="numba")
        assert_close(host(got), ref_backend.sparsemax_grad(dd, xx, axis, None, np.dtype(np.float32)), np.float32)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", [((4, 6, 2), 0), ((4, 6, 2), 1), ((4, 6, 2), 2), ((1, 12, 7), 1), ((50,), 0)])
def test_glu_grad(shape, axis, dtype, sim_grid):
    rng = np.random.default_rng(17)
    x = rng.normal(0, 3, shape).astype(dtype)
    half = tuple(s // 2 if i == axis else s for i, s in enumerate(shape))
    dy = rng.normal(0, 1, half).astype(dtype)
    got = _entry.glu_grad(dev(dy), dev(x), axis, backend="numba")
    assert_close(host(got), ref_backend.glu_grad(dy, x, axis, None, np.dtype(dtype)), dtype)


def test_glu_grad_strided_and_mixed_dtypes():
    rng = np.random.default_rng(18)
    x = rng.normal(0, 3, (4, 12, 3)).astype(np.float32)
    dy = rng.normal(0, 1, (4, 3, 3)).astype(np.float64)
    got = _entry.glu_grad(dev(dy), dev(x)[:, ::2], 1, backend="numba")
    assert got.dtype == np.float64
    assert_close(
        host(got), ref_backend.glu_grad(dy, np.ascontiguousarray(x[:, ::2]), 1, None, np.dtype(np.float64)), np.float64
    )
    out = dev(np.zeros((4, 12, 3), np.float64))
    _entry.glu_grad(dev(dy), dev(x)[:, ::2], 1, out=out[:, 1::2], backend="numba")
    assert_close(host(out)[:, 1::2], host(got), np.float64)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_prelu_grad(dtype, sim_grid):
    from gpuact.layers import PReLU

    rng = np.random.default_rng(19)
    x = rng.normal(0, 3, (3, 4, 5)).astype(dtype)
    x[0, 0, :3] = [0.0, np.nan, -np.inf]
    dy = rng.normal(0, 1, (3, 4, 5)).astype(dtype)
    for alpha in (0.25, np.linspace(0.1, 0.5, 5), np.full((4, 1), 0.3), 0.0):
        full = ref_backend.as_param_array(alpha, x.shape, np.dtype(dtype))
        want = ref_backend.prelu_grad(dy, x, full, None, np.dtype(dtype))
        assert_close(host(PReLU(alpha).backward(dev(dy), dev(x), backend="numba")), want, dtype)
    xs = dev(x)[:, ::2]
    got = _entry.prelu_grad(dev(np.ascontiguousarray(dy[:, ::2])), xs, np.linspace(0, 1, 5), backend="numba")
    full = ref_backend.as_param_array(np.linspace(0, 1, 5), (3, 2, 5), np.dtype(dtype))
    assert_close(
        host(got),
        ref_backend.prelu_grad(
            np.ascontiguousarray(dy[:, ::2]), np.ascontiguousarray(x[:, ::2]), full, None, np.dtype(dtype)
        ),
        dtype,
    )


def test_empty_inputs_for_the_backward():
    x = np.zeros((0, 4), np.float32)
    assert host(gpuact.backward.gelu(dev(x), dev(x), bias=dev(np.ones(4, np.float32)))).shape == (0, 4)
    assert host(gpuact.backward.softmax(dev(x), dev(x))).shape == (0, 4)
    assert host(gpuact.backward.sparsemax(dev(x), dev(x))).shape == (0, 4)
    assert host(gpuact.backward.glu(dev(np.zeros((0, 2), np.float32)), dev(x))).shape == (0, 4)


def test_zero_dim_inputs_and_scalar_biases():
    x = np.array(0.75, np.float32)
    dy = np.array(2.0, np.float32)
    got = gpuact.backward.sigmoid(dev(dy), dev(x), bias=0.5)
    assert got.shape == ()
    assert_close(host(got), _grad_ref("sigmoid", dy, x, (), np.float32, bias=np.float32(0.5)), np.float32)
    y = gpuact.gelu(np.array(1.5, np.float32), backend="numba")  # a 0-d host input stays 0-d
    assert y.shape == ()
