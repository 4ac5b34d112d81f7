"""Every CUDA source of the CuPy backend compiles, without a GPU, for sm_80 and sm_90, through
NVRTC (the compiler CuPy uses at run time) and through nvcc, with ptxas's resource report:

* the vectorised elementwise RawKernels, every op, float16 / float32 / float64;
* the code CuPy's ElementwiseKernel generates from the same math (every op and dtype);
* the fused softmax and sparsemax kernels of kernels/gpuact_softmax.cu and gpuact_sparsemax.cu,
  from the wrappers gpuact._kernel_sources generates (the backend compiles each on its own, on
  first use; here one unit per dtype holds them all, to keep CI time low).

Registers, spills, stack and shared memory of every kernel go to a JSON file under the test's
temporary directory (path printed; ``pytest -s`` shows the table). Any spill fails the test, and
so does any double-precision instruction in float16/float32 code (ptxas
--warn-on-double-precision-use), and so does a fused kernel whose static shared memory is not
what the plans count for its opt-in.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gpuact import _kernel_sources as ks  # noqa: E402
from gpuact._contract.ops import ELEMENTWISE_OPS, GATES  # noqa: E402
from tests.cuda_shim import gpuact_cuda_build as build

ARCHS = (80, 90)
TAGS = ("f16", "bf16", "f32", "f64")
# the ElementwiseKernel (strided) units: CuPy types their arrays itself, and takes no bfloat16 here
EK_TAGS = ("f16", "f32", "f64")
DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64}
DOUBLE_WARN = "--warn-on-double-precision-use"


pytestmark = pytest.mark.cpu_proxy


def _have_nvrtc() -> str | None:
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # no cupy, or no libnvrtc
        return f"NVRTC is not usable: {exc}"
    return None


# ---------------------------------------------------------------------------------------------
# The translation units: one per (family, dtype), all ops together, to keep CI time low.


def vec_unit(tag: str) -> str:
    """Every op's vector kernel, and its in-place variant (plain loads: see ks.INPLACE_SUFFIX)."""
    return ks.vec_headers() + "".join(
        ks.vec_kernel_code(op, tag, inplace) for op in ELEMENTWISE_OPS for inplace in (False, True)
    )


def _cupy_headers(for_nvcc: bool) -> tuple[str, tuple[str, ...]]:
    """CuPy's own prelude for ElementwiseKernel code and its include options."""
    from cupy._core import core

    prelude = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
    # included once at file scope, so that the copies inside the per-op namespaces are no-ops
    prelude += '#include "cupy/float16.cuh"\n' + ks.read(ks.MATH_HEADER) + ks.read(ks.GRAD_HEADER)
    options = tuple(o for o in core.assemble_cupy_compiler_options(()) if not o.startswith("--std"))
    if for_nvcc:
        # NVRTC gets exactly what CuPy gives it at run time. nvcc brings its own toolkit headers,
        # which must match it: keep CuPy's own include folders only (CuPy may point at a pip CUDA
        # 12 runtime while the nvcc on PATH is CUDA 13).
        cupy_root = os.path.dirname(core.__file__)
        options = tuple(o for o in options if o.startswith("-I") and o[2:].startswith(cupy_root))
    return prelude, options


def _ek_code(op: str, dtype) -> str:
    """The source CuPy's ElementwiseKernel generates for ``op`` on a 2-D strided ``dtype`` array."""
    dt = np.dtype(dtype)
    compute = np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)
    return _ek_spec_code(ks.ew_kernel_spec(op, compute), dt, compute)


