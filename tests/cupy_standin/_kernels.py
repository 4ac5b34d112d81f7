"""``RawKernel``, ``RawModule`` and ``ElementwiseKernel``: every launch is checked, then run.

A RawKernel launch is checked against the kernel's C signature (the source preprocessed as NVRTC
sees it), the H100/H200 launch limits and the kernel's ptxas report (registers, static shared
memory), and then runs the kernel's own source on the CPU (``tests/cuda_shim/cuda_shim.h``).
An ElementwiseKernel is typed as CuPy types it (``cupy/_core/_kernel.pyx``) and its operation
runs, compiled with g++, over contiguous broadcast copies of the arguments.
"""

from __future__ import annotations

import ctypes
import math
import operator
import os
import re
import threading

import numpy as np

from . import _build, _state
from ._array import check_launch, check_overlap, data_ptr, empty, ndarray
from ._state import LaunchContractError, get_device_id

_lock = threading.Lock()

# What CuPy's function.pyx passes for a Python scalar (cupy/_core/_scalar.pyx):
# bool -> bool, float -> float64, int -> int64 (uint64 from 2**63 up), complex -> complex128.


def _python_scalar_dtype(value) -> np.dtype | None:
    t = type(value)
    if t is bool:
        return np.dtype(np.bool_)
    if t is float:
        return np.dtype(np.float64)
    if t is complex:
        return np.dtype(np.complex128)
    if t is int:
        return np.dtype(np.uint64 if value >= 2**63 else np.int64)
    return None


def _cupy_scalar_dtype(value) -> np.dtype:
    """The dtype CuPy gives a kernel argument that is not an array (``_scalar.CScalar``)."""
    dtype = _python_scalar_dtype(value)
    if dtype is not None:
        return dtype
    if isinstance(value, np.generic):
        return value.dtype
    raise TypeError(f"Unsupported type {type(value)}")


# ---------------------------------------------------------------------------------------------
# Programs: one per distinct (source, options)


class _Program:
    def __init__(self, code: str, options: tuple):
        self.key = _build.digest(code, *options)
        self.signatures = _build.parse_signatures(code)
        # A kernel without __syncthreads or shuffles has no intra-block communication: its threads
        # run one after another, exactly. The others run as fibers switched at every barrier (or as
        # one OS thread per CUDA thread with GPUACT_STANDIN_OS_THREADS=1: the same semantics, ~20x
        # the CPU time).
        if "__syncthreads" not in code and "__shfl" not in code:
            self.mode = 0  # ga_shim::SERIAL
        else:
            self.mode = 2 if os.environ.get("GPUACT_STANDIN_OS_THREADS") == "1" else 1
        host = _build.HostBuild(self._launchers(code))  # g++ runs while NVRTC compiles below
        try:
            self.resources = _build.resource_report(code, options)
        except BaseException:
            host.abort()
            raise
        self.lib = host.lib()
        self.attributes: dict = {}  # (kernel, device) -> max_dynamic_shared_size_bytes

    def _launchers(self, code: str) -> str:
        # `extern __shared__ T name[];` (in a kernel's body) becomes the block's dynamic shared memory
        code = _EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(ga_shim::ctxp->blk->smem.data());", code)
        lines = [code, "", "// ---- the stand-in's launchers: kernelParams-style argument arrays"]
        for sig in self.signatures.values():
            args = ", ".join(f"*({p.decl}*)ga_args[{i}]" for i, p in enumerate(sig.params))
            lines += [
                f'extern "C" void ga_standin_{sig.name}(void** ga_args, unsigned gx, unsigned gy, unsigned gz,',
                "        unsigned bx, unsigned by, unsigned bz, unsigned long smem, int mode) {",
                "    ga_shim::launch3({gx, gy, gz}, {bx, by, bz}, smem, mode,",
                f"                     [&] {{ {sig.name}({args}); }});",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def function(self, name: str):
        fn = getattr(self.lib, f"ga_standin_{name}")
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_ulong, ctypes.c_int]
        return fn


