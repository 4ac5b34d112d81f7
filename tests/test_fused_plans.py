"""The fused kernels' launch plans (gpuact._kernel_sources.softmax_plan / sparsemax_plan), pure
Python: every shape and axis of at least 2**20 elements gets at least 2 blocks an SM, within the
grid and shared-memory limits, with integer arguments of exactly the kernels' C widths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpuact import _kernel_sources as ks

H100 = {"sm_count": 132, "max_blocks": 132 * 32, "smem_optin": 227 * 1024}
SIZES = [1, 2, 3, 5, 31, 32, 33, 100, 263, 264, 1000, 1024, 1025, 4000, 5000, 2**14, 70000, 2**20, 2**22, 10_000_000]


def _shapes(min_elements=2**20, max_elements=2**34):
    for outer, length, inner in itertools.product(SIZES, repeat=3):
        if min_elements <= outer * length * inner <= max_elements:
            yield outer, length, inner


def _blocks(launch):
    return int(np.prod(launch.grid))


def _check_limits(plan, gpu):
    for launch in plan.launches:
        assert 1 <= launch.grid[0] <= ks.GRID_X_MAX, launch
        assert all(1 <= g <= ks.GRID_YZ_MAX for g in launch.grid[1:]), launch
        assert launch.block in (32, 64, 128, ks.TILE_THREADS) and launch.block % 32 == 0
        assert launch.smem + launch.static_smem <= gpu["smem_optin"], launch
        assert launch.smem <= ks.SMEM_CACHE_LIMIT
        if "_cols_" not in launch.name:  # (the column kernels take one block per tile of columns)
            assert _blocks(launch) <= gpu["max_blocks"], launch
        spec = ks.fused_kernels()[launch.name]
        ints = [t for t, _ in spec.params if not t.endswith("*")]
        assert [type(v) for v in launch.ints] == [{"int": np.int32, "long long": np.int64}[t] for t in ints]
        assert all(np.iinfo(type(v)).min <= int(v) <= np.iinfo(type(v)).max for v in launch.ints)
        assert launch.pointers == tuple(n for t, n in spec.params if t.endswith("*"))


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_softmax_fills_the_gpu(tag):
    """>= 2 blocks an SM for every (outer, L, inner) of >= 2**20 elements: last and non-last
    axes, short and long rows, few and many rows."""
    count = 0
    for oli in _shapes():
        for log in (False, True):
            plan = ks.softmax_plan(*oli, tag, log=log, **H100)
            _check_limits(plan, H100)
            blocks = min(_blocks(launch) for launch in plan.launches)
            assert blocks >= 2 * H100["sm_count"], (oli, plan)
            if len(plan.launches) == 2:
                args = plan.launches[0].args()
                assert args == {k: v for k, v in plan.launches[1].args().items() if k != "log_mode"}
                outer, length, inner = oli
                assert args["segs"] * args["seg_len"] >= length > (args["segs"] - 1) * args["seg_len"]
                assert blocks == outer * args["tiles"] * args["segs"]
                assert plan.workspace == outer * args["segs"] * inner * 2 * ks.COMPUTE_DTYPE[tag].itemsize
            count += 1
    assert count > 500


def test_the_brief_shapes():
    expect = {(1, 10_000_000, 1): 1056, (16, 256000, 1): 1008, (1, 2**22, 2): 1024, (4096, 1024, 1): 1024}
    for oli, blocks in expect.items():
        plan = ks.softmax_plan(*oli, "f32", log=False, **H100)
        assert [_blocks(launch) for launch in plan.launches] == [blocks] * len(plan.launches), (oli, plan)


def test_small_inputs_take_one_launch():
    for oli in [(1, 5000, 1), (1, 60000, 1), (3, 1000, 7), (1, 1024, 1)]:
        assert len(ks.softmax_plan(*oli, "f32", log=False, **H100).launches) == 1


@pytest.mark.parametrize("tag", ["f32", "f16", "f64"])
def test_sparsemax_plans_stay_within_the_limits(tag):
    for oli in _shapes(min_elements=1, max_elements=2**34):
        _check_limits(ks.sparsemax_plan(*oli, tag, **H100), H100)


def test_plans_are_memoised_and_immutable():
    ks.softmax_plan.cache_clear()
    a = ks.softmax_plan(16, 256000, 1, "f32", log=False, **H100)
    b = ks.softmax_plan(16, 256000, 1, "f32", log=False, **H100)
    assert a is b and ks.softmax_plan.cache_info().hits == 1
    assert isinstance(a.launches, tuple) and isinstance(a.launches[0].ints, tuple)
    c = ks.sparsemax_plan(16, 2560, 1, "f32", **H100)
    assert c is ks.sparsemax_plan(16, 2560, 1, "f32", **H100)


def test_small_shared_memory_turns_the_cache_off():
    plan = ks.softmax_plan(1000, 5000, 1, "f32", log=False, sm_count=132, max_blocks=4224, smem_optin=16 * 1024)
    assert plan.launches[0].args()["cache"] == 0 and plan.launches[0].smem == 0
    plan = ks.sparsemax_plan(1000, 5000, 1, "f64", sm_count=132, max_blocks=4224, smem_optin=48 * 1024)
    assert plan.launches[0].args()["cache"] == 1 and plan.launches[0].smem == 5000 * 8


def test_arguments_out_of_range_are_refused():
    with pytest.raises(ValueError):
        ks.sparsemax_plan(1, 2**31, 1, "f32", **H100)
