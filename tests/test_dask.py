"""gpuact on Dask arrays: lazy results, chunk by chunk, against gpuact's own path on the computed
array (the same kernels chunk by chunk, so within the forward tolerances; the reductions of a
chunked softmax combine per-chunk float64 partials, ~1e-7 relative in float32).

NumPy chunks run here on Dask's threaded scheduler and, for a subset, on a ``distributed``
LocalCluster of two worker processes on the loopback interface that the test starts and closes.
CuPy chunks are in the GPU tests (skipped with the reason where no GPU is usable).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpuact
from gpuact.layers import PReLU, Softmax
from tests.conftest import skip_unless_usable
from tests.reference import assert_close

da = pytest.importorskip("dask.array")

FLOATS = [np.float16, np.float32, np.float64]


def _x(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).normal(0, 3, shape).astype(dtype)


def _close(lazy, eager, dtype):
    assert isinstance(lazy, da.Array)
    got = lazy.compute()
    assert got.dtype == eager.dtype and got.shape == eager.shape
    assert_close(got, eager.astype(np.float64), dtype)


# ---- every public function, several chunkings -----------------------------------------------------

CHUNKINGS = [(40, 33), ((7, 13, 20), (10, 23)), (-1, -1), (1, 33)]


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["even", "uneven", "one-chunk", "row-per-chunk"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_elementwise_and_backward(chunks, dtype):
    x = _x((40, 33), dtype)
    dy = _x((40, 33), dtype, seed=1)
    lx, ldy = da.from_array(x, chunks=chunks), da.from_array(dy, chunks=chunks)
    for name, kwargs in [
        ("relu", {"max_value": 6.0}),
        ("gelu", {}),
        ("silu", {}),
        ("softsign", {}),
        ("threshold", {"threshold": 1.0, "default_value": -2.0}),
        ("squareplus", {"b": 2.0}),
    ]:
        _close(getattr(gpuact, name)(lx, **kwargs), getattr(gpuact, name)(x, **kwargs), dtype)
        _close(
            getattr(gpuact.backward, name)(ldy, lx, **kwargs), getattr(gpuact.backward, name)(dy, x, **kwargs), dtype
        )
    b = _x((33,), dtype, seed=2)
    for bias in (b, da.from_array(b, chunks=11)):
        _close(gpuact.gelu(lx, bias=bias), gpuact.gelu(x, bias=b), dtype)
        _close(gpuact.backward.tanh(ldy, lx, bias=bias), gpuact.backward.tanh(dy, x, bias=b), dtype)


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 1), (0, 2), (1, 2)])
@pytest.mark.parametrize(
    "chunks", [(3, 4, 5), ((2, 5), (3, 3, 1), (9, 1)), (-1, 4, -1)], ids=["even", "uneven", "mixed"]
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_log_softmax_along_any_axes(axis, chunks, dtype):
    x = _x((7, 7, 10), dtype)
    dy = _x((7, 7, 10), dtype, seed=3)
    lx, ldy = da.from_array(x, chunks=chunks), da.from_array(dy, chunks=chunks)
    for log in (False, True):
        fn = gpuact.log_softmax if log else gpuact.softmax
        y = fn(lx, axis=axis)
        assert y.chunks == lx.chunks
        _close(y, fn(x, axis=axis), dtype)
        grad = gpuact.backward.log_softmax if log else gpuact.backward.softmax
        _close(grad(ldy, lx, axis=axis), grad(dy, x, axis=axis), dtype)
    b = _x((10,), dtype, seed=4)
    _close(gpuact.softmax(lx, axis=axis, bias=b), gpuact.softmax(x, axis=axis, bias=b), dtype)


def test_non_finite_slices_split_across_chunks():
    x = _x((12, 6))
    x[:, 0] = -np.inf  # a column of all -inf, over three chunks: NaN
    x[5, 1] = np.nan  # NaN poisons its column
    x[::2, 2] = -np.inf  # -inf among finite values: 0
    x[7, 3] = np.inf  # +inf: NaN
    lx = da.from_array(x, chunks=(4, 3))
    for log in (False, True):
        fn = gpuact.log_softmax if log else gpuact.softmax
        got, want = fn(lx, axis=0).compute(), fn(x, axis=0)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert_close(got, want.astype(np.float64), np.float32)


def test_glu_sparsemax_prelu_and_layers():
    x = _x((10, 12))
    lx = da.from_array(x, chunks=(3, 5))
    for axis in (0, 1):
        _close(gpuact.glu(lx, axis=axis), gpuact.glu(x, axis=axis), np.float32)
        dy = _x(gpuact.glu(x, axis=axis).shape, seed=5)
        _close(
            gpuact.backward.glu(da.from_array(dy, chunks=3), lx, axis=axis),
            gpuact.backward.glu(dy, x, axis=axis),
            np.float32,
        )
        s = gpuact.sparsemax(lx, axis=axis)
        _close(s, gpuact.sparsemax(x, axis=axis), np.float32)
        dys = _x(x.shape, seed=6)
        _close(
            gpuact.backward.sparsemax(da.from_array(dys, chunks=(3, 5)), lx, axis=axis),
            gpuact.backward.sparsemax(dys, x, axis=axis),
            np.float32,
        )
    alpha = np.linspace(0, 1, 12, dtype=np.float32)
    _close(PReLU(alpha)(lx), PReLU(alpha)(x), np.float32)
    mask = np.random.default_rng(7).random(x.shape) > 0.3
    for m in (mask, da.from_array(mask, chunks=(5, 4))):
        _close(Softmax(axis=0)(lx, mask=m), Softmax(axis=0)(x, mask=mask), np.float32)
    _close(gpuact.layers.Activation("mish")(lx), gpuact.mish(x), np.float32)
    assert gpuact.get("swish")(lx).compute().shape == x.shape


def test_integer_0d_and_empty():
    xi = np.arange(-6, 6).reshape(3, 4)
    _close(gpuact.sigmoid(da.from_array(xi, chunks=2)), gpuact.sigmoid(xi), np.float32)
    _close(gpuact.softmax(da.from_array(xi, chunks=2), axis=0), gpuact.softmax(xi, axis=0), np.float32)
    _close(
        gpuact.tanh(da.from_array(np.float32(0.5))), gpuact.tanh(np.float32(0.5) + np.zeros((), np.float32)), np.float32
    )
    empty = np.zeros((0, 4), np.float32)
    _close(gpuact.relu(da.from_array(empty)), gpuact.relu(empty), np.float32)
    _close(gpuact.softmax(da.from_array(empty), axis=0), gpuact.softmax(empty, axis=0), np.float32)


def _ulps(got, want):
    """The largest distance between got and want in units of want's dtype's spacing at want, or at 1
    where |want| < 1: log(sum) carries an absolute error of an ulp or two of the sum (~1), which
    the NumPy path's result near 0 has too (the tree's float64 combination adds a few in float64)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype
    return float(np.max(np.abs(got.astype(np.float64) - want) / np.spacing(np.maximum(np.abs(want), 1))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_along_a_chunked_axis_is_as_accurate_as_the_numpy_path(dtype):
    # an offset of 1000 makes max + log(sum) round in float32 (its spacing near 1000 is 6e-5)
    x = (_x((96, 12), dtype) + 1000).astype(dtype)
    lx = da.from_array(x, chunks=(16, 5))
    assert _ulps(gpuact.log_softmax(lx, axis=0).compute(), gpuact.log_softmax(x, axis=0)) <= 4
    assert _ulps(gpuact.log_softmax(lx, axis=(0, 1)).compute(), gpuact.log_softmax(x, axis=(0, 1))) <= 4
    # max + log(2) is max itself at 1e30: rounded first, the result would be 0
    big = np.array([1e30, 1e30], dtype)
    got = gpuact.log_softmax(da.from_array(big, chunks=1), axis=0).compute()
    np.testing.assert_allclose(got, [-np.log(2)] * 2, rtol=1e-6)
    got = gpuact.softmax(da.from_array(big, chunks=1), axis=0).compute()
    np.testing.assert_allclose(got, [0.5, 0.5], rtol=1e-6)
    # slices of all -inf, with a NaN, with a +inf, with -inf among finite values: as the NumPy path
    x = _x((12, 4), dtype)
    x[:, 0] = -np.inf
    x[5, 1] = np.nan
    x[7, 2] = np.inf
    x[::2, 3] = -np.inf
    for fn in (gpuact.softmax, gpuact.log_softmax):
        got, want = fn(da.from_array(x, chunks=(4, 2)), axis=0).compute(), fn(x, axis=0)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert_close(got, want.astype(np.float64), dtype)


def test_gradients_take_dy_chunked_unlike_x():
    x, dy = _x((24, 20)), _x((24, 20), seed=1)
    lx = da.from_array(x, chunks=(8, 10))
    ldy = da.from_array(dy, chunks=(5, 7))
    b = _x((20,), seed=2)
    _close(gpuact.backward.gelu(ldy, lx), gpuact.backward.gelu(dy, x), np.float32)
    _close(
        gpuact.backward.gelu(ldy, lx, bias=da.from_array(b, chunks=3)), gpuact.backward.gelu(dy, x, bias=b), np.float32
    )
    mask = np.random.default_rng(3).random(x.shape) > 0.3
    lmask = da.from_array(mask, chunks=(6, 6))
    for axis in (0, 1):  # along axis 1 x's chunks hold whole slices, along axis 0 they do not
        for grad in (gpuact.backward.softmax, gpuact.backward.log_softmax):
            _close(grad(ldy, lx, axis=axis), grad(dy, x, axis=axis), np.float32)
        layer = Softmax(axis=axis)
        _close(layer.backward(ldy, lx, mask=lmask), layer.backward(dy, x, mask=mask), np.float32)
        _close(gpuact.backward.sparsemax(ldy, lx, axis=axis), gpuact.backward.sparsemax(dy, x, axis=axis), np.float32)
        dyg = _x(gpuact.glu(x, axis=axis).shape, seed=4)
        _close(
            gpuact.backward.glu(da.from_array(dyg, chunks=(5, 3)), lx, axis=axis),
            gpuact.backward.glu(dyg, x, axis=axis),
            np.float32,
        )
    lx_whole_rows = da.from_array(x, chunks=(8, -1))
    for grad in (gpuact.backward.softmax, gpuact.backward.log_softmax):
        _close(grad(ldy, lx_whole_rows, axis=1), grad(dy, x, axis=1), np.float32)
    alpha = np.linspace(0, 1, 20, dtype=np.float32)
    for a in (alpha, da.from_array(alpha, chunks=6)):
        _close(PReLU(a).backward(ldy, lx), PReLU(alpha).backward(dy, x), np.float32)


@pytest.mark.parametrize(
    "name,kwargs", [("swiglu", {}), ("geglu", {}), ("geglu", {"approximate": True}), ("reglu", {})]
)
def test_the_glu_variants_chunked_like_glu(name, kwargs):
    x = _x((10, 12))
    forward, backward = getattr(gpuact, name), getattr(gpuact.backward, name)
    for chunks in ((3, 5), (10, -1), (4, 6)):  # halves' chunks misaligned, whole, aligned
        lx = da.from_array(x, chunks=chunks)
        for axis in (0, 1):
            _close(forward(lx, axis=axis, **kwargs), forward(x, axis=axis, **kwargs), np.float32)
            dy = _x(forward(x, axis=axis, **kwargs).shape, seed=7)
            _close(
                backward(da.from_array(dy, chunks=3), lx, axis=axis, **kwargs),
                backward(dy, x, axis=axis, **kwargs),
                np.float32,
            )


def test_glu_backward_computes_in_the_result_dtype():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 200, (6, 16)).astype(np.float16)  # dy a reaches 1e5: inf in float16
    dy = rng.normal(0, 200, (6, 8)).astype(np.float16)
    lx, ldy = da.from_array(x, chunks=(3, 4)), da.from_array(dy, chunks=(3, 4))
    want = gpuact.backward.glu(dy, x, axis=1)
    assert np.isfinite(want).all()
    _close(gpuact.backward.glu(ldy, lx, axis=1), want, np.float16)
    # float16 x and float64 dy: float64, computed in float64
    dy64 = rng.normal(0, 1, (6, 8))
    _close(
        gpuact.backward.glu(da.from_array(dy64, chunks=(3, 4)), lx, axis=1),
        gpuact.backward.glu(dy64, x, axis=1),
        np.float64,
    )


def test_a_bias_is_checked_when_the_call_is_made():
    x, dy = _x((40, 33)), _x((40, 33), seed=1)
    lx, ldy = da.from_array(x, chunks=(8, 11)), da.from_array(dy, chunks=(8, 11))
    message = re.escape("bias of shape (3,) does not broadcast to x's shape (40, 33)")
    for bias in (np.zeros(3, np.float32), da.zeros(3, chunks=1, dtype=np.float32)):
        with pytest.raises(ValueError, match=message):
            gpuact.gelu(lx, bias=bias)
        with pytest.raises(ValueError, match=message):
            gpuact.backward.gelu(ldy, lx, bias=bias)
        for axis in (0, 1):
            with pytest.raises(ValueError, match=message):
                gpuact.softmax(lx, axis=axis, bias=bias)
            with pytest.raises(ValueError, match=message):
                gpuact.backward.softmax(ldy, lx, axis=axis, bias=bias)
    # a list, as the NumPy path takes it
    b = [float(v) for v in _x((33,), seed=2)]
    _close(gpuact.gelu(lx, bias=b), gpuact.gelu(x, bias=b), np.float32)
    _close(gpuact.backward.gelu(ldy, lx, bias=b), gpuact.backward.gelu(dy, x, bias=b), np.float32)
    for axis in (0, 1):
        _close(gpuact.softmax(lx, axis=axis, bias=b), gpuact.softmax(x, axis=axis, bias=b), np.float32)


def _masked_close(lazy, eager):
    # Dask joins masked chunks by their fill_value, whose default (1e20) overflows float16
    with np.errstate(over="ignore"):
        got = lazy.compute()
    assert isinstance(got, np.ma.MaskedArray) and got.dtype == eager.dtype
    np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(eager))
    assert_close(np.ma.getdata(got), np.ma.getdata(eager).astype(np.float64), eager.dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_of_masked_chunks(dtype):
    x = _x((12, 10), dtype)
    hidden = np.random.default_rng(9).random(x.shape) > 0.7
    hidden[:, 3] = True  # a slice masked throughout, over three chunks
    m = np.ma.masked_array(x, mask=hidden)
    given = np.random.default_rng(10).random(x.shape) > 0.2  # the Softmax layer's mask besides
    for lm in (
        da.from_array(m, chunks=(4, 5)),
        da.ma.masked_array(da.from_array(x, chunks=(4, 5)), mask=da.from_array(hidden, chunks=(4, 5))),
    ):
        for fn in (gpuact.softmax, gpuact.log_softmax):
            for axis in (0, 1, (0, 1)):
                _masked_close(fn(lm, axis=axis), fn(m, axis=axis))
            _masked_close(Softmax(axis=0)(lm, mask=given), Softmax(axis=0)(m, mask=given))
        _masked_close(gpuact.glu(lm, axis=1), gpuact.glu(m, axis=1))
    with pytest.raises(TypeError, match="masked"):
        gpuact.softmax(da.from_array(m, chunks=(4, 5)), axis=0, bias=np.zeros(10, dtype))


def test_an_axis_of_unknown_length():
    x = _x((20, 8))
    lx = da.from_array(x, chunks=(5, 4))
    picked = lx[lx[:, 0] > 0]  # axis 0's length is unknown until computed
    kept = x[x[:, 0] > 0]
    for call in (
        lambda: gpuact.glu(picked, axis=0),
        lambda: gpuact.backward.glu(da.zeros((5, 8), chunks=5), picked, axis=0),
        lambda: gpuact.sparsemax(picked, axis=0),
        lambda: gpuact.backward.sparsemax(picked, picked, axis=0),
    ):
        with pytest.raises(ValueError, match=r"length of axis 0 is unknown.*compute_chunk_sizes\(\)"):
            call()
    # along the other axis, or where the unknown axis is one chunk, nothing needs the length
    _close(gpuact.glu(picked, axis=1), gpuact.glu(kept, axis=1), np.float32)
    dy = picked[:, :4] + 1
    _close(gpuact.backward.glu(dy, picked, axis=1), gpuact.backward.glu(kept[:, :4] + 1, kept, axis=1), np.float32)
    _close(gpuact.sparsemax(picked, axis=1), gpuact.sparsemax(kept, axis=1), np.float32)
    _close(gpuact.backward.sparsemax(picked, picked, axis=1), gpuact.backward.sparsemax(kept, kept, axis=1), np.float32)
    for fn in (gpuact.softmax, gpuact.log_softmax):
        _close(fn(picked, axis=0), fn(kept, axis=0), np.float32)
    one_chunk = da.from_array(x, chunks=(-1, 4))
    picked = one_chunk[one_chunk[:, 0] > 0]
    _close(gpuact.sparsemax(picked, axis=0), gpuact.sparsemax(kept, axis=0), np.float32)


# ---- the graph -----------------------------------------------------------------------------------------


def test_an_elementwise_op_adds_one_layer_and_nothing_is_computed_early(monkeypatch):
    from gpuact.backends import numpy_backend

    calls = []
    for name in ("elementwise", "softmax", "sparsemax", "glu"):
        original = getattr(numpy_backend, name)
        monkeypatch.setattr(
            numpy_backend, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1]
        )
    lx = da.from_array(_x((64, 64)), chunks=16)
    before = len(lx.dask.layers)
    y = gpuact.gelu(lx)
    assert len(y.dask.layers) == before + 1
    z = gpuact.softmax(gpuact.sigmoid(lx), axis=0)
    w = gpuact.sparsemax(lx, axis=1)
    g = gpuact.glu(lx, axis=0)
    assert not calls, f"computed before .compute(): {calls}"
    y.compute(), z.compute(), w.compute(), g.compute()
    assert calls