_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+(\w+)\s*\[\s*\]\s*;"
)
_programs: dict = {}


def program(code: str, options: tuple) -> _Program:
    key = (code, options)
    prog = _programs.get(key)
    if prog is None:
        with _lock:
            prog = _programs.get(key) or _Program(code, options)
            _programs[key] = prog
    return prog


# ---------------------------------------------------------------------------------------------
# RawKernel


class RawKernel:
    def __init__(
        self,
        code,
        name,
        options=(),
        backend="nvrtc",
        *,
        translate_cucomplex=False,
        enable_cooperative_groups=False,
        jitify=None,
    ):
        if not isinstance(code, str) or not isinstance(name, str):
            raise TypeError("RawKernel takes the source and the kernel name as str")
        if not isinstance(options, tuple):  # CuPy declares `tuple options`
            raise TypeError(f"options must be a tuple; got {type(options).__name__}")
        if enable_cooperative_groups:
            raise NotImplementedError("the stand-in does not run cooperative launches")
        self.code, self.name, self.options, self.backend = code, name, options, backend
        self.__name__ = name

    # per-device function attributes, shared by every RawKernel of the same source (CuPy
    # memoises the module per device, so they are one CUfunction)
    def _prog(self) -> _Program:
        prog = program(self.code, self.options)
        if self.name not in prog.signatures:
            raise RuntimeError(
                f'CUDA_ERROR_NOT_FOUND: no extern "C" __global__ {self.name} in the source '
                f"(it has {sorted(prog.signatures)})"
            )
        return prog

    def _res(self) -> dict:
        return self._prog().resources.get(self.name, {"registers": 0, "smem": 0, "stack": 0})

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        prog = self._prog()
        default = _state.SMEM_PER_BLOCK - self._res()["smem"]
        return prog.attributes.get((self.name, get_device_id()), default)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        value = operator.index(value)
        static = self._res()["smem"]
        if value < 0 or value + static > _state.SMEM_OPTIN:
            raise LaunchContractError(
                f"{self.name}: max_dynamic_shared_size_bytes = {value} plus {static} bytes of static shared memory "
                f"exceeds the {_state.SMEM_OPTIN} bytes a block may opt in to (CUDA_ERROR_INVALID_VALUE)"
            )
        self._prog().attributes[(self.name, get_device_id())] = value

    @property
    def num_regs(self) -> int:
        return self._res()["registers"]

    @property
    def shared_size_bytes(self) -> int:
        return self._res()["smem"]

    @property
    def local_size_bytes(self) -> int:
        return self._res()["stack"]

    @property
    def max_threads_per_block(self) -> int:
        sig = self._prog().signatures[self.name]
        per_warp = _regs_per_warp(self.num_regs)
        by_regs = 32 * (_state.REGS_PER_BLOCK // per_warp) if per_warp else _state.MAX_THREADS
        return min(_state.MAX_THREADS, by_regs, sig.launch_bounds or _state.MAX_THREADS)

    @property
    def attributes(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "max_threads_per_block",
                "shared_size_bytes",
                "local_size_bytes",
                "num_regs",
                "max_dynamic_shared_size_bytes",
            )
        }

    def compile(self, log_stream=None):
        self._prog()

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        prog = self._prog()
        sig = prog.signatures[self.name]
        name = self.name
        grid, block = _dims(name, "grid", grid), _dims(name, "block", block)
        shared_mem = operator.index(shared_mem)
        _check_config(self, sig, grid, block, shared_mem)
        args = tuple(args)
        if len(args) != len(sig.params):
            raise LaunchContractError(
                f"{name}: {len(args)} arguments for {len(sig.params)} parameters "
                f"({', '.join(p.decl + ' ' + p.name for p in sig.params)})"
            )
        storage, arrays, outputs = [], [], []
        for i, (param, value) in enumerate(zip(sig.params, args)):
            storage.append(_marshal(name, i, param, value))
            if isinstance(value, ndarray):
                arrays.append((i, value))
                if not param.const:
                    outputs.append((i, value))
        check_overlap("kernel", name, outputs, arrays)
        check_launch("raw", name, [a for _, a in arrays], stream=stream, grid=grid, block=block, shared_mem=shared_mem)
        argv = (ctypes.c_void_p * max(1, len(storage)))(*[data_ptr(s) for s in storage])
        prog.function(name)(argv, *grid, *block, shared_mem, prog.mode)


