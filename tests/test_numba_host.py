"""Host-side logic of the Numba backend, checked without a GPU or the CUDA simulator: the launch
plans of softmax and sparsemax (``gpuact.backends._numba.plan``, pure Python), the axis merging
and odometer steps of the N-D kernels, and the launch configuration's warnings.

The N-D kernels are also run here as plain Python: ``_nd_kernel`` generates Python source, so
the very function Numba compiles can be called with NumPy arrays and a stand-in for ``cuda``
(block and thread indices), once per thread of a grid, to check that the odometer visits every
element exactly once.
"""

from __future__ import annotations

import itertools
import math
import os
import types
import warnings

import numpy as np
import pytest

from gpuact.backends._numba import plan as P

H100_SMS = 132
SM_COUNTS = (H100_SMS, 108, 114, 144, 170)  # H100 SXM/H200, A100, H100 PCIe, GH200 variants, B200-ish


def _shapes_of_at_least_2_20():
    """(outer, L, inner) triples of >= 2**20 elements: long rows, many short rows, a few long
    columns, many short columns, and everything between, with sizes that are not powers of two."""
    totals = [2**20, 2**20 + 7, 3 * 2**19 + 1, 10_000_000, 2**24, 2**26 + 3]
    sides = [1, 2, 3, 5, 7, 16, 31, 32, 33, 100, 127, 255, 256, 257, 1000, 4096, 10_000, 65_537, 2**20]
    shapes = set()
    for n in totals:
        for outer, inner in itertools.product(sides, sides):
            length = -(-n // (outer * inner))
            if length >= 1 and outer * length * inner >= 2**20:
                shapes.add((outer, length, inner))
    shapes.update(
        {
            (1, 10_000_000, 1),
            (16, 256_000, 1),
            (1, 2**22, 2),
            (4096, 1024, 1),
            (2**20, 1, 1),
            (1, 1, 2**20),
            (1, 2, 2**19),
            (2**19, 2, 1),
            (2**25, 2, 1),
            (1, 2**25, 2),
            (2, 2**19, 1),
        }
    )
    return sorted(shapes)


SHAPES = _shapes_of_at_least_2_20()


def test_the_sweep_is_broad():
    assert len(SHAPES) > 1500
    assert any(p[2] == 1 for p in SHAPES) and any(p[2] > 1 for p in SHAPES)


@pytest.mark.parametrize("sms", SM_COUNTS)
def test_softmax_plan_gives_every_sm_two_blocks_for_large_inputs(sms):
    problems = []
    for outer, length, inner in SHAPES:
        plan = P.softmax_plan(outer, length, inner, sms)
        P.check_limits(plan)
        cols = outer * inner
        assert plan.tx * plan.ty == P.BLOCK
        assert plan.tiles * plan.tx >= cols > (plan.tiles - 1) * plan.tx
        if plan.split:
            # segments cover L, none empty; one (max, sum) pair per column and segment
            assert plan.segments * plan.seg_len >= length > (plan.segments - 1) * plan.seg_len
            assert plan.grid == plan.tiles * plan.segments
            assert cols * plan.segments <= 64 * P.BLOCK * sms, (outer, length, inner, plan)
        else:
            assert plan.seg_len == length
        if plan.grid < P.MIN_BLOCKS_PER_SM * sms:
            problems.append(((outer, length, inner), plan))
    assert not problems, f"{len(problems)} shapes get fewer than {P.MIN_BLOCKS_PER_SM} blocks per SM: {problems[:5]}"


def test_softmax_plan_of_the_named_shapes():
    """The block counts quoted for an H100/H200 (132 SMs)."""
    got = {
        s: P.softmax_plan(*s, H100_SMS) for s in [(1, 10_000_000, 1), (16, 256_000, 1), (1, 2**22, 2), (4096, 1024, 1)]
    }
    assert got[(1, 10_000_000, 1)][:6] == (1, 256, 1, 528, 18940, 528)  # tx, ty, tiles, segments, seg_len, grid
    assert got[(16, 256_000, 1)].grid == 528 and got[(16, 256_000, 1)].segments == 33
    assert got[(1, 2**22, 2)].block == (2, 128) and got[(1, 2**22, 2)].grid == 528
    assert not got[(4096, 1024, 1)].split and got[(4096, 1024, 1)].grid == 4096
    assert got[(4096, 1024, 1)].block == (256, 1)  # rows: the threads of a row vary fastest


@pytest.mark.parametrize("shape", [(1, 1000, 1), (8, 3000, 1), (1, 100, 2), (3, 7, 5), (1, 1, 1), (5, 1, 1)])
def test_small_softmax_is_one_kernel(shape):
    plan = P.softmax_plan(*shape, H100_SMS)
    assert not plan.split
    P.check_limits(plan)


@pytest.mark.parametrize(
    "length,inner,expected",
    [
        (10**6, 1, (1, 256)),
        (64, 1, (4, 64)),
        (5, 1, (32, 8)),
        (1, 1, (256, 1)),
        (10**6, 2, (2, 128)),
        (10**6, 3, (4, 64)),
        (10**6, 1000, (32, 8)),
        (2, 1000, (128, 2)),
    ],
)
def test_tile_shape(length, inner, expected):
    assert P.tile_shape(length, inner) == expected


def test_sparsemax_plan_caches_slices_that_fit():
    plan, cached = P.sparsemax_plan(64, 50_000, 1, H100_SMS, 4)
    assert not cached and plan.tiles == 64 and plan.grid == 64
    plan, cached = P.sparsemax_plan(64, 8192, 1, H100_SMS, 4)
    assert cached and plan.block == (256, 1)
    plan, cached = P.sparsemax_plan(3, 100, 1000, H100_SMS, 8)
    assert plan.tx == 32 and cached  # 32 columns x 100 x 8 bytes = 25.6 KB
    for s in SHAPES[::7]:
        P.check_limits(P.sparsemax_plan(*s, H100_SMS, 4)[0])


@pytest.mark.parametrize("sms", SM_COUNTS)
def test_sparsemax_split_plan_gives_every_sm_two_blocks_for_large_inputs(sms):
    """Issue 21: the forward splits a long slice over blocks exactly where softmax does (the same
    tiles, segments and grid), so every input of >= 2**20 elements gets two blocks an SM; without
    ``split`` (the backward) the plan is a block per tile, as before."""
    problems = []
    for outer, length, inner in SHAPES:
        plan, cached = P.sparsemax_plan(outer, length, inner, sms, 4, split=True)
        P.check_limits(plan)
        softmax = P.softmax_plan(outer, length, inner, sms)
        if softmax.split:
            assert plan == softmax and not cached
            floats, ints = K.sparsemax_split_sizes(outer * inner, plan.segments)
            assert floats == outer * inner * (3 * plan.segments + 4) and ints == outer * inner * (2 * plan.segments + 8)
        else:
            assert plan == P.sparsemax_plan(outer, length, inner, sms, 4)[0]
        if plan.grid < P.MIN_BLOCKS_PER_SM * sms:
            problems.append(((outer, length, inner), plan))
        assert not P.sparsemax_plan(outer, length, inner, sms, 4)[0].split
    assert not problems, f"{len(problems)} shapes get fewer than {P.MIN_BLOCKS_PER_SM} blocks per SM: {problems[:5]}"


def test_sparsemax_split_plan_of_the_named_shapes():
    """One long row on an H100 (132 SMs): 528 blocks of 256 threads, not one; small or many slices
    stay one kernel."""
    plan, _ = P.sparsemax_plan(1, 10_000_000, 1, H100_SMS, 4, split=True)
    assert plan.split and plan[:6] == (1, 256, 1, 528, 18940, 528)
    plan, _ = P.sparsemax_plan(1, 100_000, 4, H100_SMS, 4, split=True)  # below 2**20: 32 elements a thread
    assert plan.split and plan.grid == 49 and plan.block == (4, 64)
    for shape in [(1, 1000, 1), (8, 3000, 1), (4096, 1024, 1), (3, 7, 5)]:
        assert not P.sparsemax_plan(*shape, H100_SMS, 4, split=True)[0].split


# ---------------------------------------------------------------------------------------------
# the softmax bias: its addressing from (column, element)

BIAS_LAYOUTS = [
    # (x shape, reduced axes, bias shape, fits the compact form)
    ((4, 9), (1,), (9,), True),
    ((4, 9), (1,), (4, 1), True),
    ((4, 9), (0,), (9,), True),
    ((7,), (0,), (), True),
    ((2, 3, 4, 5), (3,), (2, 1, 4, 5), True),
    ((2, 3, 4, 5), (3,), (1, 3, 4, 5), True),
    ((2, 3, 4, 5), (3,), (2, 1, 1, 5), True),
    ((2, 3, 4, 5), (3,), (2, 3, 4, 1), True),
    ((2, 3, 4, 5), (1,), (2, 3, 4, 5), True),
    ((2, 3, 4, 5), (0, 2), (3, 1, 1), True),
    ((2, 3, 4, 5), (2, 3), (4, 5), True),
    ((2, 3, 4, 5), (2, 3), (1, 3, 1, 5), False),
    ((2, 3, 2, 3, 2), (4,), (2, 1, 2, 1, 2), False),
    ((2, 3, 2, 3, 2), (0,), (1, 3, 1, 3, 1), False),
    ((5, 1, 3), (2,), (5, 1, 1), True),
    ((2, 3, 4, 5), (1, 3), (2, 1, 4, 1), True),
]


def _bias_strides(shape, bias_shape):
    bshape = (1,) * (len(shape) - len(bias_shape)) + tuple(bias_shape)
    return [t if b == n else 0 for t, b, n in zip(P.contiguous_strides(bshape), bshape, shape)]


@pytest.mark.parametrize(
    "shape,axes,bias_shape,fits", BIAS_LAYOUTS, ids=[f"{s}-{a}-{b}" for s, a, b, _ in BIAS_LAYOUTS]
)
def test_softmax_bias_layout_addresses_every_element(shape, axes, bias_shape, fits):
    """For every (column, element) of the softmax layout, ``bias_column`` (the device function's
    Python source) and ``tl`` address the bias element NumPy's broadcasting gives."""
    bz = P.softmax_bias_layout(shape, _bias_strides(shape, bias_shape), axes)
    assert (bz is not None) == fits
    if bz is None:
        return
    kernels = pytest.importorskip(
        "gpuact.backends._numba.kernels", reason="numba is not installed", exc_type=ImportError
    )
    bias = np.arange(math.prod(bias_shape), dtype=np.int64).reshape(bias_shape)
    rest = [a for a in range(len(shape)) if a not in axes]
    # the softmax layout: columns (the other axes, in order) by elements (the reduced axes)
    want = np.broadcast_to(bias, shape).transpose(rest + list(axes)).reshape(-1, math.prod(shape[a] for a in axes))
    cols, length = want.shape
    got = np.empty_like(want)
    for c in range(cols):
        base = kernels.bias_column.py_func(c, bz)
        got[c] = bias.reshape(-1)[base + np.arange(length) * bz[5]]
    np.testing.assert_array_equal(got, want)


def test_a_dense_bias_needs_no_division():
    """(units,) along the softmax axis: one run of stride 0, n1 = n2 = 1 (bias_column divides
    nothing)."""
    bz = P.softmax_bias_layout((64, 10, 32), _bias_strides((64, 10, 32), (32,)), (2,))
    assert bz == (1, 1, 0, 0, 0, 1)
    # a key-padding bias (B, 1, 1, K) on (B, H, Q, K) scores: one division a column
    assert P.softmax_bias_layout((8, 4, 16, 16), _bias_strides((8, 4, 16, 16), (8, 1, 1, 16)), (3,))[:2] == (64, 1)


def test_contiguous_strides():
    assert P.contiguous_strides((2, 3, 4)) == [12, 4, 1]
    assert P.contiguous_strides((2, 1, 4)) == [4, 0, 1]
    assert P.contiguous_strides(()) == []


# ---------------------------------------------------------------------------------------------
# N-D kernels: merged axes and the odometer

nb = pytest.importorskip("gpuact.backends.numba_backend", reason="numba is not installed", exc_type=ImportError)
K = pytest.importorskip("gpuact.backends._numba.kernels", reason="numba is not installed", exc_type=ImportError)


def _strides(a):
    return tuple(a.strides)


@pytest.mark.parametrize(
    "case,expected_rank",
    [
        ("c", 1),
        ("f", 1),
        ("glu_halves", 2),
        ("glu_halves_outer1", 1),
        ("transposed_in", 3),
        ("broadcast_alpha", 1),
        ("broadcast_alpha_rows", 2),
        ("broadcast_alpha_channels", 3),
        ("one_element", 0),
        ("size1_axes", 1),
        ("every_other", 1),
    ],
)
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
    kernel = K._nd_kernel(f"count_nd{nd}", nd, ["y", "n", "g"], ["y[IDX] += 1"], {})
    y = np.zeros(shape, np.int64)  # NumPy indexing: an out-of-range digit raises
    _run_generated(kernel, grid, block, y, np.int64(y.size), nb._odometer_steps(list(shape), grid * block))
    np.testing.assert_array_equal(y, np.ones(shape, np.int64))


@pytest.mark.parametrize("grid,block", [(1, 8), (3, 7), (5, 32)])
def test_the_generated_copy_walks_strided_views(grid, block):
    """copy_nd's own source over merged views of transposed, sliced, negative- and zero-stride
    inputs: y equals NumPy's copy."""
    from gpuact.backends._numba import kernels as K

    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 8, 10)).astype(np.float32)
    sources = (
        base.transpose(2, 0, 1),
        base[::-1, 1::3, ::2],
        base[:, ::-2],
        np.broadcast_to(base[:1, :, :1], base.shape),
    )
    for src in sources:
        dst = np.zeros(src.shape, np.float64)
        (sv, dv), shape = _merged_numpy_views([src, dst])
        nd = len(shape)
        kernel = K.copy_nd(nd, src.dtype, dst.dtype)
        kernel.__globals__["store"] = _plain_store  # the kernel's own namespace (exec'd per call)
        n = math.prod(shape)
        _run_generated(kernel, grid, block, sv, dv, np.int64(n), nb._odometer_steps(shape, grid * block))
        np.testing.assert_array_equal(dst, src.astype(np.float64))


