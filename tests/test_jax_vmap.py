"""gpuact.jax under jax.vmap: the batching rule against a Python loop over the examples, for every
family, with and without bias, batched and unbatched bias, in_axes other than 0, nested vmap, under
jit, and with grad (vmap of grad, grad of vmap); on the buffer_callback path and the pure_callback
fallback."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import gpuact  # noqa: E402
import gpuact.jax as gj  # noqa: E402

# the batch size equals the token count on purpose: broadcasting the batch axis into the bias lines
# it up with x's token axis, which then gives wrong numbers instead of a shape error
BATCH, TOKENS, FEATURES = 4, 4, 6

# (name, parameters, whether it takes bias): each family, the axis ops along another axis than -1
FAMILIES = [
    ("relu", {"alpha": 0.1, "max_value": 2.0}, True),
    ("gelu", {}, True),
    ("elu", {"alpha": 0.5}, True),
    ("softmax", {"axis": 0}, True),
    ("softmax", {"axis": (0, 1)}, True),
    ("log_softmax", {"axis": -1}, True),
    ("sparsemax", {"axis": 0}, False),
    ("glu", {"axis": 0}, False),
    ("glu", {"axis": -1}, False),
    ("swiglu", {"axis": 0}, False),
    ("geglu", {"axis": -1, "approximate": True}, False),
    ("reglu", {"axis": -1}, False),
]
IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items())}" for n, p, _ in FAMILIES]
BIASED = [f for f in FAMILIES if f[2]]
BIASED_IDS = [i for i, f in zip(IDS, FAMILIES) if f[2]]


@pytest.fixture(params=["buffer_callback", "pure_callback"])
def callback_path(request, monkeypatch):
    """Each test once on jax.experimental.buffer_callback and once on the pure_callback fallback."""
    if request.param == "pure_callback":
        monkeypatch.setattr(gj, "_buffer_callback", None)
    elif gj._buffer_callback is None:
        pytest.skip("this JAX has no jax.experimental.buffer_callback")
    assert gj._via() == ("buffer" if request.param == "buffer_callback" else "pure")
    return request.param


def _a(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 1.5, shape).astype(np.float32))


def _fn(name, params):
    return lambda a, b=None: getattr(gj, name)(a, **params, **({} if b is None else {"bias": b}))


def _plain(name, params):
    """The loop's body: plain gpuact on one example's NumPy arrays."""
    f = getattr(gpuact, name)
    return lambda a, b=None: f(np.asarray(a), **params, **({} if b is None else {"bias": np.asarray(b)}))


def _plain_grads(name, params, dy, a, b):
    """One example's (dx, dbias) from plain gpuact.backward, dbias summed over the broadcast axes."""
    dx = getattr(gpuact.backward, name)(np.asarray(dy), np.asarray(a), **params, bias=np.asarray(b))
    b = np.asarray(b)
    lead = dx.ndim - b.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(b.shape) if s == 1 and dx.shape[lead + i] != 1)
    return dx, dx.sum(axis=axes).reshape(b.shape)


def _close(got, want):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,params,_", FAMILIES, ids=IDS)
def test_vmap_without_bias_matches_the_loop(callback_path, name, params, _):
    f, ref = _fn(name, params), _plain(name, params)
    x = _a((BATCH, TOKENS, FEATURES), 0)
    _close(jax.vmap(f)(x), np.stack([ref(x[i]) for i in range(BATCH)]))
    # the batch axis in the middle and last: moved in front by vmap, the op's axis still the example's
    xm = jnp.moveaxis(x, 0, 1)
    _close(jax.jit(jax.vmap(f, in_axes=1))(xm), np.stack([ref(xm[:, i]) for i in range(BATCH)]))
    xl = jnp.moveaxis(x, 0, 2)
    _close(jax.vmap(f, in_axes=2, out_axes=1)(xl), np.stack([ref(xl[:, :, i]) for i in range(BATCH)], axis=1))


# per-example bias shapes: a Dense layer's (features,), a per-token (tokens, 1), a scalar
BIAS_SHAPES = [(FEATURES,), (TOKENS, 1), ()]