def _dims(name, what, dims) -> tuple:
    if not isinstance(dims, tuple):  # Function.__call__(tuple grid, tuple block, ...)
        raise TypeError(f"{name}: {what} must be a tuple; got {type(dims).__name__}")
    if not 1 <= len(dims) <= 3:
        raise LaunchContractError(f"{name}: {what} {dims} has {len(dims)} dimensions")
    dims = tuple(operator.index(d) for d in dims) + (1,) * (3 - len(dims))
    if min(dims) < 1:
        # CuPy launches max(1, d) without a word: a zero here is a size computed wrong
        raise LaunchContractError(f"{name}: {what} {dims}: every dimension must be >= 1")
    return dims


def _regs_per_warp(regs: int) -> int:
    # registers are allocated per warp in units of 256 (8 per thread)
    return -(-regs * 32 // 256) * 256


def _check_config(kernel, sig, grid, block, shared_mem):
    name = kernel.name
    for axis, (g, limit) in enumerate(zip(grid, _state.MAX_GRID)):
        if g > limit:
            raise LaunchContractError(f"{name}: grid {grid}: dimension {'xyz'[axis]} = {g} exceeds {limit}")
    for axis, (b, limit) in enumerate(zip(block, _state.MAX_BLOCK)):
        if b > limit:
            raise LaunchContractError(f"{name}: block {block}: dimension {'xyz'[axis]} = {b} exceeds {limit}")
    threads = math.prod(block)
    if threads > _state.MAX_THREADS:
        raise LaunchContractError(f"{name}: block {block} has {threads} threads; at most {_state.MAX_THREADS}")
    if sig.launch_bounds is not None and threads > sig.launch_bounds:
        raise LaunchContractError(
            f"{name}: block of {threads} threads, but the kernel is compiled with "
            f"__launch_bounds__({sig.launch_bounds})"
        )
    res = kernel._res()
    static = res["smem"]
    allowed = kernel.max_dynamic_shared_size_bytes
    if shared_mem > allowed:
        raise LaunchContractError(
            f"{name}: {shared_mem} bytes of dynamic shared memory (+ {static} static) but the kernel allows "
            f"{allowed} on device {get_device_id()}: above {_state.SMEM_PER_BLOCK} bytes in all, set "
            "max_dynamic_shared_size_bytes first (the opt-in)"
        )
    if static + shared_mem > _state.SMEM_OPTIN:
        raise LaunchContractError(
            f"{name}: {static} + {shared_mem} bytes of shared memory exceed the "
            f"{_state.SMEM_OPTIN} bytes of an H100/H200 block"
        )
    need = _regs_per_warp(res["registers"]) * -(-threads // 32)
    if need > _state.REGS_PER_BLOCK:
        raise LaunchContractError(
            f"{name}: {res['registers']} registers x {threads} threads need {need} registers; "
            f"a block has {_state.REGS_PER_BLOCK} (too many resources requested for launch)"
        )


def _marshal(name, i, param, value) -> np.ndarray:
    """What CuPy would pass for ``value``, checked against the C parameter: a one-element array."""
    what = f"{name}: argument {i} ({param.decl} {param.name})"
    if param.pointer:
        if isinstance(value, ndarray):
            allowed = _build.POINTEE_DTYPES.get(param.dtype, (param.dtype,))
            if param.ctype != "void" and value.dtype.name not in allowed:
                # raw bytes (a uint8 workspace) may hold any type, aligned for it; any other
                # element type is a mismatch (a float64 array read as float is garbage)
                size = np.dtype(param.dtype).itemsize
                if value.dtype != np.uint8:
                    raise LaunchContractError(f"{what} gets an array of {value.dtype}; the kernel reads {param.ctype}")
                if data_ptr(value) % size or value.nbytes % size:
                    raise LaunchContractError(
                        f"{what} gets {value.nbytes} raw bytes at {data_ptr(value):#x}: not "
                        f"{size}-byte aligned {param.ctype} values"
                    )
            return np.array([data_ptr(value)], np.uint64)
        if value is None:
            return np.zeros(1, np.uint64)
        if isinstance(value, np.ndarray):
            raise LaunchContractError(f"{what} gets a host numpy.ndarray; the kernel needs a device pointer")
        dtype = _cupy_scalar_dtype(value)
        if dtype.itemsize == 8 and dtype.kind in "iu" and int(value) == 0:
            return np.zeros(1, np.uint64)  # a null pointer
        raise LaunchContractError(f"{what} gets {value!r} ({dtype}): a pointer takes an array, None or an 8-byte 0")
    if isinstance(value, ndarray) or value is None:
        raise LaunchContractError(f"{what} is a scalar; it gets {'None' if value is None else 'an array'}")
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {value.shape} as a kernel parameter.")
        dtype, value = value.dtype, value.reshape(())[()]
    else:
        dtype = _cupy_scalar_dtype(value)
    if dtype != np.dtype(param.dtype):
        hint = ""
        if _python_scalar_dtype(value) is not None:
            hint = f" (CuPy passes a Python {type(value).__name__} as {dtype}; wrap it in np.{param.dtype})"
        raise LaunchContractError(f"{what} gets a {dtype} scalar{hint}; the kernel reads {np.dtype(param.dtype)}")
    return np.array([value], dtype)


# ---------------------------------------------------------------------------------------------
# RawModule


class RawModule:
    def __init__(
        self,
        *,
        code=None,
        path=None,
        options=(),
        backend="nvrtc",
        translate_cucomplex=False,
        enable_cooperative_groups=False,
        name_expressions=None,
        jitify=None,
    ):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if path is not None or name_expressions is not None:
            raise NotImplementedError("the stand-in compiles RawModule source code without name expressions only")
        if not isinstance(options, tuple):
            raise TypeError(f"options must be a tuple; got {type(options).__name__}")
        self.code, self.options, self.backend = code, options, backend

    def compile(self, log_stream=None):
        program(self.code, self.options)

    def get_function(self, name):
        kernel = RawKernel(self.code, name, self.options, self.backend)
        kernel._prog()  # CuPy compiles the module for the current device here
        return kernel


# ---------------------------------------------------------------------------------------------
# ElementwiseKernel

# cupy/_core/_scalar.pyx: _typenames_base
CUPY_CTYPES = {
    "float64": "double",
    "float32": "float",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int64": "long long",
    "int32": "int",
    "int16": "short",
    "int8": "signed char",
    "uint64": "unsigned long long",
    "uint32": "unsigned int",
    "uint16": "unsigned short",
    "uint8": "unsigned char",
    "bool": "bool",
}


class _EwParam:
    """cupy/_core/_kernel.pyx ParameterInfo: ``[raw] <dtype name or one-letter placeholder> <name>``."""

    def __init__(self, text: str, is_const: bool):
        tokens = text.split()
        if len(tokens) < 2:
            raise Exception(f"Syntax error: {text}")
        t, self.name = tokens[-2:]
        self.raw = "raw" in tokens[:-2]
        self.is_const = is_const and "_non_const" not in tokens[:-2]
        if len(t) == 1:
            self.dtype, self.ctype = None, t
        else:
            self.dtype = np.dtype(t)
            self.ctype = CUPY_CTYPES[self.dtype.name]


def _params(s: str, is_const: bool) -> tuple:
    return tuple(_EwParam(p, is_const) for p in s.strip().split(",")) if s.strip() else ()


class ElementwiseKernel:
    def __init__(
        self,
        in_params,
        out_params,
        operation,
        name="kernel",
        reduce_dims=True,
        preamble="",
        no_return=False,
        return_tuple=False,
        **kwargs,
    ):
        self.in_params = _params(in_params, True)
        self.out_params = _params(out_params, False)
        if any(p.raw for p in self.in_params + self.out_params):
            raise NotImplementedError("the stand-in does not run ElementwiseKernels with raw parameters")
        if kwargs.get("loop_prep") or kwargs.get("after_loop"):
            raise NotImplementedError("the stand-in does not run loop_prep / after_loop")
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        self.operation, self.name, self.preamble = operation, name, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        self.__name__ = name

    def _decide_types(self, in_dtypes, out_dtypes):
        """cupy/_core/_kernel.pyx _decide_params_type_core: only arrays type the placeholders."""
        types = {}
        for p, a in zip(self.out_params, out_dtypes):
            if p.dtype is not None:
                if a != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a} {p.dtype}")
            elif p.ctype in types and types[p.ctype] != a:
                raise TypeError(f"Type is mismatched. {p.name} {a} {types[p.ctype]} {p.ctype}")
            else:
                types[p.ctype] = a
        for p, a in zip(self.in_params, in_dtypes):
            if a is None:
                continue
            if p.dtype is not None:
                if a != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a} {p.dtype}")
            elif p.ctype in types and types[p.ctype] != a:
                raise TypeError(f"Type is mismatched. {p.name} {a} {types[p.ctype]} {p.ctype}")
            else:
                types[p.ctype] = a
        # a placeholder only scalars use stays undecided: CuPy fails here with a KeyError
        in_types = tuple(types[p.ctype] if p.dtype is None else p.dtype for p in self.in_params)
        out_types = tuple(types[p.ctype] if p.dtype is None else p.dtype for p in self.out_params)
        return in_types, out_types, tuple(sorted(types.items()))

    def __call__(self, *args, size=-1, stream=None, block_size=128):
        if size != -1:
            raise NotImplementedError("the stand-in does not take size=")
        if block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(
                f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                f"{self.nargs} (with outputs), but given {len(args)}."
            )
        for a in args:
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                raise TypeError(f"Unsupported type {type(a)}")  # CuPy's CScalar refuses host arrays
        ins, outs = args[: self.nin], list(args[self.nin :])
        for a in ins:
            if not isinstance(a, ndarray):
                _cupy_scalar_dtype(a)  # TypeError for what CuPy cannot pass
        in_dtypes = tuple(a.dtype if isinstance(a, ndarray) else None for a in ins)
        for a in outs:
            if not isinstance(a, ndarray):
                raise TypeError("Output arguments must be cupy.ndarray")
        in_types, out_types, type_map = self._decide_types(in_dtypes, tuple(a.dtype for a in outs))
        shape = np.broadcast_shapes(*(a.shape for a in args if isinstance(a, ndarray)))
        for a in outs:
            if a.shape != shape:
                raise ValueError("Out shape is mismatched")
        scalars = {
            i: _ew_scalar(self.name, self.in_params[i], a, in_types[i])
            for i, a in enumerate(ins)
            if not isinstance(a, ndarray)
        }
        in_arrays = [(i, a) for i, a in enumerate(ins) if isinstance(a, ndarray)]
        given = [(self.nin + k, a) for k, a in enumerate(outs)]
        check_overlap("ElementwiseKernel", self.name, given, in_arrays)
        n = math.prod(shape)
        launch = {"grid": (max(1, min(2**31 - 1, -(-n // block_size))),), "block": (max(1, min(block_size, n)),)}
        if block_size > _state.MAX_THREADS:
            raise LaunchContractError(f"{self.name}: block_size {block_size} > {_state.MAX_THREADS}")
        check_launch("elementwise", self.name, [a for _, a in in_arrays + given], stream=stream, **launch)
        if not outs:
            outs = [empty(shape, t) for t in out_types]
        if n:
            self._run(shape, ins, in_types, scalars, outs, out_types, type_map)
        if self.no_return:
            return None
        return outs[0] if self.nout == 1 and not self.return_tuple else tuple(outs)

    def _run(self, shape, ins, in_types, scalars, outs, out_types, type_map):
        run = _ew_library(self, in_types + out_types, set(scalars), type_map)
        buffers = []
        for i, a in enumerate(ins):
            if i in scalars:
                buffers.append(scalars[i])
            else:
                buffers.append(np.ascontiguousarray(np.broadcast_to(a.view(np.ndarray), shape)))
        results = [np.array(o.view(np.ndarray), order="C", copy=True) for o in outs]
        argv = (ctypes.c_void_p * len(buffers + results))(*[data_ptr(b) for b in buffers + results])
        run(argv, math.prod(shape))
        for o, r in zip(outs, results):
            o.view(np.ndarray)[...] = r


def _ew_scalar(name, param, value, dtype) -> np.ndarray:
    """A scalar argument as CuPy passes it: cast to the parameter's type (CScalar.apply_dtype).

    CuPy casts any scalar. The contract here is stricter where a cast hides a mistake: a NumPy
    scalar must already have the declared type (a float64 parameter into a float32 kernel is a
    precision bug), and a Python float never goes into an integer parameter. Python numbers
    otherwise are cast as CuPy casts them (NumPy's weak-scalar rules).
    """
    dtype = np.dtype(dtype)
    what = f"ElementwiseKernel {name}: scalar {param.name} ({dtype})"
    if isinstance(value, np.generic) and value.dtype != dtype:
        raise LaunchContractError(f"{what} gets a {value.dtype} scalar; CuPy would cast it silently")
    if isinstance(value, float) and dtype.kind in "biu":
        raise LaunchContractError(f"{what} gets the Python float {value!r}")
    try:
        return np.array([value], dtype)
    except (OverflowError, ValueError) as exc:  # what CuPy's PyArray_Pack raises
        raise LaunchContractError(f"{what}: {exc}") from exc


_ew_libs: dict = {}


def _ew_library(kernel, types, scalar_slots, type_map):
    """The operation compiled for these types, over contiguous arguments: ``run(args, n)``.

    As CuPy's generated kernel: the placeholders are typedefs, arrays are bound as references
    ``const X &x`` (outputs ``Y &y``), scalars are ``const`` values, ``i`` is the element index.
    """
    typedefs = "".join(f"typedef {CUPY_CTYPES[np.dtype(t).name]} {c};\n" for c, t in type_map)
    bind, loop = [], []
    for k, (p, _t) in enumerate(zip(kernel.in_params + kernel.out_params, types)):
        ctype = p.ctype if p.dtype is None else CUPY_CTYPES[p.dtype.name]
        const = "const " if p.is_const else ""
        if k in scalar_slots:
            bind.append(f"    const {ctype} {p.name} = *(const {ctype}*)_standin_args[{k}];")
        else:
            bind.append(f"    {const}{ctype}* _raw_{p.name} = ({const}{ctype}*)_standin_args[{k}];")
            loop.append(f"        {const}{ctype} &{p.name} = _raw_{p.name}[i];")
    source = (
        f"{typedefs}{kernel.preamble}\n"
        'extern "C" void ga_standin_ew(void** _standin_args, long long _standin_n) {\n' + "\n".join(bind) + "\n"
        "    for (long long i = 0; i < _standin_n; ++i) {\n" + "\n".join(loop) + "\n"
        f"        {kernel.operation};\n    }}\n}}\n"
    )
    key = _build.digest(source)
    fn = _ew_libs.get(key)
    if fn is None:
        fn = _build.HostBuild(source).lib().ga_standin_ew
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
        _ew_libs[key] = fn
    return fn
