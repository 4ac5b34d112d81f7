"""A stand-in for ``cupy.ElementwiseKernel`` on NumPy arrays, running the kernel's own ``operation``
and ``preamble`` (kernels/gpuact_math.cuh, gpuact_grad.cuh) compiled with g++.

Every ElementwiseKernel spec the CuPy backend builds (``all_specs``) is compiled into one library,
one loop per spec over the flat broadcast elements. As in CuPy's generated code, each array
argument is seen by the operation under its parameter name with its own dtype (here a value read
at run time from its dtype, exactly, and cast by the operation), a scalar parameter has the C
type of its declared dtype, and an output is assigned a value of its placeholder type (rounded
to the output's dtype once, as ``Y(value)`` does). CuPy's typing rules are checked on each call:
a placeholder is bound by the arrays that use it, all of one dtype; a declared scalar gets a
NumPy scalar of exactly its dtype; the inputs broadcast to the outputs' shape.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
from pathlib import Path

import numpy as np

from gpuact import _kernel_sources as ks
from gpuact._contract.ops import ELEMENTWISE_OPS, GATES
from tests.cuda_shim import gpuact_cuda_build as build

# dtype -> (kind code in the C++ runtime below, its C type)
_KINDS = {
    np.dtype(t): (k, c)
    for k, (t, c) in enumerate(
        [
            (np.float16, "_Float16"),
            (np.float32, "float"),
            (np.float64, "double"),
            (np.int8, "signed char"),
            (np.int16, "short"),
            (np.int32, "int"),
            (np.int64, "long long"),
            (np.uint8, "unsigned char"),
            (np.uint16, "unsigned short"),
            (np.uint32, "unsigned int"),
            (np.uint64, "unsigned long long"),
            (np.bool_, "bool"),
        ]
    )
}
_FIXED = {"float16": "_Float16", "float32": "float", "float64": "double", "int32": "int", "int64": "long long"}

_RUNTIME = (
    r"""
