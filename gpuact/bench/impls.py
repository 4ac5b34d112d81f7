"""What the benchmark times: gpuact's own paths and the peers found installed.

Each implementation is one (backend, device) pair. ``discover()`` decides which are used and
says why the others are skipped. Peers are found with ``importlib.util.find_spec`` and imported
only when they will be used.

Backends in the results:

=================  ======  ================================================================
``numpy``          cpu     gpuact's NumPy path (the baseline of ``speedup_vs_numpy``)
``cupy``           gpu     gpuact's CuPy kernels (``gpuact.relu(cupy_array)``)
``numba``          gpu     gpuact's Numba kernels (input a Numba device array)
``numpy-naive``    cpu     the textbook NumPy expression, e.g. ``1/(1+np.exp(-x))``
``cupy-naive``     gpu     the same expression in CuPy; ``cupyx.scipy.special.(log_)softmax``
``torch``          both    ``torch.nn.functional`` / ``torch.softmax`` (eager)
``jax``            both    ``jax.nn`` under ``jax.jit``
``tensorflow``     cpu     ``tf.keras.activations`` (the reference implementation), eager
``gpuact-torch``   both    ``gpuact.torch`` with autograd (training rows only)
``torch-compile``  both    the ``torch`` peer's function under ``torch.compile`` (Inductor);
                           opt-in (``--backends``): compiling takes seconds per row
=================  ======  ================================================================

The compiled-model row (``linear-gelu-linear:grad``, see ``gpuact.bench.cases``) runs on
``gpuact-torch`` (the model with ``gpuact.torch.gelu``) and ``torch`` (with
``torch.nn.functional.gelu``), both under ``torch.compile(fullgraph=True)``; the others skip it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuact.bench import cases as C
from gpuact.bench.cases import SELU_ALPHA, SELU_SCALE, SOFTMAX_OPS, Case

GPUACT_BACKENDS = ("numpy", "cupy", "numba")
PEERS = ("numpy-naive", "cupy-naive", "torch", "jax", "tensorflow", "gpuact-torch", "torch-compile")
ALL_BACKENDS = GPUACT_BACKENDS + PEERS
# what runs without --backends: torch.compile's compile time per row is left to an opt-in
DEFAULT_BACKENDS = tuple(b for b in ALL_BACKENDS if b != "torch-compile")
# the torch.compile backend of the compiled-model row (the tests take "aot_eager": no C++ build)
COMPILE_BACKEND = "inductor"


@dataclass
class Status:
    backend: str
    device: str
    used: bool
    reason: str = ""

    def as_dict(self):
        return {"backend": self.backend, "device": self.device, "used": self.used, "reason": self.reason or None}


@dataclass
class Impl:
    """One backend on one device.

    ``timer`` is how its GPU time is taken: ``"cpu"`` (perf_counter_ns), ``"cuda-event"`` (CuPy
    events on the current CuPy stream), ``"torch-event"`` (torch.cuda.Event on torch's stream) or
    ``"wall-sync"`` (wall clock around the call and ``block_until_ready``).
    """

    backend: str
    device: str
    gpuact: bool
    timer: str
    _make: Any = None  # (op, axis) -> callable(x) -> y
    _wrap: Callable[..., Any] | None = None  # host ndarray (cpu) / cupy array (gpu) -> native input
    _to_array: Callable[..., Any] | None = None  # native output -> np.ndarray (cpu) / cupy.ndarray (gpu)
    _sync: Callable[..., Any] | None = None  # y -> None: waits until y is computed (overhead loop)
    _supports: Callable[..., Any] | None = None  # Case -> reason or None
    _cache: dict = field(default_factory=dict)

    def function(self, case: Case):
        key = (case.op, case.axis)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._cache[key] = self._make(case.op, case.axis)
        return fn

    def wrap(self, a):
        return self._wrap(a) if self._wrap else a

    def to_array(self, y):
        return self._to_array(y) if self._to_array else y

    def sync(self, y):
        if self._sync:
            self._sync(y)

    def unsupported(self, case: Case):
        if C.is_model(case.op) and self.backend not in C.MODEL_BACKENDS:
            return f"the compiled-model row runs on {' and '.join(C.MODEL_BACKENDS)} only"
        return self._supports(case) if self._supports else None

    @property
    def name(self):
        return f"{self.backend}@{self.device}"


# ---------------------------------------------------------------------------------------------
# The implementations


def _training(op, axis, make_forward, make_grad=None, fused_bias=False):
    """A case function for any op name (see gpuact.bench.cases): the forward from
    ``make_forward(base, axis)``, a gradient from ``make_grad(base, axis)`` (``g(x, dy)``). The
    bias rows are add-then-activate, except "gelu+bias" with ``fused_bias`` (gpuact's own:
    ``make_forward(base, axis, bias=True)`` is ``f(x, b)``, ``make_grad(..., bias=True)``
    ``g(x, dy, b)``); a peer has no fused bias, and its "gelu+bias" is its own add-then-gelu (which
    XLA, say, fuses by itself)."""
    base, grad, fused = C.base_op(op), C.is_grad(op), fused_bias and op.startswith("gelu+bias")
    if not grad and not C.is_bias(op):
        return make_forward(base, axis)
    if not C.is_bias(op):
        g = make_grad(base, axis)
        if C.is_gated(op):  # dy has the output's shape: half of the stacked row
            return lambda a: g(a[0], C.split_input(op, a)[1])
        return lambda a: g(a[0], a[1])
    if not grad:
        if fused:
            f = make_forward(base, axis, bias=True)
            return lambda a: f(a[:-1], a[-1])
        f = make_forward(base, axis)
        return lambda a: f(a[:-1] + a[-1])
    g = make_grad(base, axis, bias=True) if fused else make_grad(base, axis)
    if fused:
        return lambda a: g(a[: (a.shape[0] - 1) // 2], a[(a.shape[0] - 1) // 2 : -1], a[-1])
    return lambda a: g(a[: (a.shape[0] - 1) // 2] + a[-1], a[(a.shape[0] - 1) // 2 : -1])


def _gpuact_fn(op, axis):
    import gpuact
    import gpuact.backward

    def forward(base, axis, bias=False):
        f = getattr(gpuact, base)
        if base in SOFTMAX_OPS or base in C.GATED_OPS:
            f = functools.partial(f, axis=axis)
        if bias:
            return lambda x, b: f(x, bias=b)
        return f

    def grad(base, axis, bias=False):
        g = getattr(gpuact.backward, base)
        if base in SOFTMAX_OPS or base in C.GATED_OPS:
            g = functools.partial(g, axis=axis)
        if bias:
            return lambda x, dy, b: g(dy, x, bias=b)
        return lambda x, dy: g(dy, x)

    return _training(op, axis, forward, grad, fused_bias=True)


def _naive(xp, special, op, axis):
    """The expression a user would write in NumPy/CuPy, no gpuact involved."""
    return _training(
        op,
        axis,
        lambda base, axis: _naive_forward(xp, special, base, axis),
        lambda base, axis: _naive_grad(xp, special, base, axis),
    )


def _naive_grad(xp, special, op, axis):
    """dy * f'(x) composed of the module's own operations (one pass per step)."""

    def sig(x):
        return 1 / (1 + xp.exp(-x))

    if op in C.GATED_OPS:
        gate = C.GATE_ACTIVATION[op]
        act, act_grad = _naive_forward(xp, special, gate, axis), _naive_grad(xp, special, gate, axis)

        def gated_grad(x, dy):
            a, b = xp.split(x, 2, axis=axis)
            return xp.concatenate([act_grad(a, dy * b), dy * act(a)], axis=axis)

        return gated_grad
    if op in SOFTMAX_OPS:

        def softmax(x):
            z = xp.exp(x - x.max(axis=axis, keepdims=True))
            return z / z.sum(axis=axis, keepdims=True)

        if op == "log_softmax":
            return lambda x, dy: dy - softmax(x) * dy.sum(axis=axis, keepdims=True)

        def softmax_grad(x, dy):
            y = softmax(x)
            return y * (dy - (dy * y).sum(axis=axis, keepdims=True))

        return softmax_grad
    table = {
        "relu": lambda x, dy: dy * (x > 0),
        "sigmoid": lambda x, dy: dy * sig(x) * (1 - sig(x)),
        "softplus": lambda x, dy: dy * sig(x),
        "softsign": lambda x, dy: dy / (1 + xp.abs(x)) ** 2,
        "tanh": lambda x, dy: dy * (1 - xp.tanh(x) ** 2),
        "selu": lambda x, dy: dy * SELU_SCALE * xp.where(x > 0, 1, SELU_ALPHA * xp.exp(x)),
        "elu": lambda x, dy: dy * xp.where(x > 0, 1, xp.exp(x)),
        "exponential": lambda x, dy: dy * xp.exp(x),
        "silu": lambda x, dy: dy * sig(x) * (1 + x * (1 - sig(x))),
    }
    if op == "gelu":
        if special is None:
            raise NotImplementedError("naive gelu needs scipy.special.erf (pip install scipy)")
        erf = special.erf

        def no_bfloat16(x):
            if x.dtype.name == "bfloat16":
                raise NotImplementedError("scipy.special.erf has no bfloat16 loop")
            return x

        return lambda x, dy: (
            dy
            * (0.5 * (1 + erf(no_bfloat16(x) * (1 / math.sqrt(2)))) + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
        )
    return table[op]


def _gated(split, act):
    """``act(a) * b`` for the halves of x along ``axis`` (``split(x)`` gives them): the peer's composition."""

    def gated(x):
        a, b = split(x)
        return act(a) * b

    return gated


def _naive_forward(xp, special, op, axis):
    if op in C.GATED_OPS:
        return _gated(lambda x: xp.split(x, 2, axis=axis), _naive_forward(xp, special, C.GATE_ACTIVATION[op], axis))
    if op == "relu":
        return lambda x: xp.maximum(x, 0)
    if op == "sigmoid":
        return lambda x: 1 / (1 + xp.exp(-x))
    if op == "softplus":
        return lambda x: xp.log1p(xp.exp(x))
    if op == "softsign":
        return lambda x: x / (1 + xp.abs(x))
    if op == "tanh":
        return xp.tanh
    if op == "selu":
        return lambda x: SELU_SCALE * xp.where(x > 0, x, SELU_ALPHA * xp.expm1(x))
    if op == "elu":
        return lambda x: xp.where(x > 0, x, xp.expm1(x))
    if op == "exponential":
        return xp.exp
    if op == "silu":
        return lambda x: x / (1 + xp.exp(-x))
    if op == "gelu":
        erf = special.erf

        def gelu(x):
            if x.dtype.name == "bfloat16":
                raise NotImplementedError("scipy.special.erf has no bfloat16 loop")
            return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))

        return gelu
    if op in SOFTMAX_OPS:
        if xp.__name__ == "cupy":  # the library routine CuPy users reach for
            return functools.partial(special.log_softmax if op == "log_softmax" else special.softmax, axis=axis)

        def softmax(x):
            z = x - x.max(axis=axis, keepdims=True)
            if op == "log_softmax":
                return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
            e = xp.exp(z)
            return e / e.sum(axis=axis, keepdims=True)

        return softmax
    raise KeyError(op)


