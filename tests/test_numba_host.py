"""Host-side logic of the Numba backend's N-D kernels, checked without a GPU or the CUDA
simulator: the axis merging and odometer steps (``gpuact.backends.numba_backend``).

The N-D kernels are also run here as plain Python: ``_nd_kernel`` generates Python source, so
the very function Numba compiles can be called with NumPy arrays and a stand-in for ``cuda``
(block and thread indices), once per thread of a grid, to check that the odometer visits every
element exactly once.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# N-D kernels: merged axes and the odometer

nb = pytest.importorskip("gpuact.backends.numba_backend", reason="numba is not installed",
                         exc_type=ImportError)


def _strides(a):
    return tuple(a.strides)


@pytest.mark.parametrize("case,expected_rank", [
    ("c", 1), ("f", 1), ("glu_halves", 2), ("glu_halves_outer1", 1), ("transposed_in", 3),
    ("broadcast_alpha", 1), ("broadcast_alpha_rows", 2), ("broadcast_alpha_channels", 3), ("one_element", 0), ("size1_axes", 1), ("every_other", 1),
])
def test_merge_axes(case, expected_rank):
    base = np.zeros((4, 6, 10), np.float32)
    if case == "c":
        arrays = [base, np.zeros((4, 6, 10), np.float64)]
    elif case == "f":
        arrays = [np.asfortranarray(base), np.asfortranarray(base)]
    elif case == "glu_halves":
        x = np.zeros((4, 12, 10), np.float32)
        arrays = [x[:, :6], x[:, 6:], base]
    elif case == "glu_halves_outer1":
        x = np.zeros((1, 12, 10), np.float32)
        arrays = [x[:, :6], x[:, 6:], np.zeros((1, 6, 10), np.float32)]
    elif case == "transposed_in":
        arrays = [np.zeros((10, 6, 4), np.float32).transpose(2, 1, 0), base]
    elif case == "broadcast_alpha":
        arrays = [base, np.broadcast_to(np.float32(0.25), base.shape), base]
    elif case == "broadcast_alpha_rows":  # one alpha row per (6, 10) slice: the last two axes merge
        arrays = [base, np.broadcast_to(np.zeros((1, 6, 10), np.float32), base.shape), base]
    elif case == "broadcast_alpha_channels":  # alpha along the middle axis: nothing merges
        arrays = [base, np.broadcast_to(np.zeros((1, 6, 1), np.float32), base.shape), base]
    elif case == "one_element":
        arrays = [np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)]
    elif case == "size1_axes":
        arrays = [np.zeros((1, 7, 1), np.float32), np.zeros((1, 7, 1), np.float32)]
    else:  # every other element of a 1-D array, and a contiguous output
        arrays = [np.zeros(20, np.float32)[::2], np.zeros(10, np.float32)]
    shape, strides = nb._merge_axes(arrays[0].shape, [_strides(a) for a in arrays])
    assert len(shape) == expected_rank
    if not shape:
        return
    # Position p of the merged walk must address, in every array, the element of one logical
    # index: the output's addresses (unique) name it.
    original = [_addresses(a.shape, _strides(a)) for a in arrays]
    merged = [_addresses(shape, st) for st in strides]
    where = {int(addr): i for i, addr in enumerate(original[-1])}
    logical = np.array([where[int(addr)] for addr in merged[-1]])
    np.testing.assert_array_equal(np.sort(logical), np.arange(arrays[0].size))
    for o, m in zip(original, merged):
        np.testing.assert_array_equal(m, o[logical])


def _addresses(shape, strides):
    """Byte offset of every element, in C order of ``shape``."""
    index = np.indices(shape).reshape(len(shape), -1)
    return (np.asarray(strides, np.int64)[:, None] * index).sum(axis=0)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 1, 6), (2, 3, 4, 5), (5, 4, 3, 2), (2, 1, 3, 1, 2)])
@pytest.mark.parametrize("stride", [1, 2, 3, 7, 29, 96, 128, 1000])
def test_odometer_steps_are_the_stride_in_mixed_radix(shape, stride):
    steps = nb._odometer_steps(list(shape), stride)
    assert len(steps) == len(shape)
    value = 0
    for size, digit in zip(shape, steps):
        value = value * size + int(digit)
    assert value == stride
    assert all(0 <= int(d) < s for d, s in zip(steps[1:], shape[1:]))


class _Dim3:
    def __init__(self, x):
        self.x = x


def _run_generated(kernel, grid, block, *args):
    """Runs an N-D kernel's Python function for every (block, thread) of a 1-D launch."""
    fake = types.SimpleNamespace(blockIdx=_Dim3(0), threadIdx=_Dim3(0), gridDim=_Dim3(grid), blockDim=_Dim3(block))
    globs = dict(kernel.__globals__, cuda=fake)
    fn = types.FunctionType(kernel.__code__, globs, kernel.__name__)
    for b in range(grid):
        for t in range(block):
            fake.blockIdx.x, fake.threadIdx.x = b, t
            fn(*args)


def _plain_store(a, i, v):
    a[i] = v


@pytest.mark.parametrize("shape", [(1,), (13,), (3, 5), (5, 3), (4, 7, 3), (3, 1, 4, 5), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("grid,block", [(1, 1), (1, 4), (3, 5), (2, 32), (7, 3), (64, 32)])
def test_the_generated_odometer_visits_every_element_once(shape, grid, block):
    from gpuact.backends._numba import kernels as K

    nd = len(shape)
    kernel = K._nd_kernel(f"count_nd{nd}", nd, ["x", "y", "n", "g"], ["y[IDX] += 1", "x[IDX] = x[IDX] + 0"], {})
    kernel.__globals__["store"] = _plain_store
    x = np.zeros(shape, np.int64)
    y = np.zeros(shape, np.int64)
    n = x.size
    _run_generated(kernel, grid, block, x, y, np.int64(n), nb._odometer_steps(list(shape), grid * block))
    np.testing.assert_array_equal(y, np.ones(shape, np.int64))


@pytest.mark.parametrize("grid,block", [(1, 8), (3, 7), (5, 32)])
def test_the_generated_copy_walks_strided_views(grid, block):
    """copy_nd's own source over merged views of transposed, sliced, negative- and zero-stride
    inputs: y equals NumPy's copy."""
    from gpuact.backends._numba import kernels as K

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 8, 10)).astype(np.float32)
    for src in (base.transpose(2, 0, 1), base[::-1, 1::3, ::2], base[:, ::-2], np.broadcast_to(base[:1, :, :1], base.shape)):
        dst = np.zeros(src.shape, np.float64)
        (sv, dv), shape, _ = _merged_numpy_views([src, dst])
        nd = len(shape)
        kernel = K.copy_nd(nd, src.dtype, dst.dtype)
        kernel.__globals__["store"] = _plain_store
        n = math.prod(shape)
        _run_generated(kernel, grid, block, sv, dv, np.int64(n), nb._odometer_steps(shape, grid * block))
        np.testing.assert_array_equal(dst, src.astype(np.float64))


def _merged_numpy_views(arrays):
    shape, strides = nb._merge_axes(arrays[0].shape, [_strides(a) for a in arrays])
    if not shape:
        shape, strides = [1], [[a.itemsize] for a in arrays]
    views = [np.lib.stride_tricks.as_strided(a, shape, st) for a, st in zip(arrays, strides)]
    return views, shape, None
