"""The CuPy backend's training paths end to end without a GPU (tests/cuda_shim/backend_shim.py):
the backend's own code launches its kernels, each run on the CPU (the fused ones under the
threads shim, the vectorised ones thread by thread, the ElementwiseKernels through a stand-in that
runs their own operation), and the results are compared with the NumPy backend within the
forward's tolerances (float16 1e-3, float32 1e-5 / 1e-6, float64 1e-12 / 1e-14):

* every elementwise op's backward, and its forward and backward with a bias (along the trailing
  axes: the vectorised kernels; any other broadcast: the ElementwiseKernel), contiguous, strided,
  misaligned and F-ordered, in place into dy or x, float16/32/64 and integer x, mixed dtypes;
  the bias's column kept across vectors, grid strides and the scalar tail;
* softmax / log_softmax backward (and the forward with a bias) on last and non-last axes, with
  masks, -inf slices, NaN, long rows split over many blocks, biases the kernels walk (trailing,
  attention masks) and one they do not (materialised), in place and into a strided out;
* the sparsemax, glu and PReLU backward.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpuact import _kernel_sources as ks
from gpuact._contract.ops import ELEMENTWISE_OPS
from gpuact.backends import numpy_backend as nb
from tests import reference
from tests.cuda_shim import backend_shim, ek_shim, vec_shim
from tests.cuda_shim import gpuact_cuda_build as build

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

TOL = {np.dtype(np.float16): (1e-3, 1e-3), np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-14)}
FLOATS = [np.float16, np.float32, np.float64]
PARAMS = reference.with_derivative_ops(
    {
        "relu": (0.1, 0.5, 0.0, 6.0),
        "elu": (0.7,),
        "celu": (2.0,),
        "leaky_relu": (0.2,),
        "hard_shrink": (0.5,),
        "soft_shrink": (0.5,),
        "threshold": (1.0, -5.0),
        "squareplus": (2.0,),
    }
)
EDGE = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    0.5,
    -0.5,
    1.0,
    -1.0,
    3.0,
    -3.0,
    6.0,
    20.0,
    -20.0,
    88.0,
    -88.0,
    1e4,
    -1e4,
    math.inf,
    -math.inf,
    math.nan,
]


@pytest.fixture
def backend(monkeypatch, tmp_path_factory):
    pytest.importorskip("cupy")
    return backend_shim.patch(monkeypatch, tmp_path_factory.getbasetemp())


def _close(got, want, dtype):
    rtol, atol = TOL[np.dtype(dtype)]
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    assert (np.isnan(got) == np.isnan(want)).all()


def _aligned_empty(shape, dtype, offset=0):
    """An empty C-contiguous array starting ``offset`` elements past a 16-byte boundary."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    raw = np.empty((n + offset) * dtype.itemsize + 16, np.uint8)
    start = -raw.ctypes.data % 16 + offset * dtype.itemsize
    return raw[start : start + n * dtype.itemsize].view(dtype).reshape(shape)


def _laid_out(a, layout):
    """A copy of ``a`` (2-D) in ``layout``: contiguous (and 16-byte aligned), strided, misaligned
    (contiguous, one element past 16 bytes), or F-ordered."""
    if layout == "strided":
        v = np.empty((a.shape[0], 2 * a.shape[1]), a.dtype)[:, ::2]
    elif layout == "fortran":
        v = np.asfortranarray(np.empty_like(a))
    else:
        v = _aligned_empty(a.shape, a.dtype, 1 if layout == "misaligned" else 0)
    v[...] = a
    return v


def _inputs(dtype, shape=(37, 24), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 4, shape)
    x.flat[: len(EDGE)] = EDGE
    dy = rng.uniform(-2, 2, shape)
    return x.astype(dtype), dy.astype(dtype)


def _paths():
    """Which kinds of kernel ran since the last call: 'vec', 'ek' (and forgets them)."""
    ran = set()
    if vec_shim.VecKernel.launches:
        ran.add("vec")
    if ek_shim.ElementwiseKernel.calls:
        ran.add("ek")
    vec_shim.VecKernel.launches.clear()
    ek_shim.ElementwiseKernel.calls.clear()
    return ran