def _compiled_model(activation):
    """The compiled-model row's step, ``activation()`` making the model's activation module: one
    model per dtype and device, its weights ``C.model_weights()``, compiled whole."""
    import torch

    models: dict = {}

    def model_for(x):
        key = (x.dtype, x.device)
        if key not in models:
            units = C.MODEL_UNITS
            model = torch.nn.Sequential(torch.nn.Linear(units, units), activation(), torch.nn.Linear(units, units))
            model = model.to(device=x.device, dtype=x.dtype)
            with torch.no_grad():
                for p, w in zip(model.parameters(), C.model_weights()):
                    p.copy_(torch.from_numpy(w))
            models[key] = torch.compile(model, fullgraph=True, backend=COMPILE_BACKEND)
        return models[key]

    def step(a):
        x = a[0].detach().requires_grad_(True)
        (dx,) = torch.autograd.grad(model_for(x)(x), x, a[1])
        return dx

    return step


def _torch_fn(op, axis):
    import torch

    if C.is_model(op):
        return _compiled_model(torch.nn.GELU)

    return _training(op, axis, _torch_forward, lambda base, axis: _through_autograd(_torch_forward(base, axis)))


def _through_autograd(f):
    """``g(x, dy)``: ``dy``'s vector-Jacobian product through ``f`` by autograd, as a PyTorch user
    trains (the forward run, then its backward)."""
    import torch

    def g(x, dy):
        x = x.detach().requires_grad_(True)
        (dx,) = torch.autograd.grad(f(x), x, dy)
        return dx

    return g


