"""gpuact under torch.compile and CUDA graphs: a model using every family compiles whole
(``fullgraph=True``, no graph break) and trains like eager; plain ``gpuact.<name>`` on a tensor
runs eagerly at a graph break rather than crashing Dynamo; the benchmark's compiled-model row.

torch.compile is slow on 2 cores, so each test compiles one small model once: with ``aot_eager``
(Dynamo and AOTAutograd, which trace the operators' fake kernels and autograd formulas, without
Inductor's C++ build), and Inductor once, marked slow. The GPU tests (CUDA-graph capture and
replay of a training step, a compiled model on CUDA) are skipped with the reason where no GPU is
usable or torch has no CUDA."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import gpuact

torch = pytest.importorskip("torch")
from torch._dynamo.utils import counters  # noqa: E402

import gpuact.torch as gt  # noqa: E402


class EveryFamily(torch.nn.Module):
    """Elementwise (with and without bias, with parameters), softmax, log_softmax, the gated units
    and sparsemax, through both the functions and the Activation layer."""

    def __init__(self, units=8):
        super().__init__()
        self.inp = torch.nn.Linear(units, units)
        self.bias = torch.nn.Parameter(torch.linspace(-0.1, 0.1, units))
        self.act = gt.Activation("gelu", approximate=True)
        self.out = torch.nn.Linear(units // 2, 1)

    def forward(self, x):
        h = self.act(self.inp(x))
        h = gt.silu(h, bias=self.bias)
        h = gt.relu(h, negative_slope=0.1, max_value=6.0) + gt.elu(h, 0.5, bias=0.25)
        h = gt.softmax(h, bias=self.bias) + gt.log_softmax(h, axis=0)
        h = gt.glu(h) + gt.swiglu(h) + gt.geglu(h, approximate=True)
        return self.out(gt.sparsemax(h) + h)


def _compile(model, backend, **kwargs):
    torch._dynamo.reset()
    counters.clear()
    return torch.compile(model, fullgraph=True, backend=backend, **kwargs)


def _graph_breaks() -> int:
    return sum(counters["graph_break"].values())


def _train_like_eager(model, compiled, inputs):
    """Forward and backward of ``compiled`` on each input against eager ``model``'s twin."""
    eager = copy.deepcopy(model)
    for x in inputs:
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = compiled(xa), eager(xb)
        torch.testing.assert_close(ya, yb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)
        for pa, pb in zip(model.parameters(), eager.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad)


def test_every_family_compiles_whole_and_trains_like_eager():
    torch.manual_seed(0)
    model = EveryFamily()
    compiled = _compile(model, "aot_eager", dynamic=False)
    _train_like_eager(model, compiled, [torch.randn(5, 8), torch.randn(5, 8)])
    assert _graph_breaks() == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1


def test_dynamic_shapes_compile_whole():
    # the fake kernels with symbolic sizes (glu halves a symbolic length)
    torch.manual_seed(1)
    model = EveryFamily()
    compiled = _compile(model, "aot_eager", dynamic=True)
    _train_like_eager(model, compiled, [torch.randn(3, 8), torch.randn(7, 8)])
    assert _graph_breaks() == 0, dict(counters["graph_break"])


def test_the_explained_graph_has_the_gpuact_operators_and_no_break():
    explanation = torch._dynamo.explain(EveryFamily())(torch.randn(5, 8))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    targets = {str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert {"gpuact.elementwise", "gpuact.softmax", "gpuact.glu", "gpuact.sparsemax"} <= targets


@pytest.mark.slow
def test_inductor_compiles_a_model_with_gpuact_gelu():
    # the default backend, as users call it: Linear -> gelu -> Linear
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), gt.Activation("gelu"), torch.nn.Linear(4, 1))
    compiled = _compile(model, "inductor")
    _train_like_eager(model, compiled, [torch.randn(3, 4)])
    assert _graph_breaks() == 0, dict(counters["graph_break"])


def f_plain(x):
    return gpuact.gelu(x) * 2 + gpuact.softmax(x, axis=0)


def test_plain_gpuact_on_a_tensor_runs_eagerly_at_a_graph_break():
    # Dynamo crashed on the DLPack device enum; the call is now left out of the graph
    x = torch.randn(3, 4)
    torch._dynamo.reset()
    compiled = torch.compile(f_plain, backend="eager")
    torch.testing.assert_close(compiled(x), f_plain(x))
    torch.testing.assert_close(compiled(x + 1), f_plain(x + 1))


def test_plain_gpuact_under_fullgraph_says_why_it_breaks():
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported, match="gpuact.torch"):
        torch.compile(f_plain, backend="eager", fullgraph=True)(torch.randn(3, 4))


def test_the_benchmarks_compiled_model_row(monkeypatch):
    from gpuact.bench import cases as C
    from gpuact.bench import impls

    monkeypatch.setattr(impls, "COMPILE_BACKEND", "aot_eager")
    (case,) = C.build_training_cases((C.MODEL_OP,), ("float32",), (2**10,), bias=False)
    assert case.op == "linear-gelu-linear:grad" and case.shape == (4, C.MODEL_UNITS)
    assert C.build_cases((C.MODEL_OP,)) == []  # a training row only
    used, statuses = impls.discover(["numpy", "torch", "gpuact-torch"], devices=("cpu",))
    by_name = {impl.backend: impl for impl in used}
    assert "compiled-model row" in by_name["numpy"].unsupported(case)
    a = C.make_case_input(case)
    for name in C.MODEL_BACKENDS:
        impl = by_name[name]
        assert impl.unsupported(case) is None
        torch._dynamo.reset()
        got = impl.to_array(impl.function(case)(impl.wrap(a)))
        ok, msg = C.compare(case, got, a, impl.gpuact)
        assert ok, f"{name}: {msg}"
    # the float64 reference is the model's: perturbing a weight's use would show
    assert not np.allclose(C.reference(case.op, a), C.reference("gelu:grad", a))


