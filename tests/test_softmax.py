"""softmax, log_softmax, glu and sparsemax along every axis, on every backend."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import gpuact
from gpuact.layers import Softmax
from tests import reference
from tests.reference import assert_close

FLOATS = [np.float16, np.float32, np.float64]
SHAPES = [(7,), (4, 33), (3, 5, 6), (2, 3, 4, 5)]


def _axes_of(ndim):
    single = list(range(-ndim, ndim))
    pairs = [tuple(p) for p in itertools.combinations(range(ndim), 2)] if ndim > 1 else []
    return single + pairs + ([tuple(range(ndim))] if ndim > 2 else [])


CASES = [(shape, axis) for shape in SHAPES for axis in _axes_of(len(shape))]


def _inputs(shape, dtype, seed=0):
    return (np.random.default_rng(seed).normal(0, 3, shape)).astype(dtype)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", CASES, ids=[f"{s}-axis{a}" for s, a in CASES])
def test_every_axis_float32(be, shape, axis, log):
    x = _inputs(shape, np.float32)
    fn = gpuact.log_softmax if log else gpuact.softmax
    y = fn(be.asarray(x), axis=axis)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_close(be.to_numpy(y), reference.softmax(x, axis=axis, log=log), np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("row_length", [1, 31, 32, 33, 1000, 1024, 1025, 5000])
def test_row_lengths(be, row_length, dtype):
    x = _inputs((3, row_length), dtype, seed=row_length)
    for log in (False, True):
        fn = gpuact.log_softmax if log else gpuact.softmax
        for axis in (-1, 0):
            assert_close(be.to_numpy(fn(be.asarray(x), axis=axis)), reference.softmax(x, axis, log), dtype)


def test_non_finite_rows(be):
    x = np.array(
        [[-math.inf, -math.inf, -math.inf], [1.0, -math.inf, 2.0], [math.nan, 0.0, 1.0], [1e4, -1e4, 0.0]], np.float32
    )
    y = be.to_numpy(gpuact.softmax(be.asarray(x)))
    assert np.isnan(y[0]).all()  # all -inf: NaN, as TF, PyTorch and JAX
    assert y[1, 1] == 0.0 and abs(y[1].sum() - 1) < 1e-6
    assert np.isnan(y[2]).all()
    assert_close(y[3], [1.0, 0.0, 0.0], np.float32)
    ly = be.to_numpy(gpuact.log_softmax(be.asarray(x)))
    assert np.isnan(ly[0]).all() and ly[1, 1] == -math.inf


@pytest.mark.parametrize("view", ["transposed", "step", "reversed"])
def test_strided_and_negative_stride_views(be, view):
    if be.name == "numba" and view == "reversed":
        pytest.skip("Numba device arrays cannot be sliced with a negative step")
    if be.name == "numba" and view == "transposed":
        pytest.skip("Numba device arrays transpose only in 2-D (test_strided_views covers that)")
    host = _inputs((12, 10, 6), np.float32, seed=5)
    select = {
        "transposed": lambda a: a.transpose(2, 0, 1),
        "step": lambda a: a[::2, 1::3, :],
        "reversed": lambda a: a[::-1, :, ::-2],
    }[view]
    x = select(be.asarray(host))
    for axis in (0, 1, -1, (0, 2)):
        for log in (False, True):
            fn = gpuact.log_softmax if log else gpuact.softmax
            assert_close(be.to_numpy(fn(x, axis=axis)), reference.softmax(select(host), axis, log), np.float32)


def test_out_and_in_place(be):
    host = _inputs((6, 40), np.float64, seed=6)
    expected = reference.softmax(host, axis=0)
    out = be.empty(host.shape, np.float64)
    gpuact.softmax(be.asarray(host), axis=0, out=out)
    assert_close(be.to_numpy(out), expected, np.float64)
    x = be.asarray(host)
    gpuact.softmax(x, axis=0, out=x)
    assert_close(be.to_numpy(x), expected, np.float64)


def test_zero_size_and_integer_input(be):
    y = gpuact.softmax(be.asarray(np.zeros((0, 4), np.float32)), axis=-1)
    assert y.shape == (0, 4)
    y = gpuact.softmax(be.asarray(np.array([[1, 2, 3]], np.int32)))
    assert y.dtype == np.float32
    assert_close(be.to_numpy(y), reference.softmax(np.array([[1.0, 2.0, 3.0]])), np.float32)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_softmax_layer_mask(be, axis):
    host = _inputs((4, 6), np.float32, seed=7)
    mask = np.random.default_rng(8).random((4, 6)) > 0.4
    mask[1] = False  # a fully masked row
    y = be.to_numpy(Softmax(axis=axis)(be.asarray(host), mask=be.asarray(mask)))
    masked = np.where(mask, host.astype(np.float64), -np.inf)
    expected = np.nan_to_num(reference.softmax(masked, axis=axis), nan=0.0) * mask
    assert_close(y, expected, np.float32)
    assert (y[~mask] == 0).all()


def test_softmax_layer_numeric_mask_broadcasts(be):
    host = _inputs((3, 5), np.float32, seed=9)
    mask = np.array([1.0, 1.0, 0.0, 1.0, 0.2], np.float32)  # > 0.5 keeps; broadcast over rows
    y = be.to_numpy(Softmax()(be.asarray(host), mask=be.asarray(mask)))
    expected = reference.softmax(np.where(mask > 0.5, host.astype(np.float64), -np.inf))
    assert_close(y, np.nan_to_num(expected), np.float32)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [((8,), -1), ((4, 6), 0), ((3, 4, 10), -1), ((2, 6, 3), 1)])
def test_glu(be, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=10)
    y = gpuact.glu(be.asarray(x), axis=axis)
    expected = reference.glu(x, axis)
    assert y.shape == expected.shape and y.dtype == dtype
    assert_close(be.to_numpy(y), expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", [((5,), -1), ((4, 7), -1), ((4, 7), 0), ((3, 4, 5), 1)])
def test_sparsemax(be, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=11)
    y = be.to_numpy(gpuact.sparsemax(be.asarray(x), axis=axis))
    expected = reference.sparsemax(x.astype(np.float64), axis)
    tol = {"float16": 2e-3, "float32": 1e-5, "float64": 1e-9}[np.dtype(dtype).name]  # tau solves a sum
    np.testing.assert_allclose(y, expected, atol=tol, rtol=tol)
    np.testing.assert_allclose(y.astype(np.float64).sum(axis=axis), 1.0, atol=10 * tol)


def test_prelu_layer(be):
    from gpuact.layers import PReLU

    host = _inputs((4, 3), np.float32, seed=12)
    alpha = np.array([0.1, 0.2, 0.3], np.float32)
    y = be.to_numpy(PReLU(be.asarray(alpha) if be.name == "cupy" else alpha)(be.asarray(host)))
    expected = np.maximum(host, 0) - alpha * np.maximum(-host, 0)
    assert_close(y, expected, np.float32)