def _torch_forward(op, axis):
    import torch
    import torch.nn.functional as F

    table = {
        "relu": F.relu,
        "sigmoid": torch.sigmoid,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "tanh": torch.tanh,
        "selu": F.selu,
        "elu": F.elu,
        "exponential": torch.exp,
        "gelu": F.gelu,
        "silu": F.silu,
    }
    if op == "softmax":
        return lambda x: torch.softmax(x, dim=axis)
    if op == "log_softmax":
        return lambda x: torch.log_softmax(x, dim=axis)
    if op in C.GATED_OPS:
        return _gated(lambda x: x.chunk(2, dim=axis), table[C.GATE_ACTIVATION[op]])
    return table[op]


def _jax_fn(op, axis, block: bool):
    import jax

    if C.is_grad(op) or C.is_bias(op):

        def forward(base, axis):
            return _jax_table(base, axis)

        def grad(base, axis):
            f = _jax_table(base, axis)
            return lambda x, dy: jax.vjp(f, x)[1](dy)[0]

        f = jax.jit(_training(op, axis, forward, grad))  # jax.vjp under jit
    else:
        f = jax.jit(_jax_table(op, axis))
    if block:
        return lambda x: f(x).block_until_ready()
    return f


def _jax_table(op, axis):
    import jax
    import jax.numpy as jnp

    table = {
        "relu": jax.nn.relu,
        "sigmoid": jax.nn.sigmoid,
        "softplus": jax.nn.softplus,
        "softsign": jax.nn.soft_sign,
        "tanh": jnp.tanh,
        "selu": jax.nn.selu,
        "elu": jax.nn.elu,
        "exponential": jnp.exp,
        "silu": jax.nn.silu,
        "gelu": functools.partial(jax.nn.gelu, approximate=False),  # jax's default is the tanh form
        "softmax": functools.partial(jax.nn.softmax, axis=axis),
        "log_softmax": functools.partial(jax.nn.log_softmax, axis=axis),
    }
    if op in C.GATED_OPS:
        return _gated(lambda x: jnp.split(x, 2, axis=axis), table[C.GATE_ACTIVATION[op]])
    return table[op]