def _ek_spec_code(spec: dict, dt: np.dtype, compute: np.dtype) -> str:
    """The source CuPy's ElementwiseKernel generates for ``spec`` with every array argument a 2-D
    strided ``dt`` array and every scalar one of its declared (compute) dtype.

    Taken from CuPy's own code generator (a private function: if its signature ever changes,
    the equivalent code is written out here instead, to the same template).
    """
    import cupy
    import cupy._core._kernel as _k

    kernel = cupy.ElementwiseKernel(**spec)
    ins = [p.split() for p in spec["in_params"].split(",")]
    outs = [p.split() for p in spec["out_params"].split(",")]
    in_types = tuple(None if t == compute.name else dt for t, _ in ins)
    try:
        from cupy._core import _carray, _scalar

        # scalars are typed None, as ElementwiseKernel.__call__ does: only arrays fix placeholders
        _, _, type_map = kernel._decide_params_type(in_types, (dt,) * len(outs))
        array = _k._ArgInfo(1, cupy.ndarray, dt, 2, False, False)
        scalar = _k._ArgInfo(3, _scalar.CScalar, compute, 0, True, False)
        args = (
            tuple(scalar if t is None else array for t in in_types)
            + (array,) * len(outs)
            + (_k._ArgInfo(2, _carray.Indexer, None, 2, True, False),)
        )
        return _k._get_elementwise_kernel_code(
            args, type_map, kernel.params, kernel.operation, kernel.name, kernel.preamble
        )
    except KeyError:  # a placeholder CuPy cannot type at run time (the bug this guards against)
        raise
    except Exception:  # pragma: no cover - CuPy internals moved: the same code, by hand
        ct = {"float16": "float16", "float32": "float", "float64": "double"}[dt.name]
        cc = {"float32": "float", "float64": "double"}[compute.name]
        placeholders = sorted({t for t, _ in ins + outs if t != compute.name})
        params = (
            [f"const {cc} {n}" if t == compute.name else f"const CArray<{ct}, 2, 0, 0> _raw_{n}" for t, n in ins]
            + [f"CArray<{ct}, 2, 0, 0> _raw_{n}" for _, n in outs]
            + ["CIndexer<2, 0> _ind"]
        )
        refs = [f"const {t} &{n} = _raw_{n}[_ind.get()];" for t, n in ins if t != compute.name] + [
            f"{t} &{n} = _raw_{n}[_ind.get()];" for t, n in outs
        ]
        return (
            '#include "cupy/float16.cuh"\n'
            + "".join(f"typedef {ct} {t};\n" for t in placeholders)
            + spec["preamble"]
            + f'extern "C" __global__ void {spec["name"]}({", ".join(params)}) {{\n'
            f"  CUPY_FOR(i, _ind.size()) {{ _ind.set(i); {' '.join(refs)} {spec['operation']}; }}\n}}\n"
        )


def ek_unit(tag: str, for_nvcc: bool = False) -> tuple[str, tuple[str, ...]]:
    prelude, options = _cupy_headers(for_nvcc)
    parts = [prelude]
    for op in ELEMENTWISE_OPS:
        # each generated kernel declares typedefs at file scope: a namespace apiece keeps them apart
        parts.append(f"namespace gpuact_ek_{op} {{\n{_ek_code(op, DTYPES[tag])}\n}}\n")
    return "".join(parts), options


def ek_training_specs(compute) -> dict[str, dict]:
    """Every training ElementwiseKernel spec of one compute dtype, by a name unique in a unit."""
    specs = {
        f"{kind}_{op}": ks.ew_training_spec(kind, op, compute)
        for op in ELEMENTWISE_OPS
        for kind in ks.VEC_TRAINING_KINDS
    }
    for gate in GATES:
        specs[f"{gate}_grad"] = ks.glu_grad_spec(compute, gate)
    specs["prelu_grad"] = ks.prelu_grad_spec(compute)
    return specs


def ek_training_unit(tag: str, for_nvcc: bool = False) -> tuple[str, tuple[str, ...]]:
    prelude, options = _cupy_headers(for_nvcc)
    dt, compute = np.dtype(DTYPES[tag]), ks.COMPUTE_DTYPE[tag]
    parts = [prelude] + [
        f"namespace gpuact_ekt_{name} {{\n{_ek_spec_code(spec, dt, compute)}\n}}\n"
        for name, spec in ek_training_specs(compute).items()
    ]
    return "".join(parts), options


def vec_training_unit(tag: str) -> str:
    return ks.vec_training_headers() + "".join(
        ks.vec_training_code(kind, op, tag, btag, inplace)
        for kind, op, btag in ks.vec_training_variants(tag)
        for inplace in (False, True)
    )


# the fused kernels' units: name prefix -> groups (forward, backward)
FUSED_UNITS = {"fused": ("softmax", "sparsemax"), "fusedgrad": ("softmax_grad", "sparsemax_grad")}


