"""The call path's shape (docs/development.rst, "How a call flows").

* No module of ``gpuact/`` is in an import cycle (the import graph, read statically by grimp, the
  library under import-linter).
* A call goes down the layers: followed at run time through every branch its input kinds take,
  no gpuact function ever calls a function of a layer above its own, and within the wrappers'
  layer the chain runs one way (Dask, then masked, then foreign). ``lint-imports`` checks the same
  layers statically in CI; this checks what static imports cannot see (callbacks handed down, and
  modules reached through ``sys.modules``).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import gpuact

grimp = pytest.importorskip("grimp")

# the layers, top first, by module-name prefix
LAYERS = (
    ("gpuact", "gpuact.activations", "gpuact.backward", "gpuact.layers", "gpuact.registry", "gpuact.torch")
    + ("gpuact.jax", "gpuact.bench"),
    ("gpuact._entry",),
    ("gpuact._wrappers",),
    ("gpuact._core",),
    ("gpuact.backends", "gpuact._kernel_sources"),
    ("gpuact._contract", "gpuact._typing"),
)
WRAPPER_CHAIN = ("gpuact._wrappers.dask", "gpuact._wrappers.masked", "gpuact._wrappers.foreign")


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or (p != "gpuact" and module.startswith(p + ".")) for p in prefixes):
            return index
    return None


def test_no_module_is_in_an_import_cycle():
    graph = grimp.build_graph("gpuact")
    edges = {m: graph.find_modules_directly_imported_by(m) - {m} for m in graph.modules}
    cycles = _strongly_connected(edges)
    assert not cycles, f"import cycles in gpuact: {cycles}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative, so deep graphs do not recurse)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def _gpuact_module(frame):
    name = frame.f_globals.get("__name__", "")
    return name if name == "gpuact" or name.startswith("gpuact.") else None


def _trace_calls(fn):
    """Every call from one gpuact function into another (through any library in between):
    ``(caller module, callee module)`` pairs, in order."""
    pairs = []

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = _gpuact_module(frame)
        if callee is None:
            return
        caller_frame = frame.f_back
        while caller_frame is not None and _gpuact_module(caller_frame) is None:
            caller_frame = caller_frame.f_back
        if caller_frame is not None:
            pairs.append((_gpuact_module(caller_frame), callee))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return pairs


def _upward_calls(pairs):
    bad = []
    for caller, callee in pairs:
        a, b = layer_of(caller), layer_of(callee)
        if a is None or b is None:
            bad.append(f"{caller if a is None else callee} is in no layer")
            continue
        if caller == callee:
            continue
        if b < a:
            bad.append(f"{caller} -> {callee} (up a layer)")
        elif a == b == 2 and WRAPPER_CHAIN.index(callee) < WRAPPER_CHAIN.index(caller):
            bad.append(f"{caller} -> {callee} (back up the wrapper chain)")
    return bad


def _inputs():
    # past relu's small-array shortcut (np.maximum straight from gpuact.relu), so the path is taken
    x = np.linspace(-2, 2, 4 << 15, dtype=np.float32).reshape(4, 1 << 15)
    cases = {
        "ndarray": lambda: gpuact.relu(x),
        "out": lambda: gpuact.relu(x, out=np.empty_like(x)),
        "out is x": lambda: (lambda y: gpuact.relu(y, out=y))(x.copy()),
        "int": lambda: gpuact.relu(np.arange(-3, 3)),
        "list": lambda: gpuact.relu([-1.0, 2.0]),
        "float16 bias": lambda: gpuact.relu(x.astype(np.float16), bias=np.ones(1 << 15, np.float32)),
        "strided": lambda: gpuact.relu(x[:, ::2]),
        "backend": lambda: gpuact.relu(x, backend="numpy"),
        "masked": lambda: gpuact.relu(np.ma.masked_array(x, mask=x < 0)),
        "subclass": lambda: gpuact.relu(x.view(type("Subclass", (np.ndarray,), {}))),
        "softmax": lambda: gpuact.softmax(x, axis=0),
        "masked softmax": lambda: gpuact.softmax(np.ma.masked_array(x, mask=x < 0), axis=0),
        "glu": lambda: gpuact.glu(x),
        "backward": lambda: gpuact.backward.relu(np.ones_like(x), x, bias=np.zeros(1 << 15, np.float32)),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        t = torch.from_numpy(x.copy())
        cases["torch"] = lambda: gpuact.relu(t)
        cases["torch bfloat16"] = lambda: gpuact.relu(t.to(torch.bfloat16))
        cases["torch out"] = lambda: gpuact.relu(x, out=torch.empty(4, 1 << 15))
    jnp = sys.modules.get("jax.numpy")
    if jnp is not None:
        cases["jax"] = lambda: gpuact.relu(jnp.asarray(x))
    da = sys.modules.get("dask.array")
    if da is not None:
        import dask

        def dask_case():
            with dask.config.set(scheduler="synchronous"):
                gpuact.relu(da.from_array(np.ma.masked_array(x, mask=x < 0), chunks=(2, 1 << 14))).compute()
                gpuact.log_softmax(da.from_array(x, chunks=(2, 1 << 14)), axis=1).compute()

        cases["dask"] = dask_case
    return cases


@pytest.fixture(scope="module", autouse=True)
def _load_optional_libraries():
    # the input kinds the environment offers (the cases above are looked up in sys.modules)
    for name in ("torch", "jax.numpy", "dask.array"):
        try:
            __import__(name)
        except ImportError:
            pass


def test_calls_only_go_down_the_layers():
    problems = {}
    cases = _inputs()
    for name, fn in cases.items():
        fn()  # once untraced, so first-use loading (backends, kernels) is not what is traced
        pairs = _trace_calls(fn)
        assert pairs, f"{name}: no gpuact call was traced"
        bad = _upward_calls(pairs)
        if bad:
            problems[name] = sorted(set(bad))
    assert not problems, problems
    assert len(cases) >= 14


def test_an_upward_call_is_caught():
    assert _upward_calls([("gpuact._wrappers.masked", "gpuact._entry")])
    assert _upward_calls([("gpuact._wrappers.foreign", "gpuact._wrappers.masked")])
    assert _upward_calls([("gpuact._core", "gpuact._somewhere_new")])
    assert not _upward_calls([("gpuact._wrappers.dask", "gpuact._wrappers.foreign"), ("gpuact._core", "gpuact._core")])
