"""gpuact.jax on XLA's own buffers: through jax.experimental.buffer_callback gpuact reads the
operand buffers and writes its result into XLA's output buffer (out=), with no copy; the
pure_callback fallback where buffer_callback is missing; on a GPU, device buffers and XLA's stream."""

from __future__ import annotations

import numpy as np
import pytest

import gpuact

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import gpuact.jax as gj  # noqa: E402

needs_buffer_callback = pytest.mark.skipif(
    gj._buffer_callback is None, reason="this JAX has no jax.experimental.buffer_callback"
)


def _pointer(a):
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    if hasattr(a, "data") and hasattr(a.data, "ptr"):  # a CuPy array
        return a.data.ptr
    return a.__cuda_array_interface__["data"][0]


def _recording(monkeypatch, module, name):
    """Replace ``module.<name>`` by a wrapper that records what each call was handed."""
    calls = []
    real = getattr(module, name)

    def recording(*arrays, out=None, stream=None, **kwargs):
        calls.append(
            {
                "arrays": [(type(a), _pointer(a)) for a in arrays],
                "bias": kwargs.get("bias"),
                "out": (type(out), _pointer(out)) if out is not None else None,
                "stream": stream,
            }
        )
        return real(*arrays, out=out, stream=stream, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


def _refuse_pure_callback(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("jax.pure_callback was used: a host copy of the operands and the result")

    monkeypatch.setattr(jax, "pure_callback", refused)


def _x(shape=(64, 48), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, 2, shape).astype(np.float32))


@needs_buffer_callback
def test_the_forward_writes_into_xlas_output_buffer(monkeypatch):
    assert gj._via() == "buffer"
    calls = _recording(monkeypatch, gpuact, "silu")
    _refuse_pure_callback(monkeypatch)
    x = _x()
    y = jax.jit(lambda a: gj.silu(a))(x)
    (call,) = calls
    # gpuact read x's own buffer and wrote XLA's result buffer, the one the jitted function returns
    assert call["arrays"] == [(np.ndarray, x.unsafe_buffer_pointer())]
    assert call["out"] == (np.ndarray, y.unsafe_buffer_pointer())
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(y), gpuact.silu(np.asarray(x)))


@needs_buffer_callback
def test_the_backward_and_the_bias_are_xlas_buffers_too(monkeypatch):
    backward = _recording(monkeypatch, gpuact.backward, "gelu")
    _refuse_pure_callback(monkeypatch)
    x, b, w = _x(seed=1), _x((48,), seed=2), _x(seed=3)
    dx = jax.jit(jax.grad(lambda a, c: (gj.gelu(a, bias=c) * w).sum()))(x, b)
    assert len(backward) == 1 and backward[0]["out"] == (np.ndarray, dx.unsafe_buffer_pointer())
    assert [t for t, _ in backward[0]["arrays"]] == [np.ndarray, np.ndarray]
    assert isinstance(backward[0]["bias"], np.ndarray)
    monkeypatch.undo()
    np.testing.assert_allclose(
        np.asarray(dx),
        gpuact.backward.gelu(np.asarray(w), np.asarray(x), bias=np.asarray(b)),
        rtol=1e-6,
        atol=1e-7,
    )


def test_the_pure_callback_fallback_hands_gpuact_host_copies(monkeypatch):
    monkeypatch.setattr(gj, "_buffer_callback", None)
    assert gj._via() == "pure"
    calls = _recording(monkeypatch, gpuact, "softmax")
    x = _x(seed=4)
    y = jax.jit(lambda a: gj.softmax(a, axis=0))(x)
    (call,) = calls
    assert call["out"] is None  # gpuact's own result, which JAX copies into its buffer
    np.testing.assert_array_equal(np.asarray(y), gpuact.softmax(np.asarray(x), axis=0))


@pytest.mark.parametrize("via", ["buffer", "pure"])
@pytest.mark.parametrize(
    "name,shape", [("relu", ()), ("relu", (0, 3)), ("glu", (0, 4)), ("softmax", (2, 0)), ("gelu", (1, 1, 1))]
)
def test_empty_and_0d_arrays(monkeypatch, via, name, shape):
    if via == "pure":
        monkeypatch.setattr(gj, "_buffer_callback", None)
    elif gj._buffer_callback is None:
        pytest.skip("this JAX has no jax.experimental.buffer_callback")
    x = jnp.asarray(np.random.default_rng(5).normal(size=shape).astype(np.float32))
    y = jax.jit(lambda a: getattr(gj, name)(a))(x)
    want = getattr(gpuact, name)(np.asarray(x))
    assert y.shape == want.shape and y.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(y), want)


@pytest.mark.gpu
def test_on_a_gpu_gpuact_writes_xlas_device_buffer_on_xlas_stream(monkeypatch):
    from tests.conftest import skip_unless_usable

    skip_unless_usable("cupy")
    if gj._buffer_callback is None:
        pytest.skip("this JAX has no jax.experimental.buffer_callback")
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError as exc:
        pytest.skip(f"JAX sees no GPU (install jax[cuda12]): {exc}")
    import cupy

    calls = _recording(monkeypatch, gpuact, "gelu")
    backward = _recording(monkeypatch, gpuact.backward, "gelu")
    _refuse_pure_callback(monkeypatch)
    host = np.random.default_rng(6).normal(0, 2, (256, 512)).astype(np.float32)
    x = jax.device_put(host, device)
    b = jax.device_put(host[0], device)
    y = jax.jit(lambda a, c: gj.gelu(a, bias=c))(x, b)
    y.block_until_ready()
    (call,) = calls
    # device buffers (CuPy views of XLA's memory), the result written into XLA's output: no host copy
    assert call["arrays"] == [(cupy.ndarray, x.unsafe_buffer_pointer())]
    assert call["out"] == (cupy.ndarray, y.unsafe_buffer_pointer())
    assert isinstance(call["bias"], cupy.ndarray) and call["bias"].data.ptr == b.unsafe_buffer_pointer()
    # launched on the stream XLA handed the callback
    handle = call["stream"].__cuda_stream__()[1]
    assert isinstance(handle, int)
    want = gpuact.gelu(host, bias=host[0])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6)
    dx = jax.jit(jax.grad(lambda a: gj.gelu(a, bias=b).sum()))(x)
    dx.block_until_ready()
    assert backward and backward[-1]["out"] == (cupy.ndarray, dx.unsafe_buffer_pointer())
    monkeypatch.undo()
    np.testing.assert_allclose(
        np.asarray(dx), gpuact.backward.gelu(np.ones_like(host), host, bias=host[0]), rtol=1e-5, atol=1e-6
    )
    # vmap on the device: the batching rule, still XLA's buffers
    xs = jax.device_put(host.reshape(4, 64, 512), device)
    ys = jax.jit(jax.vmap(lambda a: gj.softmax(a, bias=b)))(xs)
    np.testing.assert_allclose(
        np.asarray(ys), gpuact.softmax(host.reshape(4, 64, 512), bias=host[0]), rtol=1e-5, atol=1e-6
    )