def _merged_numpy_views(arrays):
    shape, strides = nb._merge_axes(arrays[0].shape, [_strides(a) for a in arrays])
    if not shape:
        shape, strides = [1], [[a.itemsize] for a in arrays]
    views = [np.lib.stride_tricks.as_strided(a, shape, st) for a, st in zip(arrays, strides)]
    return views, shape


# ---------------------------------------------------------------------------------------------
# warnings


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the simulator's launches never warn")
def test_launch_configuration_does_not_warn_but_user_launches_still_do():
    from numba import cuda

    def noop(a):
        pass

    kern = cuda.jit(noop)  # compiled lazily: configuring a launch needs no GPU
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = nb._launch(kern, 10, 0, blocks=1)  # (blocks given: sizing a grid asks the GPU its SMs)
        assert cfg is nb._launch(kern, 10, 0, blocks=1)  # cached
        nb._launch(kern, 0, 0, threads=(32, 8), blocks=3)
    assert warnings.filters == filters
    category = nb._PERFORMANCE_WARNINGS[0]
    with pytest.warns(category, match="Grid size 2"):
        kern[2, 32, 0]  # the user's own small grid still warns


# ---------------------------------------------------------------------------------------------
# two GPUs: streams and events made on the input's device


class _TwoGPUs:
    """A stand-in for ``numba.cuda`` on two devices, as the driver sees them: a context current
    per thread (``gpus[i]`` makes device i's current), ``as_cuda_array`` wrapping a pointer in the
    current context (numba-cuda's from_cuda_array_interface does), ``external_stream`` wrapping a
    handle that belongs to the device that made it, ``event`` made in the current context, and
    ``cuEventRecord`` failing for an event and a stream of different devices."""

    def __init__(self):
        self.current = 0
        self.handle_device = {0x100: 0, 0x101: 1, 0x102: 1, 0x103: 1}  # stream handle -> its device
        self.pointer_device = {0x7000: 1, 0x8000: 1}  # data pointer -> its device
        self.log: list = []
        gpus = self

        class Context:
            def __init__(self, device):
                self.device = types.SimpleNamespace(id=device)

        class Array:
            def __init__(self, desc):
                self.gpu_data = types.SimpleNamespace(context=Context(gpus.current))
                self.shape, self.stream = tuple(desc["shape"]), 0
                self.dtype = np.dtype(desc["typestr"])

        class Stream:
            def __init__(self, handle):
                self.handle, self.device = handle, gpus.handle_device[handle]

        class Event:
            def __init__(self):
                self.device = gpus.current

            def record(self, stream):
                gpus.log.append(("record", stream.handle, self.device))
                if stream.device != self.device:
                    raise RuntimeError("CUDA_ERROR_INVALID_HANDLE: an event recorded on another device's stream")

            def wait(self, stream):
                gpus.log.append(("wait", getattr(stream, "handle", stream), self.device))

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                self.previous, gpus.current = gpus.current, self.index

            def __exit__(self, *exc):
                gpus.current = self.previous

        self.Array, self.Stream, self.Event, self.gpus = Array, Stream, Event, [Device(0), Device(1)]

    def get_current_device(self):
        return types.SimpleNamespace(id=self.current)

    def as_cuda_array(self, view, sync=True):
        return self.Array(view.__cuda_array_interface__)

    def external_stream(self, handle):
        return self.Stream(handle)

    def event(self, timing=True):
        return self.Event()