def test_a_chunked_softmax_never_rechunks_its_axis():
    lx = da.from_array(_x((4096, 8)), chunks=(256, 4))
    y = gpuact.softmax(lx, axis=0)
    assert y.chunks == lx.chunks
    assert not [name for name in y.dask.layers if "rechunk" in name]
    largest = max(np.prod([max(c) for c in lx.chunks]), 1)
    # every block of every array in the graph is at most the input's largest block
    for collection in (y,):
        assert max(np.prod([max(c) for c in collection.chunks]), 1) <= largest
    assert len(y.__dask_graph__()) < 8 * lx.npartitions  # linear in the number of chunks


# ---- bad input -----------------------------------------------------------------------------------------


def test_dask_arrays_refuse_out_stream_and_mixed_kinds():
    lx = da.from_array(_x((8, 8)), chunks=4)
    with pytest.raises(TypeError, match="store"):
        gpuact.relu(lx, out=np.empty((8, 8), np.float32))
    with pytest.raises(TypeError, match="stream"):
        gpuact.softmax(lx, stream=object())
    with pytest.raises(TypeError, match="Dask"):
        gpuact.gelu(_x((8, 8)), bias=da.from_array(_x((8,)), chunks=4))

    class Foreign:
        __module__ = "cupy"
        shape, ndim = (8,), 1

    with pytest.raises(TypeError, match="chunks"):
        gpuact.gelu(lx, bias=Foreign())


