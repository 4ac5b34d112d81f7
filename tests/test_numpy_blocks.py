"""The NumPy path's block driver: tiny blocks and a low threading threshold make small inputs take
every route (many blocks, several threads, row slabs for non-last axes, staging for float16 and
in-place calls) that large inputs take in production."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact
from gpuact.backends.numpy_backend import pool as numpy_pool
from tests import reference
from tests.reference import assert_close


@pytest.fixture(params=[(64, 256), (1000, 1 << 30)], ids=["tiny-blocks-threaded", "medium-blocks-serial"])
def small_blocks(request, monkeypatch):
    block, parallel_min = request.param
    monkeypatch.setattr(numpy_pool, "BLOCK", block)
    monkeypatch.setattr(numpy_pool, "PARALLEL_MIN", parallel_min)
    monkeypatch.setattr(numpy_pool, "compiled_parallel_min", lambda op: parallel_min)
    monkeypatch.setattr(numpy_pool, "COMPILED_SOFTMAX_PARALLEL_MIN", parallel_min)
    monkeypatch.setattr(numpy_pool, "POOLED_SOFTMAX_PARALLEL_MIN", parallel_min)
    monkeypatch.setattr(numpy_pool, "THREADS", 2)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "softplus", "gelu", "squareplus", "threshold"])
def test_elementwise_in_blocks(small_blocks, name, dtype):
    kwargs = {"threshold": 0.5, "default_value": -1.0} if name == "threshold" else {}
    x = np.random.default_rng(0).normal(0, 5, 3001).astype(dtype)
    assert_close(getattr(gpuact, name)(x, **kwargs), reference.elementwise(name, x, **kwargs), dtype)
    y = x.copy()
    getattr(gpuact, name)(y, out=y, **kwargs)
    assert_close(y, reference.elementwise(name, x, **kwargs), dtype)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize(
    "shape,axis", [((37, 45), 0), ((3, 40, 20), 1), ((50, 7), -1), ((4, 30, 9, 2), (1, 2)), ((6, 5, 8), (0, 2))]
)
def test_softmax_in_blocks_and_slabs(small_blocks, shape, axis, log):
    x = np.random.default_rng(1).normal(0, 3, shape).astype(np.float32)
    fn = gpuact.log_softmax if log else gpuact.softmax
    assert_close(fn(x, axis=axis), reference.softmax(x, axis, log), np.float32)
    y = x.copy()
    fn(y, axis=axis, out=y)
    assert_close(y, reference.softmax(x, axis, log), np.float32)


@pytest.mark.parametrize("shape,axis", [((37, 45), 0), ((50, 7), -1)])
def test_masked_softmax_in_blocks_and_slabs(small_blocks, shape, axis):
    from gpuact.layers import Softmax

    x = np.random.default_rng(2).normal(0, 3, shape).astype(np.float32)
    mask = np.random.default_rng(3).random(shape) > 0.3
    mask[:, 0] = False
    mask[0] = False
    y = Softmax(axis=axis)(x, mask=mask)
    expected = np.nan_to_num(reference.softmax(np.where(mask, x.astype(np.float64), -np.inf), axis)) * mask
    assert_close(y, expected, np.float32)


# JAX, when another test file imported it into this process, warns at every fork; the child here
# never touches JAX.
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_threads_work_in_a_forked_child():
    # The pool's threads do not survive fork; a child that reused the pool object would hang.
    import multiprocessing

    x = np.linspace(-5, 5, 4 * numpy_pool.PARALLEL_MIN, dtype=np.float32)
    gpuact.sigmoid(x)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_sigmoid_sum, (x,)).get(timeout=60)
    np.testing.assert_allclose(result, float(gpuact.sigmoid(x).astype(np.float64).sum()), rtol=1e-6)


def _sigmoid_sum(x):
    return float(gpuact.sigmoid(x).astype(np.float64).sum())