def test_the_benchmarks_torch_compile_peer(monkeypatch):
    # opt-in (not in the default run); forward and gradient rows in float32 and bfloat16, each
    # checked against the float64 reference as every row is; the bias and model rows are refused
    from gpuact.bench import cases as C
    from gpuact.bench import impls

    monkeypatch.setattr(impls, "COMPILE_BACKEND", "aot_eager")
    _, statuses = impls.discover(None, devices=("cpu",))
    assert any(s.backend == "torch-compile" and not s.used and "opt-in" in s.reason for s in statuses)
    (impl,) = impls.discover(["torch-compile"], devices=("cpu",))[0]
    # a row per size recompiles: Dynamo's default limit (8) would time the larger sizes eagerly
    assert torch._dynamo.config.recompile_limit >= 1024
    pytest.importorskip("ml_dtypes")
    cases = C.build_cases(("swiglu", "gelu"), ("float32", "bfloat16"), (2**14,), rows=(32,))
    cases += C.build_training_cases(
        ("swiglu", "gelu", "softmax"), ("float32", "bfloat16"), (2**14,), rows=(32,), axes=(-1,), bias=False
    )
    assert {c.op for c in cases} >= {"swiglu", "gelu:grad", "softmax:grad"}
    for case in cases:
        assert impl.unsupported(case) is None
        a = C.make_case_input(case)
        torch._dynamo.reset()
        got = impl.to_array(impl.function(case)(impl.wrap(a)))
        ok, msg = C.compare(case, got, a, impl.gpuact)
        assert ok, f"{case.op} {case.dtype}: {msg}"
    bias_cases = [c for c in C.build_training_cases(("gelu",), ("float32",), (2**14,)) if C.is_bias(c.op)]
    assert bias_cases and all("bias" in impl.unsupported(c) for c in bias_cases)


# ---- GPU ---------------------------------------------------------------------------------------------


def _cuda():
    from tests.conftest import skip_unless_usable

    skip_unless_usable("cupy")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA (or sees no GPU)")
    return torch.device("cuda")


@pytest.mark.gpu
def test_cuda_graph_captures_and_replays_a_training_step():
    device = _cuda()
    torch.manual_seed(3)
    # every family, a number bias (made on the device by a fill kernel) and glu's CuPy temporaries
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), gt.Activation("gelu"), torch.nn.Linear(32, 32), gt.Activation("glu")
    ).to(device)
    loss_fn = torch.nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    static_x, static_y = torch.randn(8, 16, device=device), torch.randn(8, 16, device=device)

    def loss_of(net, x, y):
        h = gt.silu(net(x), bias=0.5)
        return loss_fn(gt.softmax(h, axis=0) + gt.log_softmax(h) + gt.sparsemax(h), y)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = loss_of(model, static_x, static_y)
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream()  # warm-up (kernel compilation) off the capture, as PyTorch asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    for i in range(3):
        x, y = torch.randn(8, 16, device=device), torch.randn(8, 16, device=device)
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        ref_opt.zero_grad()
        want = loss_of(reference, x, y)
        want.backward()
        ref_opt.step()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, want, msg=f"replay {i}")
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, msg=f"replay {i}")


def test_cupys_allocations_in_the_operators_come_from_pytorch(monkeypatch):
    # the wiring only (the capture itself is the GPU test above): CuPy's allocator hook is given
    # functions that take PyTorch's caching allocator on its current stream
    import contextlib
    import sys
    import types

    made, calls = [], []

    class Allocator:
        def __init__(self, malloc, free):
            made.append((malloc, free))
            self.malloc = "torch's"

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(
        memory=types.SimpleNamespace(PythonFunctionAllocator=Allocator),
        using_allocator=lambda allocator: calls.append(allocator) or contextlib.nullcontext(),
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(gt, "_ALLOCATOR", [])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "caching_allocator_alloc", lambda *args: ("alloc", *args))
    monkeypatch.setattr(torch.cuda, "caching_allocator_delete", lambda *args: calls.append(("delete", *args)))
    cuda_tensor = types.SimpleNamespace(is_cuda=True)
    with gt._gpuact_memory(cuda_tensor):
        pass
    ((malloc, free),) = made
    assert calls == ["torch's"]
    assert malloc(256, 1) == ("alloc", 256, 1, "stream of 1")
    free(1234, 1)
    assert calls[-1] == ("delete", 1234)
    assert isinstance(gt._gpuact_memory(torch.ones(1)), contextlib.nullcontext)


@pytest.mark.gpu
@pytest.mark.slow
def test_a_model_using_every_family_compiles_on_cuda():
    device = _cuda()
    torch.manual_seed(4)
    model = EveryFamily().to(device)
    compiled = _compile(model, "inductor")
    _train_like_eager(model, compiled, [torch.randn(5, 8, device=device)])
    assert _graph_breaks() == 0, dict(counters["graph_break"])
