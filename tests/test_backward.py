"""gpuact.backward and the fused bias, on every backend (the ``be`` fixture), against float64
references derived by hand (tests/reference.py GRAD) and against central finite differences.

Tolerances: the forward's (float16 1e-3, float32 1e-5 / 1e-6, float64 1e-12 / 1e-14) for the
elementwise derivatives against the hand-derived references; the finite-difference checks run in
float64 with step h = 1e-6 |x| (relative 1e-6: the O(h**2) truncation and the O(eps / h)
rounding are both near 1e-10 there) at points at least 1e-3 away from every kink.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact import _entry
from gpuact._contract import ops
from gpuact.layers import PReLU, Softmax
from tests import reference
from tests.reference import assert_close

FLOATS = [np.float16, np.float32, np.float64]

# (public name, kwargs, reference name, reference kwargs)
CASES = [
    ("relu", {}, "relu", {}),
    (
        "relu",
        {"alpha": 0.3, "max_value": 6.0, "threshold": -1.0},
        "relu",
        {"alpha": 0.3, "max_value": 6.0, "threshold": -1.0},
    ),
    ("relu", {"negative_slope": 0.1, "threshold": 2.0}, "relu", {"alpha": 0.1, "threshold": 2.0}),
    ("sigmoid", {}, "sigmoid", {}),
    ("softplus", {}, "softplus", {}),
    ("softsign", {}, "softsign", {}),
    ("tanh", {}, "tanh", {}),
    ("selu", {}, "selu", {}),
    ("elu", {}, "elu", {}),
    ("elu", {"alpha": 0.5}, "elu", {"alpha": 0.5}),
    ("exponential", {}, "exponential", {}),
    ("linear", {}, "linear", {}),
    ("relu6", {}, "relu6", {}),
    ("leaky_relu", {}, "leaky_relu", {}),
    ("silu", {}, "silu", {}),
    ("swish", {}, "silu", {}),
    ("gelu", {}, "gelu", {}),
    ("gelu", {"approximate": True}, "gelu", {"approximate": True}),
    ("hard_sigmoid", {}, "hard_sigmoid", {}),
    ("hard_silu", {}, "hard_silu", {}),
    ("hard_swish", {}, "hard_silu", {}),
    ("mish", {}, "mish", {}),
    ("log_sigmoid", {}, "log_sigmoid", {}),
    ("celu", {"alpha": 2.0}, "celu", {"alpha": 2.0}),
    ("hard_tanh", {}, "hard_tanh", {}),
    ("hard_shrink", {}, "hard_shrink", {}),
    ("soft_shrink", {"threshold": 1.5}, "soft_shrink", {"threshold": 1.5}),
    ("tanh_shrink", {}, "tanh_shrink", {}),
    ("threshold", {"threshold": 1.0, "default_value": -5.0}, "threshold", {"threshold": 1.0, "default_value": -5.0}),
    ("squareplus", {}, "squareplus", {}),
    ("squareplus", {"b": 0.0}, "squareplus", {"b": 0.0}),
    ("sparse_plus", {}, "sparse_plus", {}),
    ("sparse_sigmoid", {}, "sparse_sigmoid", {}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw, _, _ in CASES]
# every kink of every case: the derivative there is the one from the left
KINKS = {
    "relu": [0.0, -1.0, 2.0, 6.0, 5.0],
    "relu6": [0.0, 6.0],
    "leaky_relu": [0.0],
    "hard_sigmoid": [-3.0, 3.0],
    "hard_silu": [-3.0, 3.0],
    "swish": [],
    "hard_tanh": [-1.0, 1.0],
    "hard_shrink": [-0.5, 0.5],
    "soft_shrink": [-1.5, 1.5],
    "threshold": [1.0],
    "sparse_sigmoid": [-1.0, 1.0],
    "squareplus": [0.0],
    "elu": [0.0],
    "selu": [0.0],
    "celu": [0.0],
    "sparse_plus": [-1.0, 1.0],
    "hard_swish": [-3.0, 3.0],
}
EDGES = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    0.5,
    -0.5,
    1.0,
    -1.0,
    1.5,
    -1.5,
    2.0,
    -2.0,
    3.0,
    -3.0,
    5.0,
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


def _inputs(dtype, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([EDGES, rng.normal(0, 4, n // 2), rng.uniform(-30, 30, n - n // 2)])
    return x.astype(dtype)


def _grad_check(be, name, kwargs, ref_name, ref_kwargs, x, dy):
    dx = getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), **kwargs)
    assert isinstance(dx, be.array_type()) and dx.shape == x.shape and dx.dtype == x.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        expected = dy.astype(np.float64) * reference.grad(ref_name, x.astype(np.float64), **ref_kwargs)
    assert_close(be.to_numpy(dx), expected, x.dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,kwargs,ref_name,ref_kwargs", CASES, ids=IDS)
def test_gradient_against_the_hand_derived_reference(be, name, kwargs, ref_name, ref_kwargs, dtype):
    x = _inputs(dtype)
    dy = np.random.default_rng(1).uniform(-2, 2, x.shape).astype(dtype)
    _grad_check(be, name, kwargs, ref_name, ref_kwargs, x, dy)


@pytest.mark.parametrize("name,kwargs,ref_name,ref_kwargs", CASES, ids=IDS)
def test_kinks_take_the_left_derivative_and_limits_hold(be, name, kwargs, ref_name, ref_kwargs):
    points = KINKS.get(name, []) + [math.inf, -math.inf, math.nan]
    x = np.array(points, np.float32)
    dy = np.ones_like(x)
    got = be.to_numpy(getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), **kwargs))
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference.grad(ref_name, x.astype(np.float64), **ref_kwargs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(got, want, np.float32)
    # NaN in dy gives NaN
    nan_dy = be.to_numpy(
        getattr(gpuact.backward, name)(
            be.asarray(np.full(3, np.nan, np.float32)), be.asarray(np.array([-1.0, 0.5, 4.0], np.float32)), **kwargs
        )
    )
    assert np.isnan(nan_dy).all()


def _away_from_kinks(name, x):
    kinks = KINKS.get(name, []) + [-1e-300, 1e-300]
    for k in kinks:
        x = np.where(np.abs(x - k) < 1e-3, x + 2e-3, x)
    return x


@pytest.mark.parametrize("name,kwargs,ref_name,ref_kwargs", CASES, ids=IDS)
def test_gradient_matches_central_finite_differences(be, name, kwargs, ref_name, ref_kwargs):
    x = _away_from_kinks(name, np.random.default_rng(2).uniform(-8, 8, 400))
    h = 1e-6 * np.maximum(np.abs(x), 1e-3)
    forward = getattr(gpuact, name)
    plus = be.to_numpy(forward(be.asarray(x + h), **kwargs))
    minus = be.to_numpy(forward(be.asarray(x - h), **kwargs))
    numeric = (plus - minus) / (2 * h)
    got = be.to_numpy(getattr(gpuact.backward, name)(be.asarray(np.ones_like(x)), be.asarray(x), **kwargs))
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)


# ---- shapes, views, out, dtypes, kinds ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (0, 3)])
def test_shapes_and_empty(be, shape):
    x = np.random.default_rng(3).normal(0, 3, shape).astype(np.float32)
    dy = np.random.default_rng(4).normal(0, 1, shape).astype(np.float32)
    for name in ("gelu", "sigmoid", "relu"):
        _grad_check(be, name, {}, name, {}, x, dy)


def test_views_out_and_in_place(be):
    base = np.random.default_rng(5).normal(0, 3, (16, 24)).astype(np.float32)
    dy_host = np.random.default_rng(6).normal(0, 1, (16, 24)).astype(np.float32)
    expected = dy_host * reference.grad("mish", base)
    x, dy = be.asarray(base.copy()), be.asarray(dy_host.copy())  # the NumPy backend's asarray is no copy
    out = be.empty(base.shape, np.float32)
    assert gpuact.backward.mish(dy, x, out=out) is out
    assert_close(be.to_numpy(out), expected, np.float32)
    gpuact.backward.mish(dy, x, out=dy)  # in place into dy
    assert_close(be.to_numpy(dy), expected, np.float32)
    if be.name != "numba":  # Numba device arrays take no steps in their views beyond what tests/test_numba_backend does
        xv = be.asarray(base)[:, ::2]
        dyv = be.asarray(dy_host)[:, ::2]
        assert_close(be.to_numpy(gpuact.backward.mish(dyv, xv)), expected[:, ::2], np.float32)


def test_mixed_dtypes_integers_and_kind_errors(be):
    x = np.array([-2, -1, 0, 1, 2], np.int32)
    dy = np.ones(5, np.float32)
    dx = gpuact.backward.sigmoid(be.asarray(dy), be.asarray(x))
    assert dx.dtype == np.float32
    assert_close(be.to_numpy(dx), reference.grad("sigmoid", x.astype(np.float64)), np.float32)
    dx64 = gpuact.backward.tanh(be.asarray(np.ones(5)), be.asarray(np.zeros(5, np.float32)))
    assert dx64.dtype == np.float64  # dy float64 and x float32: the promoted dtype
    with pytest.raises(ValueError, match="shape"):
        gpuact.backward.relu(be.asarray(np.ones(4, np.float32)), be.asarray(np.ones(5, np.float32)))
    if be.name != "numpy":
        with pytest.raises(TypeError):
            gpuact.backward.relu(np.ones(5, np.float32), be.asarray(np.ones(5, np.float32)))
    else:
        with pytest.raises(TypeError):
            gpuact.backward.relu(np.ones(5, np.complex64), np.ones(5, np.float32))


# ---- the fused bias ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias_shape", [(8,), (1, 8), (3, 1), (3, 8), ()], ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_and_backward_with_a_bias(be, bias_shape, dtype):
    x = np.random.default_rng(7).normal(0, 2, (3, 8)).astype(dtype)
    b = np.random.default_rng(8).normal(0, 1, bias_shape).astype(dtype)
    dy = np.random.default_rng(9).normal(0, 1, (3, 8)).astype(dtype)
    bias = b if bias_shape == () and be.name != "numpy" else be.asarray(b)
    if bias_shape == ():
        bias = float(b)
    shifted = x.astype(np.float64) + np.asarray(b, np.float64)
    for name in ("gelu", "silu", "relu", "tanh"):
        y = getattr(gpuact, name)(be.asarray(x), bias=bias)
        assert_close(be.to_numpy(y), reference.elementwise(name, shifted.astype(dtype).astype(np.float64)), dtype)
        dx = getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), bias=bias)
        want = dy.astype(np.float64) * reference.grad(name, shifted.astype(dtype).astype(np.float64))
        assert_close(be.to_numpy(dx), want, dtype)
    for log in (False, True):
        fn = gpuact.log_softmax if log else gpuact.softmax
        assert_close(
            be.to_numpy(fn(be.asarray(x), bias=bias)), reference.softmax(shifted.astype(dtype), axis=-1, log=log), dtype
        )


def test_bias_errors(be):
    x = be.asarray(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="broadcast"):
        gpuact.gelu(x, bias=be.asarray(np.ones(3, np.float32)))
    if be.name != "numpy":
        with pytest.raises(TypeError):
            gpuact.gelu(x, bias=np.ones(4, np.float32))  # a host bias for a device x


# ---- along an axis ------------------------------------------------------------------------------------


def _softmax_grad_reference(dy, x, axis, log):
    y = reference.softmax(x, axis=axis)
    if log:
        return dy - y * dy.sum(axis=axis, keepdims=True)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize(
    "shape,axis",
    [((7,), -1), ((4, 33), -1), ((4, 33), 0), ((3, 5, 6), 1), ((3, 5, 6), (0, 2)), ((2, 1025), -1), ((1030, 3), 0)],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_backward(be, shape, axis, log, dtype):
    x = np.random.default_rng(10).normal(0, 3, shape).astype(dtype)
    dy = np.random.default_rng(11).normal(0, 1, shape).astype(dtype)
    fn = gpuact.backward.log_softmax if log else gpuact.backward.softmax
    got = be.to_numpy(fn(be.asarray(dy), be.asarray(x), axis=axis))
    assert_close(got, _softmax_grad_reference(dy.astype(np.float64), x.astype(np.float64), axis, log), dtype)


def test_softmax_backward_non_finite_slices(be):
    x = np.array([[-np.inf] * 3, [1.0, -np.inf, 2.0], [np.nan, 0.0, 1.0]], np.float32)
    dy = np.ones_like(x)
    got = be.to_numpy(gpuact.backward.softmax(be.asarray(dy), be.asarray(x)))
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all()
    assert got[1, 1] == 0.0 and np.isfinite(got[1]).all()


@pytest.mark.parametrize("log", [False, True])
def test_masked_positions_get_no_gradient_even_in_a_nan_slice(be, log):
    # The contract: dx is 0 wherever the mask is False, whatever the rest of the slice holds.
    x = np.array([[np.nan, 0.0, 1.0, 2.0], [0.5, 1.0, -1.0, 3.0]], np.float32)
    mask = np.array([True, False, True, False])
    if log:  # no public masked log_softmax; the backends' softmax_grad takes the mask for both
        got = be.to_numpy(
            gpuact._entry.softmax_grad(be.asarray(np.ones_like(x)), be.asarray(x), -1, log=True, mask=be.asarray(mask))
        )
    else:
        got = be.to_numpy(Softmax().backward(be.asarray(np.ones_like(x)), be.asarray(x), mask=be.asarray(mask)))
    assert (got[:, ~mask] == 0.0).all()
    assert np.isnan(got[0, mask]).all() and np.isfinite(got[1]).all()


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((4, 9), -1), ((6, 4), 0), ((3, 4, 5), 1)])
def test_sparsemax_backward(be, shape, axis):
    x = np.random.default_rng(12).normal(0, 1, shape).astype(np.float64)
    dy = np.random.default_rng(13).normal(0, 1, shape)
    y = reference.sparsemax(x, axis)
    support = y > 0
    mean = (dy * support).sum(axis=axis, keepdims=True) / support.sum(axis=axis, keepdims=True)
    want = support * (dy - mean)
    got = be.to_numpy(gpuact.backward.sparsemax(be.asarray(dy), be.asarray(x), axis=axis))
    assert_close(got, want, np.float64)
    # finite differences away from support changes: sparsemax is piecewise linear
    h = 1e-7
    v = np.random.default_rng(14).normal(0, 1, shape)
    plus = be.to_numpy(gpuact.sparsemax(be.asarray(x + h * v), axis=axis))
    minus = be.to_numpy(gpuact.sparsemax(be.asarray(x - h * v), axis=axis))
    jvp = ((plus - minus) / (2 * h) * dy).sum()
    assert abs(jvp - (got * v).sum()) < 1e-5 * max(1.0, abs(jvp))


@pytest.mark.parametrize("shape,axis", [((6,), -1), ((4, 10), -1), ((4, 10), 0), ((2, 6, 3), 1)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_glu_backward(be, shape, axis, dtype):
    x = np.random.default_rng(15).normal(0, 2, shape).astype(dtype)
    a, b = np.split(x.astype(np.float64), 2, axis=axis)
    dy = np.random.default_rng(16).normal(0, 1, a.shape).astype(dtype)
    s = reference.elementwise("sigmoid", b)
    want = np.concatenate([dy * s, dy * a * reference.grad("sigmoid", b)], axis=axis)
    got = be.to_numpy(gpuact.backward.glu(be.asarray(dy), be.asarray(x), axis=axis))
    assert got.shape == x.shape
    assert_close(got, want, dtype)
    with pytest.raises(ValueError, match="shape"):
        gpuact.backward.glu(be.asarray(np.ones(x.shape, dtype)), be.asarray(x), axis=axis)


# ---- the layers ---------------------------------------------------------------------------------------


def test_layers_have_a_backward(be):
    x = np.random.default_rng(17).normal(0, 2, (4, 6)).astype(np.float32)
    dy = np.random.default_rng(18).normal(0, 1, (4, 6)).astype(np.float32)
    alpha = np.linspace(0.1, 0.6, 6).astype(np.float32)
    got = be.to_numpy(PReLU(alpha).backward(be.asarray(dy), be.asarray(x)))
    assert_close(got, dy * np.where(x > 0, 1.0, alpha), np.float32)
    mask = np.arange(6) % 2 == 0
    got = be.to_numpy(Softmax().backward(be.asarray(dy), be.asarray(x), mask=be.asarray(mask)))
    y = reference.softmax(np.where(mask, x, -np.inf), axis=-1) * mask
    assert_close(got, y * (dy - (dy * y).sum(axis=-1, keepdims=True)), np.float32)
    for layer in (
        gpuact.layers.ReLU(max_value=6.0),
        gpuact.layers.LeakyReLU(),
        gpuact.layers.ELU(0.5),
        gpuact.layers.Activation("gelu"),
        gpuact.layers.ThresholdedReLU(0.5),
    ):
        assert be.to_numpy(layer.backward(be.asarray(dy), be.asarray(x))).shape == x.shape


# ---- second derivatives: the derivative ops ---------------------------------------------------------
#
# d_<op> is x -> f'(x) as an op; its backward is dy * f''(x) (gpuact._contract.ops.derivative_op),
# what gpuact.torch's double backward computes with. Checked against the hand-derived float64
# second derivatives (tests/reference.py SECOND) with the forward's tolerances, and in float64
# against central differences of the first derivative's kernel, which shares no formula with it.

# (op, canonical parameters, reference kwargs)
SECOND_CASES = [
    ("relu", (0.0, 0.0, -math.inf, math.inf), {}),
    ("relu", (0.3, -1.0, 0.0, 6.0), {}),
    ("relu6", (), {}),
    ("leaky_relu", (0.2,), {"negative_slope": 0.2}),
    ("sigmoid", (), {}),
    ("tanh", (), {}),
    ("silu", (), {}),
    ("gelu", (), {}),
    ("gelu_tanh", (), {"approximate": True}),
    ("softplus", (), {}),
    ("elu", (1.0,), {"alpha": 1.0}),
    ("elu", (0.5,), {"alpha": 0.5}),
    ("selu", (), {}),
]
SECOND_IDS = [f"{op}{params}" for op, params, _ in SECOND_CASES]


def _second_reference(op, x, ref_kwargs):
    return reference.second("gelu" if op == "gelu_tanh" else op, x, **ref_kwargs)


def test_the_second_derivative_ops_are_the_table_s():
    assert {op for op, _, _ in SECOND_CASES} == set(ops.SECOND_DERIVATIVE_OPS)
    assert ops.derivative_op("mish") is None


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op,params,ref_kwargs", SECOND_CASES, ids=SECOND_IDS)
def test_second_derivative_against_the_hand_derived_reference(be, op, params, ref_kwargs, dtype):
    x = _inputs(dtype)
    dy = np.random.default_rng(3).uniform(-2, 2, x.shape).astype(dtype)
    got = _entry.elementwise_grad(ops.derivative_op(op), be.asarray(dy), be.asarray(x), params)
    assert isinstance(got, be.array_type()) and got.dtype == x.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        want = dy.astype(np.float64) * _second_reference(op, x.astype(np.float64), ref_kwargs)
    assert_close(be.to_numpy(got), want, dtype)
    # the derivative op's forward is the first derivative
    first = _entry.elementwise(ops.derivative_op(op), be.asarray(x), params)
    assert_close(
        be.to_numpy(first),
        be.to_numpy(_entry.elementwise_grad(op, be.asarray(np.ones_like(x)), be.asarray(x), params)),
        dtype,
    )


@pytest.mark.parametrize("op,params,ref_kwargs", SECOND_CASES, ids=SECOND_IDS)
def test_second_derivative_limits_and_kinks(be, op, params, ref_kwargs):
    x = np.array([math.inf, -math.inf, math.nan, 0.0, -0.0, 6.0, -1.0, 1e30, -1e30], np.float32)
    got = be.to_numpy(
        _entry.elementwise_grad(ops.derivative_op(op), be.asarray(np.ones_like(x)), be.asarray(x), params)
    )
    # 0 at +-inf (and far out), NaN for NaN; at 0 elu's is the left one, alpha
    np.testing.assert_array_equal(got[[0, 1, 7, 8]], 0.0)
    assert np.isnan(got[2]) and not np.isnan(np.delete(got, 2)).any()
    with np.errstate(invalid="ignore", over="ignore"):
        want = _second_reference(op, x.astype(np.float64), ref_kwargs)
    assert_close(got, want, np.float32)


@pytest.mark.parametrize("op,params,ref_kwargs", SECOND_CASES, ids=SECOND_IDS)
def test_second_derivative_against_differences_of_the_first(be, op, params, ref_kwargs):
    rng = np.random.default_rng(4)
    x = rng.uniform(-6, 6, 400)
    x = x[np.abs(x) > 1e-3]  # away from the kinks at 0 (and 6 and -1, which uniform hits with probability 0)
    x = x[(np.abs(x - 6) > 1e-3) & (np.abs(x + 1) > 1e-3)]
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    ones = np.ones_like(x)

    def first(v):
        return be.to_numpy(_entry.elementwise_grad(op, be.asarray(ones), be.asarray(v), params))

    differences = (first(x + h) - first(x - h)) / (2 * h)
    got = be.to_numpy(_entry.elementwise_grad(ops.derivative_op(op), be.asarray(ones), be.asarray(x), params))
    # central differences in float64: O(h**2) truncation and O(eps / h) rounding, both near 1e-10
    np.testing.assert_allclose(got, differences, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("op,params,ref_kwargs", SECOND_CASES[4:10], ids=SECOND_IDS[4:10])
def test_second_derivative_with_a_bias(be, op, params, ref_kwargs):
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (6, 8)).astype(np.float32)
    b = rng.normal(0, 1, 8).astype(np.float32)
    dy = rng.normal(0, 1, x.shape).astype(np.float32)
    got = _entry.elementwise_grad(ops.derivative_op(op), be.asarray(dy), be.asarray(x), params, bias=be.asarray(b))
    want = dy * _second_reference(op, x.astype(np.float64) + b, ref_kwargs)
    assert_close(be.to_numpy(got), want, np.float32)