@pytest.mark.parametrize("bias_shape", BIAS_SHAPES, ids=str)
@pytest.mark.parametrize("name,params,_", BIASED, ids=BIASED_IDS)
def test_vmap_with_bias_matches_the_loop(callback_path, name, params, _, bias_shape):
    f, ref = _fn(name, params), _plain(name, params)
    x = _a((BATCH, TOKENS, FEATURES), 1)
    b = _a(bias_shape, 2)
    # unbatched bias: every example gets the same bias on the axes it was given for
    _close(jax.vmap(f, in_axes=(0, None))(x, b), np.stack([ref(x[i], b) for i in range(BATCH)]))
    # batched bias: example i gets bias i
    bs = _a((BATCH, *bias_shape), 3)
    _close(jax.jit(jax.vmap(f))(x, bs), np.stack([ref(x[i], bs[i]) for i in range(BATCH)]))
    # batched bias, unbatched x
    _close(jax.vmap(f, in_axes=(None, 0))(x[0], bs), np.stack([ref(x[0], bs[i]) for i in range(BATCH)]))
    # the bias batched along its last axis, x along its middle one
    bl, xm = jnp.moveaxis(bs, 0, -1), jnp.moveaxis(x, 0, 1)
    _close(jax.vmap(f, in_axes=(1, bl.ndim - 1))(xm, bl), np.stack([ref(xm[:, i], bl[..., i]) for i in range(BATCH)]))


def test_a_batched_dense_bias_stays_on_the_features(callback_path):
    # the case: x (tokens, features), bias (features,) per example, tokens == batch size;
    # broadcasting put the bias's batch axis on x's token axis (example j's bias added to token j of
    # every example, silently), and with tokens != batch size the call failed at run time
    x, b = _a((BATCH, TOKENS, FEATURES), 4), _a((BATCH, FEATURES), 5)
    f = jax.jit(jax.vmap(lambda a, c: gj.gelu(a, bias=c)))
    want = jax.nn.gelu(x + b[:, None, :], approximate=False)
    np.testing.assert_allclose(np.asarray(f(x, b)), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(f(x[:, :3], b)), np.asarray(want[:, :3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,params,takes_bias", FAMILIES, ids=IDS)
def test_nested_vmap_matches_the_double_loop(callback_path, name, params, takes_bias):
    f, ref = _fn(name, params), _plain(name, params)
    if not takes_bias:
        xs = _a((2, 3, TOKENS, FEATURES), 7)
        got = jax.vmap(jax.vmap(f))(xs)
        _close(got, np.stack([np.stack([ref(xs[i, j]) for j in range(3)]) for i in range(2)]))
        return
    x, bs = _a((3, TOKENS, FEATURES), 6), _a((2, FEATURES), 8)
    # outer level over the bias, inner over x: (bias's batch, x's batch, *example)
    got = jax.jit(jax.vmap(jax.vmap(f, in_axes=(0, None)), in_axes=(None, 0)))(x, bs)
    _close(got, np.stack([np.stack([ref(x[j], bs[i]) for j in range(3)]) for i in range(2)]))
    # both levels batched on both operands
    xs, bss = _a((2, 3, TOKENS, FEATURES), 9), _a((2, 3, TOKENS, 1), 10)
    got = jax.vmap(jax.vmap(f))(xs, bss)
    _close(got, np.stack([np.stack([ref(xs[i, j], bss[i, j]) for j in range(3)]) for i in range(2)]))


@pytest.mark.parametrize("name,params,takes_bias", FAMILIES, ids=IDS)
def test_vmap_of_grad_and_grad_of_vmap_match_the_loop(callback_path, name, params, takes_bias):
    f = _fn(name, params)
    x = _a((BATCH, TOKENS, FEATURES), 11)
    w = _a(jax.eval_shape(jax.vmap(f), x).shape, 12)
    if takes_bias:
        bs = _a((BATCH, FEATURES), 13)

        def loss(a, b, wi):
            return (f(a, b) * wi).sum()

        got = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(x, bs, w)
        want = [_plain_grads(name, params, w[i], x[i], bs[i]) for i in range(BATCH)]
        _close(got[0], np.stack([g[0] for g in want]))
        np.testing.assert_allclose(np.asarray(got[1]), np.stack([g[1] for g in want]), rtol=1e-5, atol=1e-6)
        # grad of vmap with one bias shared by the batch: its gradient sums over the examples
        b = bs[0]
        gx, gb = jax.grad(lambda a, c: (jax.vmap(f, in_axes=(0, None))(a, c) * w).sum(), argnums=(0, 1))(x, b)
        want = [_plain_grads(name, params, w[i], x[i], b) for i in range(BATCH)]
        _close(gx, np.stack([g[0] for g in want]))
        np.testing.assert_allclose(np.asarray(gb), sum(g[1] for g in want), rtol=1e-5, atol=1e-5)
        return

    backward = getattr(gpuact.backward, name)
    want = np.stack([backward(np.asarray(w[i]), np.asarray(x[i]), **params) for i in range(BATCH)])
    got = jax.vmap(jax.grad(lambda a, wi: (f(a) * wi).sum()))(x, w)
    _close(got, want)
    got = jax.jit(jax.grad(lambda a: (jax.vmap(f, in_axes=1, out_axes=1)(a) * jnp.moveaxis(w, 0, 1)).sum()))(
        jnp.moveaxis(x, 0, 1)
    )
    _close(jnp.moveaxis(got, 1, 0), want)
