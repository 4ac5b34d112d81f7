"""The gated units, glu and its GLU variants swiglu, geglu and reglu, forward and backward, on every
backend (the ``be`` fixture), against float64 references written from their definitions
(tests/reference.py GATED), against central differences, and against the compositions PyTorch
and JAX users write (``silu(a) * b``).

Tolerances: the contract's (float16 1e-3, float32 1e-5 / 1e-6, float64 1e-12 / 1e-14), checked
against the float64 reference rounded to the dtype; the finite-difference checks run in float64
with step 1e-6 |x| (truncation and rounding both near 1e-10) away from relu's kink at 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact._contract.ops import GATES
from tests import reference
from tests.reference import assert_close

FLOATS = [np.float16, np.float32, np.float64]
# (public name, kwargs, the gate's name in the op table)
UNITS = [
    ("glu", {}, "glu"),
    ("swiglu", {}, "swiglu"),
    ("geglu", {}, "geglu"),
    ("geglu", {"approximate": True}, "geglu_tanh"),
    ("reglu", {}, "reglu"),
]
IDS = [gate for _, _, gate in UNITS]
SHAPES = [((8,), -1), ((4, 6), 0), ((3, 4, 10), -1), ((2, 6, 3), 1)]


def _inputs(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, shape).astype(dtype)


def test_every_gate_is_tested():
    assert {gate for _, _, gate in UNITS} == set(GATES) == set(reference.GATED)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_forward_against_the_reference(be, name, kwargs, gate, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=20)
    y = getattr(gpuact, name)(be.asarray(x), axis=axis, **kwargs)
    expected = reference.gated(gate, x, axis)
    assert isinstance(y, be.array_type()) and y.shape == expected.shape and y.dtype == dtype
    assert_close(be.to_numpy(y), expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_backward_against_the_reference(be, name, kwargs, gate, shape, axis, dtype):
    x = _inputs(shape, dtype, seed=21)
    half = reference.gated(gate, x, axis).shape
    dy = np.random.default_rng(22).uniform(-2, 2, half).astype(dtype)
    dx = getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), axis=axis, **kwargs)
    assert isinstance(dx, be.array_type()) and dx.shape == x.shape and dx.dtype == dtype
    assert_close(be.to_numpy(dx), reference.gated_grad(gate, dy, x, axis), dtype)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_backward_against_central_differences(be, name, kwargs, gate):
    rng = np.random.default_rng(23)
    x = rng.uniform(-4, 4, (3, 8))
    x[np.abs(x) < 1e-3] = 0.5  # away from reglu's kink
    dy = rng.normal(0, 1, (3, 4))
    dx = be.to_numpy(getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), **kwargs))

    def loss(v):
        return float((be.to_numpy(getattr(gpuact, name)(be.asarray(v), **kwargs)) * dy).sum())

    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        h = 1e-6 * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss(up) - loss(down)) / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_nan_and_infinities_follow_the_product(be, name, kwargs, gate):
    # (gate, value) pairs, laid out in the unit's halves; op(+-inf) is the op's limit, and the
    # product is IEEE's: 0 * inf is NaN
    pairs = [(math.nan, 1.0), (1.0, math.nan), (math.inf, 2.0), (-math.inf, 2.0), (0.5, math.inf), (-3.0, -math.inf)]
    g = np.array([p[0] for p in pairs], np.float32)
    v = np.array([p[1] for p in pairs], np.float32)
    first = GATES[gate].gate_half
    x = np.concatenate([g, v] if first == 0 else [v, g])
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(x), **kwargs))
    expected = reference.gated(gate, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert_close(got, expected, np.float32)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_bad_calls_raise(be, name, kwargs, gate):
    # the messages name the function called, not the glu they share
    fn = getattr(gpuact, name)
    with pytest.raises(ValueError, match=f"^{name} splits axis -1 in two halves; its length 5 is odd$"):
        fn(be.asarray(np.ones((2, 5), np.float32)), **kwargs)
    with pytest.raises(ValueError, match=rf"^dy has shape \(4,\); {name}'s output, and so dy, has shape \(2,\)$"):
        getattr(gpuact.backward, name)(be.asarray(np.ones(4, np.float32)), be.asarray(np.ones(4, np.float32)), **kwargs)


@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_odd_axis_messages_name_the_function_on_every_kind_of_array(name, kwargs, gate):
    x = np.ones((2, 5), np.float32)
    message = f"{name} splits axis -1 in two halves; its length 5 is odd"
    kinds = [np.ma.masked_array(x, mask=x > 2)]
    da = pytest.importorskip("dask.array")
    kinds.append(da.from_array(x, chunks=(1, 5)))
    for arr in kinds:
        with pytest.raises(ValueError, match=f"^{message}$"):
            getattr(gpuact, name)(arr, **kwargs)


# ---- the two-tensor form: gate(a) * b ---------------------------------------------------------------

PAIR_UNITS = [unit for unit in UNITS if unit[0] != "glu"]
PAIR_IDS = [gate for _, _, gate in PAIR_UNITS]
PAIR_SHAPES = [(), (0, 3), (7,), (4, 6), (3, 4, 5)]


def _pair(shape, dtype, seed):
    """(a, b) and the x = [a, b] along a new leading axis that the halves form (and its reference)
    reads, so that the two forms are checked against one reference."""
    a, b = _inputs(shape, dtype, seed), _inputs(shape, dtype, seed + 1)
    return a, b, np.stack([a, b])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", PAIR_SHAPES, ids=str)
@pytest.mark.parametrize("name,kwargs,gate", PAIR_UNITS, ids=PAIR_IDS)
def test_two_tensor_forward_against_the_reference(be, name, kwargs, gate, shape, dtype):
    a, b, x = _pair(shape, dtype, seed=30)
    y = getattr(gpuact, name)(be.asarray(a), be.asarray(b), **kwargs)
    expected = reference.gated(gate, x, 0).reshape(shape)
    assert isinstance(y, be.array_type()) and y.shape == shape and y.dtype == dtype
    assert_close(be.to_numpy(y), expected, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", PAIR_SHAPES, ids=str)
@pytest.mark.parametrize("name,kwargs,gate", PAIR_UNITS, ids=PAIR_IDS)
def test_two_tensor_backward_against_the_reference(be, name, kwargs, gate, shape, dtype):
    a, b, x = _pair(shape, dtype, seed=31)
    dy = np.random.default_rng(32).uniform(-2, 2, shape).astype(dtype)
    da, db = getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(a), be.asarray(b), **kwargs)
    expected = reference.gated_grad(gate, dy[None], x, 0)
    for got, want in zip((da, db), expected):
        assert isinstance(got, be.array_type()) and got.shape == shape and got.dtype == dtype
        assert_close(be.to_numpy(got), want, dtype)


@pytest.mark.parametrize("name,kwargs,gate", PAIR_UNITS, ids=PAIR_IDS)
def test_two_tensor_form_is_the_halves_form(be, name, kwargs, gate):
    # strided operands (every other column), out= and its pair in the backward: the same values,
    # bit for bit, as the halves form computes from x = [a, b]
    wide = _inputs((5, 12), np.float32, seed=33)
    a, b = be.asarray(wide)[:, ::2], be.asarray(wide)[:, 1::2]
    an, bn = wide[:, ::2], wide[:, 1::2]
    x = np.concatenate([an, bn], axis=1)
    forward, backward = getattr(gpuact, name), getattr(gpuact.backward, name)
    out = be.asarray(np.zeros((5, 6), np.float32))
    assert forward(a, b, out=out, **kwargs) is out
    np.testing.assert_array_equal(be.to_numpy(out), be.to_numpy(forward(be.asarray(x), **kwargs)))
    dy = _inputs((5, 6), np.float32, seed=34)
    outs = (be.asarray(np.zeros((5, 6), np.float32)), be.asarray(np.zeros((5, 6), np.float32)))
    result = backward(be.asarray(dy), a, b, out=outs, **kwargs)
    assert result[0] is outs[0] and result[1] is outs[1]
    dx = be.to_numpy(backward(be.asarray(dy), be.asarray(x), **kwargs))
    np.testing.assert_array_equal(np.concatenate([be.to_numpy(o) for o in outs], axis=1), dx)


@pytest.mark.parametrize("name,kwargs,gate", PAIR_UNITS, ids=PAIR_IDS)
def test_two_tensor_out_may_be_an_operand(be, name, kwargs, gate):
    a, b, x = _pair((9,), np.float32, seed=35)
    expected = be.to_numpy(getattr(gpuact, name)(be.asarray(a), be.asarray(b), **kwargs))
    for which in (0, 1):
        operands = [be.asarray(a.copy()), be.asarray(b.copy())]  # asarray may be a itself
        assert getattr(gpuact, name)(*operands, out=operands[which], **kwargs) is operands[which]
        np.testing.assert_array_equal(be.to_numpy(operands[which]), expected)
    # the backward's outs may be its inputs too: they are copied before they are overwritten
    dy = _inputs((9,), np.float32, seed=36)
    grad = getattr(gpuact.backward, name)
    want = [be.to_numpy(r) for r in grad(be.asarray(dy), be.asarray(a), be.asarray(b), **kwargs)]
    da_b = [be.asarray(dy), be.asarray(a.copy()), be.asarray(b.copy())]
    got = grad(*da_b, out=(da_b[2], da_b[1]), **kwargs)
    for r, w in zip(got, want):
        np.testing.assert_array_equal(be.to_numpy(r), w)


@pytest.mark.parametrize("name,kwargs,gate", PAIR_UNITS, ids=PAIR_IDS)
def test_two_tensor_nan_and_infinities_follow_the_product(be, name, kwargs, gate):
    pairs = [(math.nan, 1.0), (1.0, math.nan), (math.inf, 2.0), (-math.inf, 2.0), (0.5, math.inf), (-3.0, -math.inf)]
    a = np.array([p[0] for p in pairs], np.float32)
    b = np.array([p[1] for p in pairs], np.float32)
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(a), be.asarray(b), **kwargs))
    expected = reference.gated(gate, np.stack([a, b]), 0)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert_close(got, expected, np.float32)


@pytest.mark.parametrize("name", ["swiglu", "geglu", "reglu"])
def test_two_tensor_bad_calls_raise(be, name):
    fn, grad = getattr(gpuact, name), getattr(gpuact.backward, name)
    a = be.asarray(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"b has shape \(2, 1\); a has shape \(2, 4\) \(no broadcasting\)"):
        fn(a, be.asarray(np.ones((2, 1), np.float32)))
    with pytest.raises(TypeError, match="a and b must have one dtype; got float32 and float64"):
        fn(a, be.asarray(np.ones((2, 4), np.float64)))
    with pytest.raises(ValueError, match="dy has shape"):
        grad(be.asarray(np.ones((2, 2), np.float32)), a, a)
    with pytest.raises(TypeError, match="pair"):
        grad(a, a, a, out=be.asarray(np.ones((2, 4), np.float32)))
    shared = be.asarray(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="share memory"):
        grad(a, a, a, out=(shared, shared))


def test_two_tensor_form_of_masked_and_dask_arrays():
    a, b, _ = _pair((6, 8), np.float64, seed=37)
    expected = gpuact.swiglu(a, b)
    ma = np.ma.masked_array(a, mask=a > 2)
    mb = np.ma.masked_array(b, mask=b < -2)
    y = gpuact.swiglu(ma, mb)
    np.testing.assert_array_equal(np.ma.getmaskarray(y), (a > 2) | (b < -2))
    np.testing.assert_array_equal(y.data[~y.mask], expected[~y.mask])
    da = pytest.importorskip("dask.array")
    lazy = gpuact.swiglu(da.from_array(a, chunks=(3, 4)), da.from_array(b, chunks=(2, 8)))
    np.testing.assert_array_equal(lazy.compute(), expected)
    dy = _inputs((6, 8), np.float64, seed=38)
    grads = gpuact.backward.swiglu(da.from_array(dy, chunks=(6, 2)), da.from_array(a, chunks=(3, 4)), b)
    for got, want in zip(grads, gpuact.backward.swiglu(dy, a, b)):
        assert isinstance(got, da.Array)
        np.testing.assert_array_equal(got.compute(), want)


def test_two_tensor_form_through_torch_and_jax():
    torch = pytest.importorskip("torch")
    import gpuact.torch as gt

    functional = torch.nn.functional
    rng = np.random.default_rng(39)
    a = torch.tensor(rng.normal(0, 2, (3, 5)), requires_grad=True)
    b = torch.tensor(rng.normal(0, 2, (3, 5)), requires_grad=True)
    # float64: gpuact's kernels against PyTorch's own composition, then the derivatives by gradcheck
    for unit, composed in (
        (gt.swiglu, lambda a, b: functional.silu(a) * b),
        (gt.geglu, lambda a, b: functional.gelu(a) * b),
        (gt.reglu, lambda a, b: functional.relu(a) * b),
    ):
        np.testing.assert_allclose(unit(a, b).detach(), composed(a, b).detach(), rtol=1e-12, atol=1e-14)
        assert torch.autograd.gradcheck(unit, (a, b))
    dy = torch.tensor(rng.normal(0, 1, (3, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda dy: torch.ops.gpuact.gated_backward(dy, a.detach(), b.detach(), "swiglu"), (dy,)
    )
    torch.library.opcheck(torch.ops.gpuact.gated, (a.detach().float(), b.detach().float(), "geglu"))
    float_args = (dy.detach().float(), a.detach().float(), b.detach().float(), "reglu")
    torch.library.opcheck(torch.ops.gpuact.gated_backward, float_args)
    compiled = torch.compile(lambda a, b: gt.swiglu(a, b), fullgraph=True)
    np.testing.assert_allclose(compiled(a.detach(), b.detach()), gt.swiglu(a, b).detach(), rtol=1e-12, atol=0)
    jax = pytest.importorskip("jax")
    import gpuact.jax as gj

    ja, jb = jax.numpy.asarray(a.detach().numpy(), np.float32), jax.numpy.asarray(b.detach().numpy(), np.float32)
    assert_close(np.asarray(gj.swiglu(ja, jb), np.float64), np.asarray(jax.nn.silu(ja) * jb, np.float64), np.float32)
    got = jax.grad(lambda a, b: (gj.geglu(a, b) * a).sum(), argnums=(0, 1))(ja, jb)
    want = jax.grad(lambda a, b: (jax.nn.gelu(a, approximate=False) * b * a).sum(), argnums=(0, 1))(ja, jb)
    for g, w in zip(got, want):
        assert_close(np.asarray(g, np.float64), np.asarray(w, np.float64), np.float32)
    assert jax.vmap(gj.reglu)(ja, jb).shape == ja.shape


def test_against_the_torch_and_jax_compositions():
    x = np.random.default_rng(24).normal(0, 2, (5, 16))
    a, b = x[:, :8], x[:, 8:]
    torch = pytest.importorskip("torch")
    ta, tb = torch.tensor(a), torch.tensor(b)
    functional = torch.nn.functional
    np.testing.assert_allclose(gpuact.swiglu(x), (functional.silu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpuact.geglu(x), (functional.gelu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        gpuact.geglu(x, approximate=True),
        (functional.gelu(ta, approximate="tanh") * tb).numpy(),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(gpuact.reglu(x), (functional.relu(ta) * tb).numpy(), rtol=1e-12, atol=1e-14)
    jax = pytest.importorskip("jax")
    # JAX in float32 (its default): within the float32 contract of gpuact's float32 result
    a32, b32, x32 = a.astype(np.float32), b.astype(np.float32), x.astype(np.float32)
    ja, jb = jax.numpy.asarray(a32), jax.numpy.asarray(b32)
    assert_close(gpuact.swiglu(x32), np.asarray(jax.nn.silu(ja) * jb, np.float64), np.float32)
    assert_close(gpuact.geglu(x32), np.asarray(jax.nn.gelu(ja, approximate=False) * jb, np.float64), np.float32)
    assert_close(gpuact.geglu(x32, approximate=True), np.asarray(jax.nn.gelu(ja) * jb, np.float64), np.float32)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("name,kwargs,gate", UNITS, ids=IDS)
def test_odd_axis_messages_name_the_function_in_torch_and_jax(framework, name, kwargs, gate):
    pytest.importorskip(framework)
    if framework == "torch":
        import torch

        import gpuact.torch as wrapped

        x = torch.ones(2, 5)
    else:
        import jax.numpy as jnp

        import gpuact.jax as wrapped

        x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=f"^{name} splits axis -1 in two halves; its length 5 is odd$"):
        getattr(wrapped, name)(x, **kwargs)