def fused_names(prefix: str, tag: str) -> list[str]:
    return [n for g in FUSED_UNITS[prefix] for n in ks.group_kernel_names(g, tag)]


def _units():
    units = []
    for tag in TAGS:
        units.append((f"vec_{tag}", vec_unit(tag), (), tag != "f64"))
        units.append((f"vectraining_{tag}", vec_training_unit(tag), (), tag != "f64"))
        for prefix in FUSED_UNITS:
            units.append((f"{prefix}_{tag}", ks.fused_unit_source(fused_names(prefix, tag)), (), tag != "f64"))
    return units


def _ek_units(for_nvcc: bool):
    units = []
    for tag in EK_TAGS:
        for name, make in (("elementwise", ek_unit), ("ektraining", ek_training_unit)):
            src, opts = make(tag, for_nvcc)
            units.append((f"{name}_{tag}", src, opts if for_nvcc else opts + ("--std=c++17",), tag != "f64"))
    return units


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    table: dict = {}
    yield table
    path = tmp_path_factory.mktemp("gpuact_cuda_resources") / "resource_usage.json"
    path.write_text(json.dumps(table, indent=1, sort_keys=True))
    print(f"\n[gpuact] kernel resource usage written to {path}")
    for compiler in sorted(table):
        for key, kernels in sorted(table[compiler].items()):
            regs = [k["registers"] for k in kernels.values() if k["registers"] is not None]
            spills = sum(k["spill_stores"] + k["spill_loads"] for k in kernels.values())
            smem = max((k["smem"] for k in kernels.values()), default=0)
            print(
                f"  {compiler:6s} {key:20s} kernels={len(kernels):3d} registers {min(regs, default=0)}-"
                f"{max(regs, default=0)} spills={spills} max smem={smem}"
            )


def _check(name, compiler, arch, ok, log, no_double, report):
    assert ok, f"{compiler} failed on {name} for sm_{arch}:\n{log[-8000:]}"
    usage = build.parse_resource_usage(log)
    assert usage, f"no ptxas resource report from {compiler} for {name}:\n{log[-3000:]}"
    report.setdefault(compiler, {})[f"{name}_sm{arch}"] = usage
    spilled = {k: v for k, v in usage.items() if v["spill_stores"] or v["spill_loads"]}
    assert not spilled, f"{compiler} {name} sm_{arch}: kernels spill registers: {spilled}"
    if name.startswith("fused"):
        prefix, tag = name.split("_")
        assert set(usage) == set(fused_names(prefix, tag))
        smem = {k: (v["smem"], ks.fused_static_smem(k)) for k, v in usage.items()}
        assert all(a == b for a, b in smem.values()), f"static shared memory (ptxas, plans): {smem}"
    if no_double:
        warnings = build.double_warnings(log)
        assert not warnings, f"{compiler} {name} sm_{arch}: double precision in 16/32-bit code:\n" + "\n".join(
            warnings[:20]
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_every_kernel(arch, report):
    reason = _have_nvrtc()
    if reason:
        pytest.skip(reason)
    units = _units() + _ek_units(for_nvcc=False)

    def one(unit):
        name, src, opts, no_double = unit
        extra = tuple(opts) + ((f"-Xptxas={DOUBLE_WARN}",) if no_double else ())
        return unit, build.nvrtc_compile(src, arch, extra)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, units))
    for (name, _src, _opts, no_double), (ok, log) in results:
        _check(name, "nvrtc", arch, ok, log, no_double, report)


@pytest.mark.parametrize("arch", ARCHS)
def test_nvcc_compiles_every_kernel(arch, report, tmp_path):
    if build.nvcc() is None:
        pytest.skip("nvcc is not installed")
    reason = _have_nvrtc()  # only for CuPy's headers of the ElementwiseKernel code
    units = _units() + ([] if reason else _ek_units(for_nvcc=True))

    def one(unit):
        name, src, opts, no_double = unit
        extra = tuple(opts) + ((f"-Xptxas={DOUBLE_WARN}",) if no_double else ())
        return unit, build.nvcc_compile(src, arch, tmp_path, extra)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, units))
    for (name, _src, _opts, no_double), (ok, log) in results:
        _check(name, "nvcc", arch, ok, log, no_double, report)