# ---- elementwise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_grad_every_op(backend, op, dtype):
    """dx = dy * f'(x) of every op and dtype, every layout, in place, with and without a bias."""
    dtype = np.dtype(dtype)
    params = PARAMS.get(op, ())
    x, dy = _inputs(dtype)
    want = nb.elementwise_grad(op, dy, x, params, None, dtype)
    for layout, path in (("contiguous", "vec"), ("fortran", "vec"), ("strided", "ek"), ("misaligned", "ek")):
        got = backend.elementwise_grad(op, _laid_out(dy, layout), _laid_out(x, layout), params, None, dtype)
        assert _paths() == {path}, (layout, path)
        _close(got, want, dtype)
    # in place: out is dy, or x
    for which in ("dy", "x"):
        dyc, xc = _laid_out(dy, "contiguous"), _laid_out(x, "contiguous")
        out = dyc if which == "dy" else xc
        assert backend.elementwise_grad(op, dyc, xc, params, out, dtype) is out
        _close(out, want, dtype)
    # biases: along the trailing axes (the vectorised kernel, also in place and as the compute
    # type), any other broadcast (the ElementwiseKernel)
    rng = np.random.default_rng(1)
    for bshape, bdtype, path in (
        ((24,), dtype, "vec"),
        ((1, 24), dtype, "vec"),
        ((37, 24), dtype, "vec"),
        ((), dtype, "vec"),
        ((24,), ks.COMPUTE_DTYPE[ks.DTYPE_TAG[dtype]], "vec"),
        ((37, 1), dtype, "ek"),
        ((24,), np.int32, "ek"),
    ):
        b = np.asarray(rng.normal(0, 2, bshape) * (3 if bdtype == np.int32 else 1)).astype(bdtype)
        want_b = nb.elementwise_grad(op, dy, x, params, None, dtype, bias=b)
        got = backend.elementwise_grad(
            op, _laid_out(dy, "contiguous"), _laid_out(x, "contiguous"), params, None, dtype, bias=b
        )
        assert _paths() == {path}, (bshape, bdtype)
        _close(got, want_b, dtype)
    b = rng.normal(0, 2, 24).astype(dtype)
    want_b = nb.elementwise_grad(op, dy, x, params, None, dtype, bias=b)
    dyc, xc = _laid_out(dy, "contiguous"), _laid_out(x, "contiguous")
    backend.elementwise_grad(op, dyc, xc, params, xc, dtype, bias=b)
    assert _paths() == {"vec"}
    _close(xc, want_b, dtype)
    got = backend.elementwise_grad(op, _laid_out(dy, "strided"), _laid_out(x, "strided"), params, None, dtype, bias=b)
    assert _paths() == {"ek"}
    _close(got, want_b, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_forward_with_bias_every_op(backend, op, dtype):
    """y = f(x + bias): the vectorised kernel for a trailing bias on contiguous aligned data (also in
    place), the ElementwiseKernel for the rest; and the forward without a bias (vec_apply, now a
    case of the same loop)."""
    dtype = np.dtype(dtype)
    params = PARAMS.get(op, ())
    x, _ = _inputs(dtype, seed=2)
    rng = np.random.default_rng(3)
    for bshape, bdtype, layout, path in (
        ((24,), dtype, "contiguous", "vec"),
        ((24,), ks.COMPUTE_DTYPE[ks.DTYPE_TAG[dtype]], "contiguous", "vec"),
        ((37, 24), dtype, "contiguous", "vec"),
        ((37, 1), dtype, "contiguous", "ek"),
        ((24,), dtype, "strided", "ek"),
        ((24,), dtype, "misaligned", "ek"),
        ((24,), dtype, "fortran", "ek"),
        ((24,), np.float64, "contiguous", "vec" if dtype == np.float64 else "ek"),
    ):
        b = rng.normal(0, 2, bshape).astype(bdtype)
        want = nb.elementwise(op, x, params, None, dtype, bias=b)
        got = backend.elementwise(op, _laid_out(x, layout), params, None, dtype, bias=b)
        assert _paths() == {path}, (bshape, bdtype, layout)
        _close(got, want, dtype)
    b = rng.normal(0, 2, (24,)).astype(dtype)
    xc = _laid_out(x, "contiguous")
    assert backend.elementwise(op, xc, params, xc, dtype, bias=b) is xc
    assert _paths() == {"vec"}
    _close(xc, nb.elementwise(op, x, params, None, dtype, bias=b), dtype)
    got = backend.elementwise(op, _laid_out(x, "contiguous"), params, None, dtype)
    assert _paths() == {"vec"}
    _close(got, nb.elementwise(op, x, params, None, dtype), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "units, rows", [(1, 70001), (3, 23339), (7, 10001), (8, 8751), (9, 7779), (1000, 71), (70007, 1)]
)
def test_trailing_bias_columns(backend, dtype, units, rows):
    """The bias column kept incrementally over the vectors, the grid stride and the scalar tail:
    linear(x + b) is x + b exactly (the compute type's sum, rounded once), on inputs large enough
    for the 8-block grid to stride (several vectors a thread, the last iteration partial)."""
    dtype = np.dtype(dtype)
    compute = ks.COMPUTE_DTYPE[ks.DTYPE_TAG[dtype]]
    rng = np.random.default_rng(units)
    x = _laid_out(rng.normal(0, 100, (rows, units)).astype(dtype), "contiguous")
    for btype in ks.bias_tags(ks.DTYPE_TAG[dtype]):
        b = rng.normal(0, 100, units).astype(ks.TAG_DTYPE[btype])
        got = backend.elementwise("linear", x, (), None, dtype, bias=b)
        assert _paths() == {"vec"}
        np.testing.assert_array_equal(got, (x.astype(compute) + b.astype(compute)).astype(dtype))
        dy = _laid_out(rng.normal(0, 1, (rows, units)).astype(dtype), "contiguous")
        got = backend.elementwise_grad("exponential", dy, x * dtype.type(0.01), (), None, dtype, bias=b * 0.01)
        assert _paths() == {"vec"}
        _close(got, nb.elementwise_grad("exponential", dy, x * dtype.type(0.01), (), None, dtype, bias=b * 0.01), dtype)
    launch = ks.vec_launch(x.size, ks.DTYPE_TAG[dtype], 1, units)
    assert launch.blocks == min(8, -(-(x.size // (16 // dtype.itemsize)) // 1024))


def test_grad_integer_x_and_mixed_dtypes(backend):
    """int x (cast in the ElementwiseKernel), float16 dy with float32 x (the wider dtype), a bool x."""
    x = np.arange(-20, 20, dtype=np.int32).reshape(4, 10)
    dy = np.linspace(-1, 1, 40).reshape(4, 10).astype(np.float32)
    for op in ("gelu", "sigmoid", "relu", "softsign"):
        got = backend.elementwise_grad(op, dy, x, PARAMS.get(op, ()), None, np.dtype(np.float32))
        assert _paths() == {"ek"}
        _close(got, nb.elementwise_grad(op, dy, x, PARAMS.get(op, ()), None, np.dtype(np.float32)), np.float32)
        got = backend.elementwise_grad(
            op, dy.astype(np.float16), x.astype(np.float32), PARAMS.get(op, ()), None, np.dtype(np.float32)
        )
        _close(
            got,
            nb.elementwise_grad(
                op, dy.astype(np.float16), x.astype(np.float32), PARAMS.get(op, ()), None, np.dtype(np.float32)
            ),
            np.float32,
        )
    got = backend.elementwise_grad("silu", dy, x > 0, (), None, np.dtype(np.float32), bias=np.float32(0.5) * dy[0])
    _close(
        got,
        nb.elementwise_grad("silu", dy, x > 0, (), None, np.dtype(np.float32), bias=np.float32(0.5) * dy[0]),
        np.float32,
    )


def test_empty_and_0d(backend):
    for shape in ((0,), (0, 3), ()):
        x = np.ones(shape, np.float32)
        got = backend.elementwise_grad("gelu", x, x, (), None, np.dtype(np.float32), bias=np.asarray(x * 0.5))
        assert got.shape == shape
        if shape == ():
            _close(
                got,
                nb.elementwise_grad("gelu", x, x, (), None, np.dtype(np.float32), bias=np.asarray(x * 0.5)),
                np.float32,
            )


# ---- softmax ----------------------------------------------------------------------------------


def _softmax_grad_want(dy, x, axes, log, mask=None, bias=None):
    """The NumPy backend's backward in float64 (its float32 sums are not the reference here), with
    dx = 0 at masked positions: the contract; the NumPy path's softmax (not log_softmax) writes
    y * (dy - dot) = 0 * NaN = NaN there when a NaN in dy makes the slice's dot NaN."""
    b = None if bias is None else bias.astype(np.float64)
    want = nb.softmax_grad(
        dy.astype(np.float64), x.astype(np.float64), axes, None, np.dtype(np.float64), log=log, mask=mask, bias=b
    )
    if mask is not None:
        want[~np.broadcast_to(mask, x.shape)] = 0.0
    return want


def _softmax_check(backend, dy, x, axes, log, mask=None, bias=None, out=None):
    dtype = np.dtype(np.promote_types(dy.dtype, x.dtype))
    got = backend.softmax_grad(dy, x, axes, out, dtype, log=log, mask=mask, bias=bias)
    want = _softmax_grad_want(dy, x, axes, log, mask, bias).astype(dtype)
    _close(got, want, dtype)
    if mask is not None:
        assert (got[~np.broadcast_to(mask, x.shape)] == 0).all()
    return got


def _families():
    """The fused kernel families launched since the last call (and forgets them)."""
    families = {ks.fused_kernels()[launch.name].family for launch in backend_shim.ShimKernel.launches}
    backend_shim.ShimKernel.launches.clear()
    return families


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((6, 1), 1),
        ((6, 5), 1),
        ((5, 32), 1),
        ((4, 33), 1),
        ((3, 100), 1),
        ((2, 1024), 1),
        ((2, 1025), 1),
        ((2, 3000), 1),
        ((3, 7, 5), 1),
        ((40, 3), 0),
        ((3, 50, 33), 1),
        ((2, 3, 4, 5), (1, 2)),
        ((3, 4, 5), (0, 2)),
    ],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_grad(backend, shape, axis, dtype):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 3, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    axes = axis if isinstance(axis, tuple) else (axis,)
    ax = axes[0]
    if shape[ax] > 2:  # an all--inf slice (NaN), -inf among finite values (0), a NaN slice, a NaN dy
        idx = [0] * len(shape)
        idx[ax] = slice(None)
        if len(axes) == 1:
            x[tuple(idx)] = -np.inf
            idx[ax] = 0
            idx[-1 if ax != len(shape) - 1 else 0] = shape[-1 if ax != len(shape) - 1 else 0] - 1
            x[tuple(idx)] = -np.inf
        x.flat[x.size // 2] = np.nan
        dy.flat[x.size // 3] = np.nan
    for log in (False, True):
        _softmax_check(backend, dy, x, axes, log)
    mask = rng.random(shape) > 0.3
    mask.flat[: shape[-1]] = False  # (part of) a fully masked slice: 0
    for log in (False, True):
        _softmax_check(backend, dy, x, axes, log, mask=mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_softmax_grad_in_place_strided_and_mixed(backend, dtype):
    rng = np.random.default_rng(4)
    x = rng.normal(0, 3, (5, 300)).astype(dtype)
    dy = rng.normal(0, 1, (5, 300)).astype(dtype)
    for log in (False, True):
        want = _softmax_grad_want(dy, x, (1,), log).astype(dtype)
        for which in ("dy", "x"):
            dyc, xc = dy.copy(), x.copy()
            out = dyc if which == "dy" else xc
            assert backend.softmax_grad(dyc, xc, (1,), out, np.dtype(dtype), log=log) is out
            _close(out, want, dtype)
        out = np.zeros((5, 600), dtype)[:, ::2]
        backend.softmax_grad(dy[:, ::-1][:, ::-1], x, (1,), out, np.dtype(dtype), log=log)
        _close(out, want, dtype)
    # integer x, float32 dy
    xi = (x * 2).astype(np.int32)
    _softmax_check(backend, dy.astype(np.float32), xi, (1,), False)


@pytest.mark.parametrize(
    "shape, axis, sms",
    [((1, 70000), 1, 8), ((1, 70000), 1, 1), ((2**14, 4), 0, 4), ((3, 6000, 5), 1, 8), ((2, 40000), 1, 2)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_softmax_grad_long_rows_split(backend, monkeypatch, shape, axis, sms, dtype):
    """Slices split over many blocks (partials in the workspace, then the finish kernel): a GPU of
    ``sms`` SMs wants 8 blocks each, so a single row of 70000 goes to up to 64 segments."""
    monkeypatch.setattr(backend, "_sm_count", lambda: sms)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    mask = rng.random(shape) > 0.2
    for log in (False, True):
        _softmax_check(backend, dy, x, (axis,), log)
        assert _families() == {"softmax_grad_split_partials", "softmax_grad_split_finish"}
    plan_segs = (
        ks.softmax_grad_plan(
            *ks.outer_axis_inner(shape, (axis,)),
            ks.DTYPE_TAG[np.dtype(dtype)],
            log=False,
            sm_count=sms,
            max_blocks=sms * 32,
        )
        .launches[0]
        .args()["segs"]
    )
    assert plan_segs >= 2 * sms
    _softmax_check(backend, dy, x, (axis,), False, mask=mask)
    x[0] = -np.inf  # whole slices of -inf: NaN (with a mask too)
    _softmax_check(backend, dy, x, (axis,), True)
    mask2 = mask.copy()
    mask2[0] = False
    _softmax_check(backend, dy, x, (axis,), False, mask=mask2)


def test_softmax_grad_long_float32_rows_keep_accuracy(backend, monkeypatch):
    """An ascending row of 2**18 float32 elements: Kahan-compensated triples keep dx within a few
    ulps of float64 (split over blocks and in one block)."""
    length = 2**18
    x = (np.arange(length, dtype=np.float32) * np.float32(1e-5))[None]
    dy = np.cos(np.arange(length, dtype=np.float32))[None]
    for sms in (8, 1):
        monkeypatch.setattr(backend, "_sm_count", lambda sms=sms: sms)
        for log in (False, True):
            got = backend.softmax_grad(dy, x, (1,), None, np.dtype(np.float32), log=log)
            want = _softmax_grad_want(dy, x, (1,), log)
            scale = np.abs(want).max()
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * scale)


@pytest.fixture
def bias_walks(monkeypatch):
    """Whether each description of a bias for the softmax kernels succeeded: [True] for a bias they
    walk, [False, True] for one the backend materialised at x's shape (and then described)."""
    walks = []
    plan = ks.bias_plan

    def spy(*args):
        result = plan(*args)
        walks.append(result is not None)
        return result

    monkeypatch.setattr(ks, "bias_plan", spy)
    return walks


WALKED, MATERIALISED = [True], [False, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_softmax_bias(backend, bias_walks, dtype):
    """softmax(x + bias) and its backward with the bias read in the kernels: a (L,) bias, attention
    masks (B, 1, 1, L) and (1, 1, Q, L) on (B, H, Q, L) scores (the outer index in two runs),
    a relative position bias (H, Q, L), a full one, a non-last axis, non-adjacent axes, and a
    bias the kernels cannot walk (materialised at x's shape)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(6)
    B, H, Q, L = 2, 3, 4, 37
    x = rng.normal(0, 2, (B, H, Q, L)).astype(dtype)
    dy = rng.normal(0, 1, (B, H, Q, L)).astype(dtype)
    compute = ks.COMPUTE_DTYPE[ks.DTYPE_TAG[dtype]]
    # (bias shape, axes, walked in the kernels)
    cases = [
        ((L,), (3,), True),
        ((B, 1, 1, L), (3,), True),
        ((1, 1, Q, L), (3,), True),
        ((H, Q, L), (3,), True),
        ((B, H, Q, L), (3,), True),
        ((B, 1, Q, 1), (2,), True),
        ((Q, 1), (1,), False),
        ((1, H, 1, L), (1, 3), True),
        ((B, 1, Q, L), (3,), True),
    ]
    for bshape, axes, walked in cases:
        for bdtype in dict.fromkeys((dtype, compute)):
            b = rng.normal(0, 2, bshape).astype(bdtype)
            b.flat[0] = -np.inf  # an additive mask
            for log in (False, True):
                want = nb.softmax(
                    x.astype(np.float64), axes, None, np.dtype(np.float64), log=log, bias=b.astype(np.float64)
                ).astype(dtype)
                _close(backend.softmax(x, axes, None, dtype, log=log, bias=b), want, dtype)
                _softmax_check(backend, dy, x, axes, log, bias=b)
            assert bias_walks == (WALKED if walked else MATERIALISED) * 4, (bshape, axes)
            bias_walks.clear()
    # a broadcast that is three runs of the outer index: materialised, same results
    b = rng.normal(0, 2, (B, 1, Q, 1, 1)).astype(dtype)
    x5 = rng.normal(0, 2, (B, H, Q, 2, L)).astype(dtype)
    dy5 = rng.normal(0, 1, x5.shape).astype(dtype)
    assert (
        ks.bias_plan(x5.shape, tuple(s // dtype.itemsize for s in np.broadcast_to(b, x5.shape).strides), 4, 4, 1)
        is None
    )
    bias_walks.clear()
    _softmax_check(backend, dy5, x5, (4,), False, bias=b)
    assert bias_walks == MATERIALISED
    # a bias with negative strides, and a float64 bias on float32 data (converted, the bias alone)
    b = rng.normal(0, 2, (L,))[::-1].astype(dtype)[::-1]
    _softmax_check(backend, dy, x, (3,), False, bias=b)
    _softmax_check(backend, dy, x, (3,), True, bias=rng.normal(0, 2, (L,)))


def test_softmax_bias_split_and_columns(backend, monkeypatch):
    """The bias in the split kernels (a long row) and the column kernels (a non-last axis)."""
    monkeypatch.setattr(backend, "_sm_count", lambda: 4)
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (2, 40000)).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    b = rng.normal(0, 3, (40000,)).astype(np.float32)
    for log in (False, True):
        _softmax_check(backend, dy, x, (1,), log, bias=b)
        assert _families() == {"softmax_grad_split_partials", "softmax_grad_split_finish"}
        want = nb.softmax(x.astype(np.float64), (1,), None, np.dtype(np.float64), log=log, bias=b.astype(np.float64))
        _close(backend.softmax(x, (1,), None, np.dtype(np.float32), log=log, bias=b), want, np.float32)
        assert _families() == {"softmax_split_partials", "softmax_split_finish"}
    mask = rng.random(x.shape) > 0.3
    _softmax_check(backend, dy, x, (1,), False, mask=mask, bias=b)
    assert _families() == {"softmax_grad_split_partials", "softmax_grad_split_finish"}
    x3 = rng.normal(0, 3, (3, 50, 40)).astype(np.float32)
    dy3 = rng.normal(0, 1, x3.shape).astype(np.float32)
    mask3 = rng.random(x3.shape) > 0.3
    for bshape in ((50, 1), (50, 40), (3, 1, 40)):
        b = rng.normal(0, 3, bshape).astype(np.float32)
        _softmax_check(backend, dy3, x3, (1,), False, bias=b)
        _softmax_check(backend, dy3, x3, (1,), True, mask=mask3, bias=b)
        assert _families() == {"softmax_grad_cols"}
    x2 = rng.normal(0, 3, (6, 100)).astype(np.float16)  # the warp kernels' bias variant, with a mask
    mask2 = rng.random(x2.shape) > 0.3
    b = rng.normal(0, 3, (6, 1, 100))[:, 0].astype(np.float32)
    for log in (False, True):
        _softmax_check(backend, x2 * np.float16(0.5), x2, (1,), log, mask=mask2, bias=b)
        assert _families() == {"softmax_grad_warp"}
        want = nb.softmax(
            x2.astype(np.float64), (1,), None, np.dtype(np.float64), log=log, mask=mask2, bias=b.astype(np.float64)
        )
        _close(backend.softmax(x2, (1,), None, np.dtype(np.float16), log=log, mask=mask2, bias=b), want, np.float16)
        assert [launch.name for launch in backend_shim.ShimKernel.launches] == ["gpuact_softmax_warp_f16_w32_e4_bias"]
        backend_shim.ShimKernel.launches.clear()


# ---- sparsemax, glu, prelu -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axis",
    [((6, 1), 1), ((8, 40), 1), ((3, 1024), 1), ((2, 1500), 1), ((30, 4), 0), ((3, 50, 6), 1), ((2, 600, 3), 1)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_sparsemax_grad(backend, shape, axis, dtype):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 1, shape).astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    if shape[axis] > 2:
        idx = [0] * len(shape)
        idx[axis] = slice(None)
        x[tuple(idx)] = -np.inf  # no projection: NaN
        idx[0] = 1 if axis != 0 else 0
        idx[-1 if axis != len(shape) - 1 else 0] = 1
        x[tuple(idx)] = np.round(x[tuple(idx)])  # ties
    want = nb.sparsemax_grad(dy, x, axis, None, dtype)
    _close(backend.sparsemax_grad(dy, x, axis, None, dtype), want, dtype)
    for which in ("dy", "x"):
        dyc, xc = dy.copy(), x.copy()
        out = dyc if which == "dy" else xc
        assert backend.sparsemax_grad(dyc, xc, axis, out, dtype) is out
        _close(out, want, dtype)
    out = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    backend.sparsemax_grad(dy, x, axis, out, dtype)
    _close(out, want, dtype)
    if dtype == np.float32:
        xi = (x * 4).astype(np.int32) if shape[axis] <= 2 else np.nan_to_num(x * 4, neginf=-100).astype(np.int32)
        _close(backend.sparsemax_grad(dy, xi, axis, None, dtype), nb.sparsemax_grad(dy, xi, axis, None, dtype), dtype)


@pytest.mark.parametrize("shape, axis", [((6,), 0), ((4, 10), 1), ((4, 10), 0), ((2, 6, 3), 1)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_glu_grad(backend, shape, axis, dtype):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(8)
    x = rng.normal(0, 3, shape).astype(dtype)
    x.flat[:4] = [np.inf, -np.inf, np.nan, 0.0]
    half = list(shape)
    half[axis] //= 2
    dy = rng.normal(0, 1, half).astype(dtype)
    want = nb.glu_grad(dy, x, axis, None, dtype)
    _close(backend.glu_grad(dy, x, axis, None, dtype), want, dtype)
    out = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    backend.glu_grad(dy, x, axis, out, dtype)
    _close(out, want, dtype)
    if dtype == np.float32:  # float16 dy with float32 x
        _close(
            backend.glu_grad(dy.astype(np.float16), x, axis, None, dtype),
            nb.glu_grad(dy.astype(np.float16), x, axis, None, dtype),
            dtype,
        )


@pytest.mark.parametrize("dtype", FLOATS)
def test_prelu_grad(backend, dtype):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(9)
    x, dy = _inputs(dtype, (6, 20))
    compute = ks.COMPUTE_DTYPE[ks.DTYPE_TAG[dtype]]
    for ashape in ((20,), (6, 1), (6, 20), ()):
        alpha = np.broadcast_to(rng.uniform(0, 0.5, ashape).astype(compute), x.shape)
        want = nb.prelu_grad(dy, x, alpha, None, dtype)
        _close(backend.prelu_grad(dy, x, alpha, None, dtype), want, dtype)
        out = dy.copy()
        backend.prelu_grad(out, x, alpha, out, dtype)  # in place into dy
        _close(out, want, dtype)
    assert np.isnan(backend.prelu_grad(dy, x, alpha, None, dtype)[np.isnan(x)]).all()
