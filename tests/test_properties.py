"""Invariants that must hold for any input (hypothesis), on the NumPy path and every usable backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpuact

FINITE32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)
DTYPES = st.sampled_from([np.float16, np.float32, np.float64])


def _arrays(dtype=np.float32, min_dims=1, max_dims=3, elements=FINITE32):
    return hnp.arrays(
        dtype, hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=8), elements=elements
    )


@given(x=_arrays(), data=st.data())
def test_softmax_slices_sum_to_one(be, x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    y = be.to_numpy(gpuact.softmax(be.asarray(x), axis=axis)).astype(np.float64)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=0, atol=1e-5 * x.shape[axis])
    assert (y >= 0).all() and (y <= 1).all()
    logy = be.to_numpy(gpuact.log_softmax(be.asarray(x), axis=axis)).astype(np.float64)
    np.testing.assert_allclose(np.exp(logy).sum(axis=axis), 1.0, rtol=0, atol=1e-5 * x.shape[axis])


MONOTONE = [
    "relu",
    "sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "elu",
    "selu",
    "exponential",
    "relu6",
    "leaky_relu",
    "hard_sigmoid",
    "log_sigmoid",
    "celu",
    "hard_tanh",
    "soft_shrink",
    "tanh_shrink",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
    "linear",
]


@pytest.mark.parametrize("name", MONOTONE)
@given(x=hnp.arrays(np.float32, st.integers(2, 64), elements=FINITE32))
def test_monotone_functions_stay_monotone(be, name, x):
    x = np.sort(x)
    y = be.to_numpy(getattr(gpuact, name)(be.asarray(x)))
    assert (y[1:] >= y[:-1]).all()  # not np.diff: inf - inf would be NaN


OUT_CASES = [
    ("gelu", {}),
    ("relu", {"alpha": 0.1, "max_value": 3.0, "threshold": 0.5}),
    ("softmax", {"axis": 0}),
    ("log_softmax", {"axis": -1}),
    ("squareplus", {"b": 2.0}),
]


@pytest.mark.parametrize("name,kwargs", OUT_CASES, ids=[c[0] for c in OUT_CASES])
@given(data=st.data())
def test_out_and_in_place_agree_with_the_plain_call(be, name, kwargs, data):
    dtype = data.draw(DTYPES)
    x_host = data.draw(_arrays(dtype, min_dims=2, elements=st.floats(-60, 60, width=16)))
    fn = getattr(gpuact, name)
    plain = be.to_numpy(fn(be.asarray(x_host), **kwargs))
    out = be.empty(x_host.shape, dtype)
    fn(be.asarray(x_host), out=out, **kwargs)
    np.testing.assert_array_equal(be.to_numpy(out), plain)
    x = be.asarray(x_host)
    fn(x, out=x, **kwargs)
    np.testing.assert_array_equal(be.to_numpy(x), plain)