class _Foreign:
    def __init__(self, pointer, stream):
        self.__cuda_array_interface__ = {
            "shape": (4,),
            "typestr": "<f4",
            "data": (pointer, False),
            "version": 3,
            "stream": stream,
        }


class _ProtocolStream:
    def __init__(self, handle):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the simulator has one device")
@pytest.mark.parametrize("stream", [None, 0x103], ids=["x's stream", "stream=__cuda_stream__"])
def test_streams_and_events_are_made_on_the_input_device(monkeypatch, stream):
    """Issue 21: with x on device 1 while device 0 is current, the Numba path wraps x's producer
    stream (and ``stream=``) and makes its events with device 1 current, before ``scope()``: an
    event made on device 0 and recorded on a device-1 stream fails (CUDA_ERROR_INVALID_HANDLE),
    and a foreign x wrapped in device 0's context would run its launches on device 0."""
    from collections import OrderedDict

    gpus = _TwoGPUs()
    monkeypatch.setattr(nb, "cuda", gpus)
    monkeypatch.setattr(nb, "_external_streams", OrderedDict())
    monkeypatch.setattr(nb, "_pointer_device", lambda ptr: gpus.pointer_device.get(ptr), raising=False)
    if hasattr(nb, "_call"):
        monkeypatch.setattr(nb._call, "events", {}, raising=False)  # no event of a real device
    x, dy = _Foreign(0x7000, 0x101), _Foreign(0x8000, 0x102)
    xa, launch, foreign = nb.accept(x, None if stream is None else _ProtocolStream(stream))
    assert foreign is x and nb._device_id(xa) == 1 and gpus.current == 0
    dya = nb.accept_operand(dy, xa, True, "dy")  # before the call's scope, as gpuact._core does
    assert nb._device_id(dya) == 1 and gpus.current == 0
    with nb.scope(xa, launch):
        assert gpus.current == 1
    launch_handle = launch.handle
    assert launch_handle == (0x101 if stream is None else stream)
    waited = {h for kind, h, _ in gpus.log if kind == "record"}
    assert waited == ({0x102} if stream is None else {0x101, 0x102}), gpus.log
    assert all(device == 1 for _, _, device in gpus.log), gpus.log
    assert [h for kind, h, _ in gpus.log if kind == "wait"] == [launch_handle] * len(waited)
