"""gpuact.jax's dtypes: bfloat16 handed to gpuact as bfloat16 (its bits across the custom call),
computed in float32 and rounded once to nearest even, eagerly, under jit, grad and vmap; the
backward's result dtype ranks bfloat16 as float16."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact
from gpuact._contract import checks

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402  (a JAX dependency: NumPy's bfloat16)

import gpuact.jax as gj  # noqa: E402

BF16 = jnp.bfloat16


def _x(shape=(6, 8), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 2, shape).astype(np.float32)).astype(BF16)


def _rounded(a):
    """float32 → bfloat16, to nearest even, by ml_dtypes (not by XLA, which the code under test uses)."""
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize(
    "name,kwargs", [("gelu", {}), ("silu", {}), ("softmax", {"axis": 0}), ("glu", {}), ("elu", {"alpha": 0.3})]
)
def test_bfloat16_is_computed_in_float32_and_rounded_to_nearest_even(name, kwargs):
    x = _x()
    want = _rounded(getattr(gpuact, name)(np.asarray(x, np.float32), **kwargs))
    eager = getattr(gj, name)(x, **kwargs)
    jitted = jax.jit(lambda a: getattr(gj, name)(a, **kwargs))(x)
    for y in (eager, jitted):
        assert y.dtype == BF16
        np.testing.assert_array_equal(np.asarray(y).view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("via", ["buffer", "pure"])
def test_gpuact_gets_bfloat16_arrays_not_float32_copies(monkeypatch, via):
    # the callback views XLA's uint16 bits as bfloat16: gpuact reads x and writes out as bfloat16,
    # with no float32 copy made, in the custom call and (pure_callback) on the host
    seen = []
    real = gpuact.backward.silu

    def recording(dy, x, **kwargs):
        seen.append((dy.dtype, x.dtype, None if kwargs.get("out") is None else kwargs["out"].dtype))
        return real(dy, x, **kwargs)

    monkeypatch.setattr(gpuact.backward, "silu", recording)
    monkeypatch.setattr(gj, "_via", lambda: via)
    gj._function.cache_clear()
    gj._kernel.cache_clear()
    try:
        x = _x(seed=9)
        dx = jax.jit(jax.grad(lambda a: gj.silu(a).astype(jnp.float32).sum()))(x)
    finally:
        gj._function.cache_clear()
        gj._kernel.cache_clear()
    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert seen and seen[0][:2] == (bf16, bf16)
    assert seen[0][2] == (bf16 if via == "buffer" else None)
    assert dx.dtype == BF16
    x32 = np.asarray(x, np.float32)
    want = gpuact.backward.silu(np.ones_like(x, np.float32).astype(bf16), x32.astype(bf16))
    np.testing.assert_array_equal(np.asarray(dx).view(np.uint16), want.view(np.uint16))


def test_round_to_nearest_even_at_the_ties():
    # linear(x + bias) with a bfloat16 x and a float32 bias: float32 results halfway between two
    # bfloat16 values, where only round-to-nearest-even gives the even neighbour every time
    x = jnp.asarray(np.array([1.0, 1.0, -1.0, 2.0], np.float32)).astype(BF16)
    bias = jnp.asarray(np.array([2**-8, 3 * 2**-8, -(2**-8), 2**-7], np.float32))
    y = jax.jit(lambda a, c: gj.linear(a, bias=c))(x, bias)
    assert y.dtype == BF16
    np.testing.assert_array_equal(np.asarray(y, np.float32), [1.0, 1 + 2**-6, -1.0, 2.0])


def test_bfloat16_gradients_and_bias():
    x, b = _x(seed=2), _x((8,), seed=3)
    dx, db = jax.jit(jax.grad(lambda a, c: gj.gelu(a, bias=c).astype(jnp.float32).sum(), argnums=(0, 1)))(x, b)
    assert dx.dtype == BF16 and db.dtype == BF16
    x32, b32 = np.asarray(x, np.float32), np.asarray(b, np.float32)
    # dy is bfloat16 (the cotangent of a bfloat16 result), so dx is bfloat16 by the contract
    full = gpuact.backward.gelu(np.ones_like(x32), x32, bias=b32)
    np.testing.assert_array_equal(np.asarray(dx).view(np.uint16), _rounded(full).view(np.uint16))
    # the bias's gradient: the bfloat16 dx summed in float32, then rounded once
    np.testing.assert_array_equal(
        np.asarray(db).view(np.uint16), _rounded(_rounded(full).astype(np.float32).sum(0)).view(np.uint16)
    )
    # a float32 bias on a bfloat16 x keeps its dtype and gets its gradient
    g = jax.grad(lambda c: gj.silu(x, bias=c).astype(jnp.float32).sum())(jnp.asarray(b32))
    assert g.dtype == jnp.float32


def test_bfloat16_under_vmap():
    xs, b = _x((3, 4, 8), seed=4), _x((8,), seed=5)
    y = jax.vmap(lambda a: gj.softmax(a, bias=b))(xs)
    assert y.dtype == BF16
    want = _rounded(gpuact.softmax(np.asarray(xs, np.float32), bias=np.asarray(b, np.float32)))
    np.testing.assert_array_equal(np.asarray(y).view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize(
    "dy,x,want",
    [
        (BF16, BF16, BF16),
        (jnp.float32, BF16, jnp.float32),
        (BF16, jnp.float32, jnp.float32),
        (BF16, jnp.float16, jnp.float32),
        (jnp.float16, jnp.float16, jnp.float16),
        (jnp.float32, jnp.float16, jnp.float32),
        (BF16, jnp.int32, jnp.float32),
    ],
)
def test_the_backward_result_dtype_ranks_bfloat16_as_float16(dy, x, want):
    # gpuact.jax declares its results by the contract's own rule (bfloat16 is one of its dtypes)
    assert checks.grad_dtype(np.dtype(dy), np.dtype(x)) == np.dtype(want)


def test_the_backward_kernel_gives_float32_for_float32_dy_and_bfloat16_x():
    # the kernel call itself (the custom_vjp casts dx to x's dtype afterwards, as JAX requires)
    key = gj._checked("tanh", {}, jnp.ones(3))
    kernel = gj._kernel("tanh", key, True, False, gj._via())
    x = jnp.asarray(np.array([0.5, -1.0, 2.0], np.float32)).astype(BF16)
    dy = jnp.asarray(np.array([1 / 3, 1.0, 0.25], np.float32))
    dx = kernel(dy, x)
    assert dx.dtype == jnp.float32
    want = gpuact.backward.tanh(np.asarray(dy), np.asarray(x, np.float32))
    np.testing.assert_array_equal(np.asarray(dx), want)


def test_float16_stays_float16():
    x = _x().astype(jnp.float16)
    y = jax.jit(lambda a: gj.gelu(a))(x)
    assert y.dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(y), gpuact.gelu(np.asarray(x)))