def test_vectorised_kernels_use_16_byte_loads():
    """The contiguous kernels move 16 bytes per load and store (ld.global.nc.v4.f32, ...): the
    forward, and the training kernels for both dy and x. Their in-place variants (issue 21: the
    output is x or dy) load the same vectors without .nc: PTX allows the non-coherent read-only
    path only for data that no thread writes while the kernel runs."""
    reason = _have_nvrtc()
    if reason:
        pytest.skip(reason)
    from cupy.cuda import nvrtc

    sources = {
        "forward": lambda tag, inplace: ks.vec_source("silu", tag, inplace),
        "grad": lambda tag, inplace: ks.vec_training_source("grad", "silu", tag, None, inplace),
        "grad_bias": lambda tag, inplace: ks.vec_training_source("grad_bias", "silu", tag, tag, inplace),
        "bias": lambda tag, inplace: ks.vec_training_source("bias", "silu", tag, tag, inplace),
    }
    for tag, load, store in (
        ("f32", "ld.global.nc.v4.f32", "st.global.v4.f32"),
        ("f64", "ld.global.nc.v2.f64", "st.global.v2.f64"),
        ("f16", "ld.global.nc.v4.u32", "st.global.v4.u32"),
        ("bf16", "ld.global.nc.v4.u32", "st.global.v4.u32"),
    ):
        plain = load.replace(".nc", "")
        for kind, source in sources.items():
            for inplace in (False, True):
                prog = nvrtc.createProgram(source(tag, inplace), "v.cu", [], [])
                nvrtc.compileProgram(prog, ["-arch=compute_90"])
                ptx = nvrtc.getPTX(prog)
                ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
                # dy and x both in 16-byte vectors: two vector loads per unrolled step for a backward
                want = (2 if kind.startswith("grad") else 1) * 4
                what = f"{tag} {kind}{' in place' if inplace else ''}"
                if inplace:
                    assert ".nc" not in ptx, f"{what}: a read-only load where the output aliases an input"
                    assert ptx.count(plain) >= want, f"{what}: {ptx.count(plain)} x {plain} in the PTX"
                else:
                    assert ptx.count(load) >= want, f"{what}: {ptx.count(load)} x {load} in the PTX"
                assert store in ptx, f"{what}: no {store} in the PTX"


def test_kernel_sources_are_found():
    d = ks.kernels_dir()
    for name in (
        ks.MATH_HEADER,
        ks.HALF_HEADER,
        ks.ELEMENTWISE_HEADER,
        ks.REDUCE_HEADER,
        ks.GRAD_HEADER,
        ks.SOFTMAX_SOURCE,
        ks.SPARSEMAX_SOURCE,
        ks.SOFTMAX_GRAD_SOURCE,
        ks.SPARSEMAX_GRAD_SOURCE,
    ):
        assert (d / name).is_file()
    for tag in TAGS:
        for name in [n for g in ks.FUSED_GROUPS for n in ks.group_kernel_names(g, tag)]:
            src = ks.kernel_source(name)
            assert '#include "' not in src  # inlined: self-contained for CuPy's cache key
            assert src.count('extern "C" __global__') == 1 and f" {name}(" in src


@pytest.mark.parametrize(
    "name",
    [
        "gpuact_softmax_warp_f16_w32_e8",
        "gpuact_softmax_split_finish_f32",
        "gpuact_sparsemax_cols_f64",
        "gpuact_softmax_grad_warp_f64_w32_e16",
        "gpuact_softmax_grad_split_partials_f16",
        "gpuact_sparsemax_grad_cols_f32",
    ],
)
def test_one_kernel_compiles_alone(name):
    """The backend's first call of a kernel compiles that kernel's source only (0.1-0.3 s for
    sm_90 on an idle CPU core, where the former all-in-one module took 12.7 s)."""
    reason = _have_nvrtc()
    if reason:
        pytest.skip(reason)
    ok, log = build.nvrtc_compile(ks.kernel_source(name), 90)
    assert ok, log[-4000:]
    assert list(build.parse_resource_usage(log)) == [name]