# ---- distributed --------------------------------------------------------------------------------------


# dashboard_address: a free loopback port. None only turns the dashboard off: the scheduler's HTTP
# server still takes port 8787, which the module's other cluster then finds in use (a warning).
@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="1GiB",
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_on_a_local_cluster_of_two_processes(cluster_client):
    x = _x((300, 40))
    lx = da.from_array(x, chunks=(50, 20))
    y = cluster_client.compute(gpuact.softmax(lx, axis=0)).result()
    assert_close(y, gpuact.softmax(x, axis=0).astype(np.float64), np.float32)
    g = cluster_client.compute(gpuact.backward.gelu(lx, lx, bias=x[0])).result()
    assert_close(g, gpuact.backward.gelu(x, x, bias=x[0]).astype(np.float64), np.float32)


@pytest.mark.slow
def test_softmax_of_more_data_than_the_workers_hold():
    distributed = pytest.importorskip("distributed")
    # 1 GiB of float32, made lazily, through two workers of 256 MiB each (a worker process with
    # NumPy and Dask loaded already takes ~100 MiB, so 128 MiB would leave it nothing) in 8 MiB
    # chunks, softmax along the axis that spans 32 of them
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="256MiB",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        x = da.random.default_rng(0).standard_normal((2**18, 2**10), chunks=(2**13, 2**8), dtype=np.float32)
        y = gpuact.softmax(x, axis=0)
        assert y.chunks == x.chunks
        sums = client.compute(y.sum(axis=0, dtype=np.float64)).result(timeout=600)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


# ---- CuPy chunks (on a GPU) -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_cupy_chunks():
    skip_unless_usable("cupy")
    import cupy

    x = _x((64, 48))
    lx = da.from_array(cupy.asarray(x), chunks=(16, 24))
    for fn in (
        gpuact.gelu,
        lambda a: gpuact.softmax(a, axis=0),
        lambda a: gpuact.log_softmax(a, axis=(0, 1)),
        lambda a: gpuact.sparsemax(a, axis=0),
        lambda a: gpuact.glu(a, axis=1),
    ):
        y = fn(lx)
        assert type(y._meta).__module__.split(".")[0] == "cupy"
        assert_close(cupy.asnumpy(y.compute()), fn(x).astype(np.float64), np.float32)
