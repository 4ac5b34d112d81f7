"""PyTorch tensors: the same kind back (zero-copy), out=, bfloat16, and gpuact.torch's autograd
against torch.autograd.gradcheck and torch.nn.functional, on CPU tensors (CUDA tensors among the
GPU tests, skipped with the reason where there is none)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact import activations

torch = pytest.importorskip("torch")
import gpuact.torch as gt  # noqa: E402

# (name, kwargs) for every public function, with parameters where it has them
CALLS = [
    (name, {"threshold": 0.5, "default_value": -1.0} if name == "threshold" else {}) for name in activations.__all__
]
GATED = ("glu", "swiglu", "geglu", "reglu")
AXIS_OPS = ("softmax", "log_softmax", "sparsemax", *GATED)


def _x(shape=(6, 8), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(dtype)


@pytest.mark.parametrize("name,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_every_function_gives_a_tensor_back(name, kwargs):
    x = _x()
    y = getattr(gpuact, name)(x, **kwargs)
    assert isinstance(y, torch.Tensor) and y.device == x.device and y.dtype == x.dtype
    want = getattr(gpuact, name)(x.numpy(), **kwargs)
    np.testing.assert_array_equal(y.numpy(), want)
    if name not in GATED:
        dx = getattr(gpuact.backward, name)(torch.ones_like(x), x, **kwargs)
        assert isinstance(dx, torch.Tensor)
        np.testing.assert_array_equal(
            dx.numpy(), getattr(gpuact.backward, name)(np.ones(x.shape, np.float32), x.numpy(), **kwargs)
        )


def test_zero_copy_in_out_and_in_place():
    x = _x()
    ptr = x.data_ptr()
    out = torch.empty_like(x)
    assert gpuact.sigmoid(x, out=out) is out and out.data_ptr() != ptr
    np.testing.assert_allclose(out.numpy(), torch.sigmoid(x).numpy(), rtol=1e-6)
    assert gpuact.relu(x, out=x) is x and x.data_ptr() == ptr and (x >= 0).all()
    view = _x()[:, ::2]  # non-contiguous: computed like the NumPy view
    np.testing.assert_array_equal(gpuact.tanh(view).numpy(), gpuact.tanh(view.numpy()))
    result = gpuact.gelu(x)
    assert result.data_ptr() != ptr  # a new tensor, sharing memory with the NumPy result (from_dlpack)


def test_bfloat16_is_computed_in_float32_and_returned_as_bfloat16():
    x = _x(dtype=torch.bfloat16)
    y = gpuact.gelu(x)
    assert y.dtype == torch.bfloat16
    assert (y == gpuact.gelu(x.float()).to(torch.bfloat16)).all()  # float32, rounded once
    out = torch.empty_like(x)
    assert gpuact.softmax(x, out=out) is out
    assert torch.allclose(out.float(), torch.softmax(x.float(), -1), atol=1e-2)
    dx = gpuact.backward.silu(torch.ones_like(x), x)
    assert dx.dtype == torch.bfloat16


def test_a_tensor_that_requires_grad_points_to_gpuact_torch():
    x = _x().requires_grad_(True)
    with pytest.raises(TypeError, match="gpuact.torch"):
        gpuact.relu(x)
    with pytest.raises(TypeError, match="gpuact.torch"):
        gpuact.softmax(x)
    assert isinstance(gpuact.relu(x.detach()), torch.Tensor)


# ---- autograd ----------------------------------------------------------------------------------------

KINKS = {
    "relu": [0.0],
    "relu6": [0.0, 6.0],
    "leaky_relu": [0.0],
    "hard_sigmoid": [-3.0, 3.0],
    "hard_silu": [-3.0, 3.0],
    "hard_swish": [-3.0, 3.0],
    "hard_tanh": [-1.0, 1.0],
    "hard_shrink": [-0.5, 0.5],
    "soft_shrink": [-0.5, 0.5],
    "threshold": [0.5],
    "sparse_sigmoid": [-1.0, 1.0],
    "sparse_plus": [-1.0, 1.0],
    "squareplus": [],
    "elu": [0.0],
    "selu": [0.0],
    "celu": [0.0],
}


def _away_from_kinks(name, x):
    for k in KINKS.get(name, []):
        x = torch.where((x - k).abs() < 0.05, x + 0.1, x)
    return x


@pytest.mark.parametrize("name,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_gradcheck(name, kwargs):
    x = _away_from_kinks(name, _x((4, 6), torch.float64, seed=1)).requires_grad_(True)
    fn = getattr(gt, name)
    assert torch.autograd.gradcheck(lambda a: fn(a, **kwargs), (x,))
    if name not in ("sparsemax", *GATED):
        b = _x((6,), torch.float64, seed=2).mul(0.01).requires_grad_(True)  # small: stays off the kinks
        assert torch.autograd.gradcheck(lambda a, c: fn(a, bias=c, **kwargs), (x, b))


PARITY = {
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "elu": torch.nn.functional.elu,
    "selu": torch.selu,
    "softplus": torch.nn.functional.softplus,
    "softmax": lambda x: torch.softmax(x, -1),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "mish": torch.nn.functional.mish,
    "hard_tanh": torch.nn.functional.hardtanh,
    "hard_sigmoid": torch.nn.functional.hardsigmoid,
}


@pytest.mark.parametrize("name", list(PARITY))
def test_values_and_gradients_match_torch_where_the_semantics_agree(name):
    # softplus: PyTorch's switches to x above 20; the inputs stay below
    x = _away_from_kinks(name, _x((5, 9), seed=3).clamp(-15, 15))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = getattr(gt, name)(a), PARITY[name](b)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    w = _x((5, 9), seed=4)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_bias_gets_its_gradient_and_the_layer_trains():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), gt.Activation("gelu"), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first
    x = _x((3, 4)).requires_grad_(True)
    b = torch.zeros(4, requires_grad=True)
    gt.silu(x, bias=b).sum().backward()
    torch.testing.assert_close(b.grad, x.grad.sum(0))


def test_plain_arrays_are_refused_by_gpuact_torch():
    with pytest.raises(TypeError, match="torch.Tensor"):
        gt.relu(np.ones(3, np.float32))


@pytest.mark.gpu
def test_cuda_tensors():
    from tests.conftest import skip_unless_usable

    skip_unless_usable("cupy")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    x = _x().cuda()
    for name in ("gelu", "softmax", "relu"):
        y = getattr(gpuact, name)(x)
        assert y.is_cuda and y.device == x.device
        torch.testing.assert_close(y.cpu(), getattr(gpuact, name)(x.cpu()), rtol=1e-5, atol=1e-6)
    a = x.clone().requires_grad_(True)
    gt.gelu(a).sum().backward()
    torch.testing.assert_close(a.grad.cpu(), gpuact.backward.gelu(torch.ones(x.shape), x.cpu()), rtol=1e-5, atol=1e-6)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = gpuact.silu(x)
    stream.synchronize()
    torch.testing.assert_close(y.cpu(), gpuact.silu(x.cpu()), rtol=1e-5, atol=1e-6)
    assert not math.isnan(float(y.sum()))


def test_the_kernels_read_and_write_the_tensors_memory(monkeypatch):
    # zero-copy both ways: the NumPy path gets the tensor's own buffer, and the tensor returned is
    # the NumPy path's result buffer
    from gpuact.backends import numpy_backend

    seen = {}
    real = numpy_backend.elementwise

    def recording(op, x, *args, **kwargs):
        y = real(op, x, *args, **kwargs)
        seen["x"], seen["y"] = x.__array_interface__["data"][0], y.__array_interface__["data"][0]
        return y

    monkeypatch.setattr(numpy_backend, "elementwise", recording)
    x = _x((64, 64))
    y = gpuact.silu(x)
    assert seen["x"] == x.data_ptr() and seen["y"] == y.data_ptr()


@pytest.mark.parametrize("alpha_dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_prelu_layer_takes_a_tensor_alpha(alpha_dtype):
    # the slopes as a tensor, as a PyTorch user has them (a bfloat16 one included): the layer's
    # forward and backward against the definition, the result a tensor of x's dtype
    from gpuact.layers import PReLU

    x = _x((5, 4))
    alpha = torch.tensor([0.0, 0.25, -0.5, 2.0]).to(alpha_dtype)
    layer = PReLU(alpha)
    slopes = alpha.to(torch.float64)
    want = torch.where(x > 0, x.double(), slopes * x.double())
    y = layer(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), want, rtol=1e-6, atol=1e-7)
    dx = layer.backward(torch.ones_like(x), x)
    torch.testing.assert_close(dx.double(), torch.where(x > 0, 1.0, slopes.expand_as(x)).double(), rtol=0, atol=0)
    with pytest.raises(TypeError, match="real numbers"):
        PReLU(torch.zeros(4, dtype=torch.complex64))