def _tf_fn(op, axis):
    import tensorflow as tf

    def grad(base, axis):
        f = _tf_forward(base, axis)

        def g(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = f(x)
            return tape.gradient(y, x, output_gradients=dy)

        return g

    fn = _training(op, axis, _tf_forward, grad)

    def call(x):
        with tf.device("/CPU:0"):
            return fn(x)

    return call


def _tf_forward(op, axis):
    import tensorflow as tf

    acts = tf.keras.activations
    if op in C.GATED_OPS:
        return _gated(lambda x: tf.split(x, 2, axis=axis), _tf_forward(C.GATE_ACTIVATION[op], axis))
    if op == "softmax":
        f = functools.partial(acts.softmax, axis=axis)
    elif op == "log_softmax":
        f = getattr(acts, "log_softmax", None)
        f = functools.partial(f, axis=axis) if f else (lambda x: tf.nn.log_softmax(x, axis=axis))
    elif op == "gelu":
        f = functools.partial(acts.gelu, approximate=False)
    elif op == "silu":
        f = getattr(acts, "silu", None) or acts.swish
    else:
        f = getattr(acts, op)
    return f


# ---------------------------------------------------------------------------------------------
# Discovery


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gpu_unusable() -> str | None:
    """Why the GPU part of the benchmark cannot run here (it needs CuPy for events and buffers)."""
    if os.environ.get("GPUACT_BENCH_NO_GPU") == "1":
        return "GPUACT_BENCH_NO_GPU=1"
    if not _installed("cupy"):
        return "cupy is not installed (pip install gpuact[cuda12])"
    try:
        import cupy

        if cupy.is_available():
            return None
    except Exception as exc:  # a broken CUDA install says so here
        return f"cupy cannot use a GPU: {exc}"
    return "no usable CUDA GPU (cupy.is_available() is False)"


def discover(selected=None, devices=("cpu", "gpu"), need_x64=False):
    """(impls, statuses): what will be timed, and every backend/device with used or skip reason."""
    default = selected is None
    selected = set(DEFAULT_BACKENDS if default else selected)
    impls: list[Impl] = []
    statuses: list[Status] = []

    def add(backend, device, make_impl, reason=None):
        if backend not in selected:
            opt_in = default and backend not in DEFAULT_BACKENDS
            statuses.append(
                Status(backend, device, False, "opt-in (--backends)" if opt_in else "not selected (--backends)")
            )
            return
        if device not in devices:
            statuses.append(Status(backend, device, False, f"--device excludes {device}"))
            return
        if reason:
            statuses.append(Status(backend, device, False, reason))
            return
        try:
            impl = make_impl()
        except Exception as exc:  # an installed but broken peer is skipped, with why
            statuses.append(Status(backend, device, False, f"{type(exc).__name__}: {exc}"))
            return
        impls.append(impl)
        how = _describe(impl)
        if backend == "numpy":  # which NumPy path is being timed
            from gpuact.backends import _native

            off = _native.unavailable_reason()
            how += "; compiled CPU kernels" if off is None else f"; NumPy ufuncs only ({off})"
        statuses.append(Status(backend, device, True, how))

    gpu_reason = gpu_unusable() if "gpu" in devices else "--device excludes gpu"

    # --- CPU
    add("numpy", "cpu", lambda: Impl("numpy", "cpu", True, "cpu", _make=_gpuact_fn))
    add("numpy-naive", "cpu", _numpy_naive)
    add("torch", "cpu", _torch_cpu, None if _installed("torch") else "torch is not installed")
    add("jax", "cpu", lambda: _jax_impl("cpu", need_x64), None if _installed("jax") else "jax is not installed")
    add("tensorflow", "cpu", _tf_cpu, None if _installed("tensorflow") else "tensorflow is not installed")
    add("gpuact-torch", "cpu", lambda: _gpuact_torch("cpu"), None if _installed("torch") else "torch is not installed")
    add(
        "torch-compile",
        "cpu",
        lambda: _torch_compiled("cpu"),
        None if _installed("torch") else "torch is not installed",
    )

    # --- GPU
    add("cupy", "gpu", _gpuact_cupy, gpu_reason)
    numba_reason = gpu_reason
    if numba_reason is None and not _installed("numba"):
        numba_reason = "numba is not installed (pip install gpuact[cuda12])"
    add("numba", "gpu", _gpuact_numba, numba_reason)
    add("cupy-naive", "gpu", _cupy_naive, gpu_reason)
    add("torch", "gpu", _torch_gpu, gpu_reason or (None if _installed("torch") else "torch is not installed"))
    add(
        "jax",
        "gpu",
        lambda: _jax_impl("gpu", need_x64),
        gpu_reason or (None if _installed("jax") else "jax is not installed"),
    )
    add(
        "gpuact-torch",
        "gpu",
        lambda: _gpuact_torch("gpu"),
        gpu_reason or (None if _installed("torch") else "torch is not installed"),
    )
    add(
        "torch-compile",
        "gpu",
        lambda: _torch_compiled("gpu"),
        gpu_reason or (None if _installed("torch") else "torch is not installed"),
    )
    statuses.append(Status("tensorflow", "gpu", False, "tensorflow is timed on the CPU only"))
    return impls, statuses


def _describe(impl: Impl) -> str:
    return {
        "cpu": "perf_counter_ns",
        "cuda-event": "CUDA events (cupy.cuda.Event)",
        "torch-event": "CUDA events (torch.cuda.Event)",
        "wall-sync": "wall clock + block_until_ready",
    }[impl.timer]


def _numpy_naive():
    special = None
    if _installed("scipy"):
        import scipy.special as special

    def make(op, axis):
        if C.base_op(op) == "gelu" and special is None:
            raise NotImplementedError("naive gelu needs scipy.special.erf (pip install scipy)")
        return _naive(np, special, op, axis)

    return Impl("numpy-naive", "cpu", False, "cpu", _make=make)


def _tensor_of(a):
    """A host ndarray as a tensor, zero-copy; bfloat16 (ml_dtypes') through its bits."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _ndarray_of(y):
    import torch

    if y.dtype == torch.bfloat16:
        return y.detach().view(torch.int16).numpy().view(np.dtype("bfloat16"))
    return y.detach().numpy()


def _torch_cpu():

    return Impl("torch", "cpu", False, "cpu", _make=_torch_fn, _wrap=_tensor_of, _to_array=_ndarray_of)


def _jax_impl(device, need_x64):
    # JAX would otherwise take 75 % of the GPU's memory at its first use, leaving CuPy and
    # PyTorch to run out; the benchmark's buffers come from CuPy.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    if need_x64:
        jax.config.update("jax_enable_x64", True)
    try:
        dev = jax.devices(device)[0]
    except RuntimeError as exc:
        raise RuntimeError(f"jax has no {device} device ({str(exc).splitlines()[0]})") from None
    if device == "cpu":
        return Impl(
            "jax",
            "cpu",
            False,
            "cpu",
            _make=lambda op, axis: _jax_fn(op, axis, block=True),
            _wrap=lambda a: jax.device_put(a, dev),
            _to_array=np.asarray,
            _sync=lambda y: y.block_until_ready(),
        )
    import cupy

    def wrap(a):
        try:
            return jax.dlpack.from_dlpack(a)
        except Exception:
            return jax.device_put(cupy.asnumpy(a), dev)

    return Impl(
        "jax",
        "gpu",
        False,
        "wall-sync",
        _make=lambda op, axis: _jax_fn(op, axis, block=False),
        _wrap=wrap,
        _to_array=lambda y: cupy.from_dlpack(y),
        _sync=lambda y: y.block_until_ready(),
    )


def _tf_cpu():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no start-up chatter on stderr
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    try:
        tf.get_logger().setLevel("ERROR")
    except Exception:
        pass

    def wrap(a):
        with tf.device("/CPU:0"):
            return tf.constant(a)

    return Impl("tensorflow", "cpu", False, "cpu", _make=_tf_fn, _wrap=wrap, _to_array=lambda y: np.asarray(y))


def _cupy_sync(_y=None):
    import cupy

    cupy.cuda.Device().synchronize()


def _gpuact_cupy():
    import cupy

    import gpuact  # noqa: F401

    return Impl("cupy", "gpu", True, "cuda-event", _make=_gpuact_fn, _to_array=cupy.asarray, _sync=_cupy_sync)


def _gpuact_numba():
    import cupy
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError("numba sees no usable CUDA GPU")
    # A Numba device array viewing the CuPy buffer: the same type cuda.to_device returns, no copy.
    return Impl(
        "numba",
        "gpu",
        True,
        "cuda-event",
        _make=_gpuact_fn,
        _wrap=cuda.as_cuda_array,
        _to_array=cupy.asarray,
        _sync=_cupy_sync,
    )


def _cupy_naive():
    import cupy
    import cupyx.scipy.special as special

    return Impl(
        "cupy-naive",
        "gpu",
        False,
        "cuda-event",
        _make=lambda op, axis: _naive(cupy, special, op, axis),
        _sync=_cupy_sync,
    )


def _torch_gpu():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("torch was built without CUDA or sees no GPU")
    import cupy

    return Impl(
        "torch",
        "gpu",
        False,
        "torch-event",
        _make=_torch_fn,
        _wrap=lambda a: torch.as_tensor(a, device="cuda"),
        _to_array=cupy.asarray,
        _sync=lambda y: torch.cuda.synchronize(),
    )


def _torch_compiled(device):
    """The torch peer's forward under ``torch.compile(dynamic=False)``, and its gradient through
    the compiled forward's compiled backward (AOTAutograd), as a PyTorch user trains; one compile
    per row, done at the row's first (untimed) call."""
    import torch

    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("torch was built without CUDA or sees no GPU")
    # one graph per size and dtype of a row (dynamic=False): Dynamo's default of 8 recompiles of a
    # function would send the larger sizes back to eager, timing torch rather than torch.compile
    config = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, limit):
            setattr(config, limit, max(getattr(config, limit), 1024))

    def forward(base, axis):
        return torch.compile(_torch_forward(base, axis), dynamic=False, backend=COMPILE_BACKEND)

    def grad(base, axis):
        return _through_autograd(forward(base, axis))

    def supports(case):
        if C.is_model(case.op):
            return "the compiled-model row is the torch peer's (compiled there)"
        return "the bias rows are the torch peer's" if C.is_bias(case.op) else None

    if device == "cpu":
        return Impl(
            "torch-compile",
            "cpu",
            False,
            "cpu",
            _make=lambda op, axis: _training(op, axis, forward, grad),
            _wrap=_tensor_of,
            _to_array=_ndarray_of,
            _supports=supports,
        )
    import cupy

    return Impl(
        "torch-compile",
        "gpu",
        False,
        "torch-event",
        _make=lambda op, axis: _training(op, axis, forward, grad),
        _wrap=lambda a: torch.as_tensor(a, device="cuda"),
        _to_array=cupy.asarray,
        _sync=lambda y: torch.cuda.synchronize(),
        _supports=supports,
    )