#include <cstdint>
namespace ek {
struct Arr { void* data; int kind; };
// an input element, exact as a double (the tests' integers stay below 2**53)
struct Num {
    double v;
    template <typename T> explicit operator T() const { return (T)v; }
};
template <typename T> inline double at(const Arr& a, long long i) { return (double)static_cast<const T*>(a.data)[i]; }
inline Num get(const Arr& a, long long i) {
    switch (a.kind) {
"""
    + "".join(f"    case {k}: return Num{{at<{c}>(a, i)}};\n" for k, c in _KINDS.values())
    + r"""    }
    return Num{0.0};
}
// the operation's "(Y)(value)": the value held exactly (a float or a double), rounded once on assignment
struct Val {
    double v;
    Val(double d) : v(d) {}
    Val(float f) : v(f) {}
};
template <typename T> inline void put(const Arr& a, long long i, double v) { static_cast<T*>(a.data)[i] = (T)v; }
struct Ref {
    Arr a;
    long long i;
    Ref& operator=(const Val& y) {
        switch (a.kind) {
"""
    + "".join(f"        case {k}: put<{c}>(a, i, y.v); break;\n" for k, c in _KINDS.values())
    + r"""        }
        return *this;
    }
};
}  // namespace ek
"""
)


def _parse(params: str) -> list[tuple[str, str]]:
    return [tuple(p.split()) for p in params.split(",")] if params.strip() else []


def key(in_params: str, out_params: str, operation: str) -> str:
    return hashlib.sha256(f"{in_params}\0{out_params}\0{operation}".encode()).hexdigest()[:16]


def all_specs() -> list[dict]:
    """Every ElementwiseKernel spec the CuPy backend can build."""
    specs = []
    for compute in (np.float32, np.float64):
        for op in ELEMENTWISE_OPS:
            specs.append(ks.ew_kernel_spec(op, compute))
            specs += [ks.ew_training_spec(kind, op, compute) for kind in ks.VEC_TRAINING_KINDS]
        specs += [ks.glu_grad_spec(compute, gate) for gate in GATES] + [ks.prelu_grad_spec(compute)]
    return specs


def _function(spec: dict) -> str:
    ins, outs = _parse(spec["in_params"]), _parse(spec["out_params"])
    symbol = f"ek_{key(spec['in_params'], spec['out_params'], spec['operation'])}"
    lines = [f'extern "C" void {symbol}(const ek::Arr* in, const ek::Arr* out, const double* sc, long long n) {{']
    placeholders = {t for t, _ in ins + outs if t not in _FIXED}
    out_types = {t for t, _ in outs}
    assert not out_types & {t for t, _ in ins}, "a placeholder shared by an input and an output"
    for t in sorted(placeholders):
        lines.append(f"    typedef {'ek::Val' if t in out_types else 'ek::Num'} {t};")
    lines.append("    for (long long _i = 0; _i < n; ++_i) {")
    a = s = 0
    for t, name in ins:
        if t in _FIXED:
            lines.append(f"        const {_FIXED[t]} {name} = ({_FIXED[t]})sc[{s}];")
            s += 1
        else:
            lines.append(f"        const ek::Num {name} = ek::get(in[{a}], _i);")
            a += 1
    for k, (_t, name) in enumerate(outs):
        lines.append(f"        ek::Ref {name}{{out[{k}], _i}};")
    lines += [f"        {spec['operation']};", "    }", "}"]
    return "\n".join(lines) + "\n"


@functools.cache
def library(build_dir: Path) -> ctypes.CDLL:
    specs = all_specs()
    preambles = list(dict.fromkeys(s["preamble"] for s in specs))
    source = _RUNTIME + "".join(preambles) + "".join(_function(s) for s in specs)
    so = build.build_shared(source, Path(build_dir), std="c++20", extra=("-O1",))
    return ctypes.CDLL(str(so))


class ElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=...)`` on NumPy arrays."""

    calls: list = []
    build_dir: Path | None = None

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **_options):
        self.ins, self.outs = _parse(in_params), _parse(out_params)
        self.name = name
        self.symbol = f"ek_{key(in_params, out_params, operation)}"
        self.fn = getattr(library(ElementwiseKernel.build_dir), self.symbol)  # AttributeError: a spec not built
        self.fn.restype = None

    def __call__(self, *args):
        assert len(args) == len(self.ins) + len(self.outs), f"{self.name}: the backend passes every output"
        bound: dict[str, np.dtype] = {}
        arrays, scalars = [], []
        for (t, pname), arg in zip(self.ins + self.outs, args):
            if t in _FIXED:
                assert type(arg) is np.dtype(t).type, f"{self.name} {pname}: {type(arg)} for a {t} parameter"
                scalars.append(float(arg))
                continue
            assert isinstance(arg, np.ndarray), f"{self.name} {pname}: {type(arg)} for placeholder {t}"
            if t in bound:
                assert bound[t] == arg.dtype, f"{self.name}: {t} is both {bound[t]} and {arg.dtype}"
            bound[t] = arg.dtype
            arrays.append(arg)
        n_in = sum(1 for t, _ in self.ins if t not in _FIXED)
        outs = arrays[n_in:]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        assert all(o.shape == shape for o in outs), f"{self.name}: outputs {[o.shape for o in outs]}, shape {shape}"
        ins = [np.ascontiguousarray(np.broadcast_to(a, shape)) for a in arrays[:n_in]]
        tmps = [np.empty(shape, o.dtype) for o in outs]
        Arr = _Arr
        in_arr = (Arr * max(1, len(ins)))(*[Arr(a.ctypes.data, _KINDS[a.dtype][0]) for a in ins])
        out_arr = (Arr * len(tmps))(*[Arr(a.ctypes.data, _KINDS[a.dtype][0]) for a in tmps])
        sc = (ctypes.c_double * max(1, len(scalars)))(*scalars)
        self.fn(in_arr, out_arr, sc, ctypes.c_longlong(int(np.prod(shape))))
        ElementwiseKernel.calls.append(self.name)
        for o, t in zip(outs, tmps):
            o[...] = t
        return outs[0] if len(outs) == 1 else tuple(outs)


class _Arr(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("kind", ctypes.c_int)]
