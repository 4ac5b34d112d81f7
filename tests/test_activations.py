"""Every elementwise activation, on every backend, against the float64 references.

Runs per backend through the ``be`` fixture (tests/conftest.py): NumPy here, CuPy and Numba on a
GPU, Numba under the CUDA simulator in its own process. Inputs stay small (a few thousand
elements) so the simulator can run them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from tests import reference
from tests.reference import assert_close

FLOATS = [np.float16, np.float32, np.float64]

# (public name, public kwargs, reference name, reference kwargs)
CASES = [
    ("relu", {}, "relu", {}),
    ("relu", {"alpha": 0.5}, "relu", {"alpha": 0.5}),
    ("relu", {"negative_slope": 0.5}, "relu", {"alpha": 0.5}),
    ("relu", {"max_value": 5.0}, "relu", {"max_value": 5.0}),
    ("relu", {"max_value": 6.0}, "relu", {"max_value": 6.0}),
    ("relu", {"threshold": 5.0}, "relu", {"threshold": 5.0}),
    ("relu", {"threshold": -2.0}, "relu", {"threshold": -2.0}),
    ("relu", {"alpha": 0.1, "threshold": 1.0}, "relu", {"alpha": 0.1, "threshold": 1.0}),
    (
        "relu",
        {"alpha": 0.3, "max_value": 6.0, "threshold": -2.0},
        "relu",
        {"alpha": 0.3, "max_value": 6.0, "threshold": -2.0},
    ),
    ("relu", {"alpha": 0.2, "max_value": 4.0}, "relu", {"alpha": 0.2, "max_value": 4.0}),
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
    ("leaky_relu", {"negative_slope": 0.0}, "leaky_relu", {"negative_slope": 0.0}),
    ("silu", {}, "silu", {}),
    ("swish", {}, "silu", {}),
    ("gelu", {}, "gelu", {}),
    ("gelu", {"approximate": True}, "gelu", {"approximate": True}),
    ("hard_sigmoid", {}, "hard_sigmoid", {}),
    ("hard_silu", {}, "hard_silu", {}),
    ("hard_swish", {}, "hard_silu", {}),
    ("mish", {}, "mish", {}),
    ("log_sigmoid", {}, "log_sigmoid", {}),
    ("celu", {}, "celu", {}),
    ("celu", {"alpha": 2.0}, "celu", {"alpha": 2.0}),
    ("hard_tanh", {}, "hard_tanh", {}),
    ("hard_shrink", {}, "hard_shrink", {}),
    ("hard_shrink", {"threshold": 2.0}, "hard_shrink", {"threshold": 2.0}),
    ("soft_shrink", {}, "soft_shrink", {}),
    ("soft_shrink", {"threshold": 1.5}, "soft_shrink", {"threshold": 1.5}),
    ("tanh_shrink", {}, "tanh_shrink", {}),
    ("threshold", {"threshold": 1.0, "default_value": -5.0}, "threshold", {"threshold": 1.0, "default_value": -5.0}),
    ("squareplus", {}, "squareplus", {}),
    ("squareplus", {"b": 0.5}, "squareplus", {"b": 0.5}),
    ("sparse_plus", {}, "sparse_plus", {}),
    ("sparse_sigmoid", {}, "sparse_sigmoid", {}),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw, _, _ in CASES]

# The contract's edge values (docs/contract.rst: "NaN and ±inf", "Subnormals"), plus the points
# where piecewise definitions switch.
EDGES = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    0.5,
    -0.5,
    1.0,
    -1.0,
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


def _random_inputs(dtype, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 4, n // 2), rng.uniform(-30, 30, n - n // 2)])
    return x.astype(dtype)


def _check(be, name, kwargs, ref_name, ref_kwargs, x):
    y = getattr(gpuact, name)(be.asarray(x), **kwargs)
    assert isinstance(y, be.array_type())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_close(be.to_numpy(y), reference.elementwise(ref_name, x, **ref_kwargs), x.dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,kwargs,ref_name,ref_kwargs", CASES, ids=CASE_IDS)
def test_edge_values(be, name, kwargs, ref_name, ref_kwargs, dtype):
    _check(be, name, kwargs, ref_name, ref_kwargs, np.array(EDGES, dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,kwargs,ref_name,ref_kwargs", CASES, ids=CASE_IDS)
def test_random_values(be, name, kwargs, ref_name, ref_kwargs, dtype):
    _check(be, name, kwargs, ref_name, ref_kwargs, _random_inputs(dtype))


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 2), (0, 3)])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "gelu", "softsign", "threshold"])
def test_shapes(be, name, shape):
    kwargs = {"threshold": 0.1, "default_value": 0.0} if name == "threshold" else {}
    x = np.random.default_rng(1).normal(0, 3, shape).astype(np.float32)
    _check(be, name, kwargs, name, kwargs, x)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_inputs_compute_in_float32(be, dtype):
    x = np.array([0, 1, 2, 3, 100], dtype=np.int64).astype(dtype)
    y = gpuact.sigmoid(be.asarray(x))
    assert y.dtype == np.float32
    assert_close(be.to_numpy(y), reference.elementwise("sigmoid", x.astype(np.float64)), np.float32)


@pytest.mark.parametrize("view", ["reversed", "step2", "transposed", "negative_2d"])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "elu", "mish"])
def test_strided_views(be, name, view):
    base_host = np.random.default_rng(2).normal(0, 3, (24, 18)).astype(np.float32)
    base = be.asarray(base_host)
    select = {
        "reversed": lambda a: a[:, ::-1],
        "step2": lambda a: a[::2, 1::3],
        "transposed": lambda a: a.T,
        "negative_2d": lambda a: a[::-3, ::-2],
    }[view]
    if be.name == "numba" and view in ("reversed", "negative_2d"):
        pytest.skip("Numba device arrays cannot be sliced with a negative step")
    if be.name == "numba" and view == "transposed":
        x = base.T if hasattr(base, "T") else base.transpose()
    else:
        x = select(base)
    y = getattr(gpuact, name)(x)
    expected = reference.elementwise(name, select(base_host))
    assert_close(be.to_numpy(y), expected, np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
def test_out_and_in_place(be, dtype):
    x_host = _random_inputs(dtype, 500, seed=3).reshape(20, 25)
    expected = reference.elementwise("elu", x_host, alpha=0.7)
    out = be.empty(x_host.shape, dtype)
    y = gpuact.elu(be.asarray(x_host), 0.7, out=out)
    assert_close(be.to_numpy(out), expected, dtype)
    assert_close(be.to_numpy(y), expected, dtype)
    x = be.asarray(x_host)
    y = gpuact.elu(x, 0.7, out=x)
    assert_close(be.to_numpy(x), expected, dtype)


def test_out_non_contiguous(be):
    if be.name == "numba":
        pytest.skip("covered by tests/test_numba_backend.py with Numba's own views")
    x_host = _random_inputs(np.float32, 200, seed=4).reshape(10, 20)
    big = be.asarray(np.zeros((10, 40), np.float32))
    out = big[:, ::2]
    gpuact.softplus(be.asarray(x_host), out=out)
    got = be.to_numpy(big)
    assert_close(got[:, ::2], reference.elementwise("softplus", x_host), np.float32)
    assert (got[:, 1::2] == 0).all()


def test_large_array_crosses_blocks_and_threads():
    # More elements than one block and the parallel threshold of the NumPy path, odd length.
    from gpuact.backends.numpy_backend import pool

    n = 2 * pool.PARALLEL_MIN + pool.BLOCK + 3
    x = np.linspace(-30, 30, n, dtype=np.float32)
    for name in ("sigmoid", "softplus", "gelu", "relu"):
        y = getattr(gpuact, name)(x)
        assert_close(y[::97], reference.elementwise(name, x[::97]), np.float32)
    x16 = x.astype(np.float16)
    assert_close(gpuact.tanh(x16)[::97], reference.elementwise("tanh", x16[::97]), np.float16)


def test_nan_propagates_everywhere(be):
    x = np.array([math.nan], np.float32)
    for name, kwargs, _, _ in CASES:
        y = be.to_numpy(getattr(gpuact, name)(be.asarray(x), **kwargs))
        assert np.isnan(y).all(), name


def test_documented_limits_at_infinity(be):
    x = be.asarray(np.array([-math.inf, math.inf], np.float32))
    limits = {
        "sigmoid": [0, 1],
        "softsign": [-1, 1],
        "silu": [0, math.inf],
        "gelu": [0, math.inf],
        "mish": [0, math.inf],
        "softplus": [0, math.inf],
        "hard_silu": [0, math.inf],
        "tanh": [-1, 1],
        "elu": [-1, math.inf],
        "log_sigmoid": [-math.inf, 0],
    }
    for name, expected in limits.items():
        np.testing.assert_array_equal(be.to_numpy(getattr(gpuact, name)(x)), np.array(expected, np.float32), name)
    np.testing.assert_array_equal(be.to_numpy(gpuact.gelu(x, approximate=True)), [0, math.inf])