def _gpuact_torch(device):
    """gpuact.torch on tensors: its rows are the training rows only (``<op>:grad``: the forward
    and the backward through autograd, as the torch peer's), so a PyTorch user sees what the
    interop layer costs against torch.nn.functional."""
    import torch

    import gpuact.torch as gt

    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("torch was built without CUDA or sees no GPU")

    def make(op, axis):
        if not C.is_grad(op) or C.is_bias(op):
            raise NotImplementedError("gpuact-torch runs the training rows only")
        if C.is_model(op):
            return _compiled_model(lambda: gt.Activation("gelu"))
        f = getattr(gt, C.base_op(op))
        if C.base_op(op) in SOFTMAX_OPS or C.is_gated(op):
            f = functools.partial(f, axis=axis)

        def step(a):
            x = a[0].detach().requires_grad_(True)
            (dx,) = torch.autograd.grad(f(x), x, C.split_input(op, a)[1])
            return dx

        return step

    def supports(case):
        return None if C.is_grad(case.op) and not C.is_bias(case.op) else "gpuact-torch runs the training rows only"

    if device == "cpu":
        return Impl(
            "gpuact-torch",
            "cpu",
            False,
            "cpu",
            _make=make,
            _wrap=_tensor_of,
            _to_array=_ndarray_of,
            _supports=supports,
        )
    import cupy

    return Impl(
        "gpuact-torch",
        "gpu",
        False,
        "torch-event",
        _make=make,
        _wrap=lambda a: torch.as_tensor(a, device="cuda"),
        _to_array=cupy.asarray,
        _sync=lambda y: torch.cuda.synchronize(),
        _supports=supports,
    )


def library_versions() -> dict:
    """Versions of everything that may take part, without importing what is not loaded yet."""
    out = {"python": sys.version.split()[0]}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return out
    for dist in (
        "gpuact",
        "numpy",
        "scipy",
        "cupy-cuda12x",
        "cupy-cuda13x",
        "cupy",
        "numba",
        "numba-cuda",
        "torch",
        "jax",
        "jaxlib",
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "matplotlib",
        "rich",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
        except Exception:
            pass
    return out
