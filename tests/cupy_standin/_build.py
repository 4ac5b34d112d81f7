"""Compiling what the stand-in is handed: kernel signatures (g++ -E), ptxas resource reports
(NVRTC, sm_90) and host builds of the kernels on the threads shim (g++, one cached .so each).

Everything is cached by the hash of its input text: in a temporary directory per process, or in
``GPUACT_STANDIN_CACHE`` when set (a persistent directory makes local reruns fast).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent.parent / "cuda_shim"
ARCH = 90  # H100 / H200
# -O1: a third faster to build than -O2 and fast enough to run. Never -ffast-math: loading such a
# library would switch the whole Python process to flush-to-zero.
CXXFLAGS = ("-O1", "-fno-exceptions", "-std=c++17", "-fPIC", "-pthread", "-fno-fast-math", "-Wno-unknown-pragmas")

_nvrtc = None  # the real cupy.cuda.nvrtc, bound by install() before the stand-in takes the name
_lock = threading.Lock()
_cache_dir: Path | None = None
stats = {"nvrtc_s": 0.0, "gxx_s": 0.0, "nvrtc": 0, "gxx": 0}


def gxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def bind_nvrtc(module) -> None:
    global _nvrtc
    _nvrtc = module


def cache_dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        env = os.environ.get("GPUACT_STANDIN_CACHE")
        if env:
            _cache_dir = Path(env)
            _cache_dir.mkdir(parents=True, exist_ok=True)
        else:
            _cache_dir = Path(tempfile.mkdtemp(prefix="gpuact_standin_"))
            atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Kernel signatures


# C type (as written, qualifiers removed) -> NumPy dtype name
C_SCALARS = {
    "bool": "bool",
    "char": "int8",
    "signed char": "int8",
    "unsigned char": "uint8",
    "short": "int16",
    "short int": "int16",
    "signed short": "int16",
    "unsigned short": "uint16",
    "unsigned short int": "uint16",
    "int": "int32",
    "signed": "int32",
    "signed int": "int32",
    "unsigned": "uint32",
    "unsigned int": "uint32",
    "long": "int64",
    "long int": "int64",
    "long long": "int64",
    "long long int": "int64",
    "unsigned long": "uint64",
    "unsigned long int": "uint64",
    "unsigned long long": "uint64",
    "unsigned long long int": "uint64",
    "size_t": "uint64",
    "ptrdiff_t": "int64",
    "int8_t": "int8",
    "uint8_t": "uint8",
    "int16_t": "int16",
    "uint16_t": "uint16",
    "int32_t": "int32",
    "uint32_t": "uint32",
    "int64_t": "int64",
    "uint64_t": "uint64",
    "float": "float32",
    "double": "float64",
    "__half": "float16",
    "half": "float16",
    "ga::bf16": "bfloat16",  # gpuact's bfloat16 storage (kernels/gpuact_half.cuh): ml_dtypes.bfloat16 arrays
}
# array dtypes a pointer to each C type may receive: float16 data is raw 16-bit storage in the
# kernels, and a bool array is bytes of 0 or 1
POINTEE_DTYPES = {
    "uint16": ("uint16", "float16"),
    "uint8": ("uint8", "bool"),
    "float16": ("float16",),
    "int8": ("int8",),
    "bool": ("bool", "uint8"),
}


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # the base type, qualifiers removed: "float", "long long", ...
    pointer: bool
    const: bool  # a pointer to const: an input

    @property
    def dtype(self) -> str:
        return C_SCALARS.get(self.ctype, self.ctype)

    @property
    def decl(self) -> str:  # for the generated launcher
        return f"{'const ' if self.const else ''}{self.ctype}*" if self.pointer else self.ctype


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]
    launch_bounds: int | None  # __launch_bounds__(max threads), when declared


_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(\s*([^,)]*)[^)]*\)\s*)?(\w+)\s*\(([^)]*)\)', re.S
)


def preprocess(code: str) -> str:
    """``code`` through the C preprocessor as NVRTC sees it (macros, ## pasting, #if)."""
    proc = subprocess.run(
        [gxx(), "-E", "-P", "-x", "c++", "-D__CUDACC_RTC__", "-D__CUDACC__", f"-D__CUDA_ARCH__={ARCH}0", "-"],
        input=code,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the C preprocessor rejects the kernel source:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _param(text: str) -> Param:
    text = " ".join(text.replace("*", " * ").split())
    tokens = [t for t in text.split() if t not in ("__restrict__", "__restrict", "restrict", "volatile")]
    name = tokens.pop()
    pointer = tokens.count("*")
    if pointer > 1:
        raise NotImplementedError(f"the stand-in cannot pass {text!r} (a pointer to a pointer)")
    const = pointer == 1 and "const" in tokens[: tokens.index("*")]
    base = " ".join(t for t in tokens if t not in ("const", "*"))
    if base == "void" and pointer:
        return Param(name, base, True, const)  # takes any array
    if base not in C_SCALARS:
        raise NotImplementedError(f"the stand-in cannot pass a kernel parameter of type {base!r} ({text!r})")
    return Param(name, base, bool(pointer), const)


def parse_signatures(code: str) -> dict[str, Signature]:
    """Every ``extern "C" __global__`` kernel of ``code``, after preprocessing."""
    out = {}
    for mo in _KERNEL.finditer(preprocess(code)):
        bounds, name, params = mo.groups()
        plist = [p for p in params.split(",") if p.strip() and p.strip() != "void"]
        out[name] = Signature(name, tuple(_param(p) for p in plist), int(eval(bounds, {})) if bounds else None)
    return out


# ---------------------------------------------------------------------------------------------
# ptxas resource reports (NVRTC for sm_90)


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_\d+'")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_STACK = re.compile(r"(\d+) bytes stack frame")


def _parse_report(log: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        mo = _ENTRY.search(line)
        if mo:
            current = out.setdefault(mo.group(1), {"registers": 0, "smem": 0, "stack": 0})
        elif current is not None and (mo := _USED.search(line)):
            current["registers"] = int(mo.group(1))
            current["smem"] = int(mo.group(2) or 0)
        elif current is not None and (mo := _STACK.search(line)):
            current["stack"] = int(mo.group(1))
    return out


def resource_report(code: str, options: tuple = ()) -> dict[str, dict]:
    """Registers and static shared memory of each kernel of ``code``, from ptxas -v (cached)."""
    opts = [f"-arch=sm_{ARCH}", "-Xptxas=-v", *options]
    if not any(o.startswith(("--std", "-std")) for o in opts):
        opts.append("--std=c++17")  # CuPy 14 adds it unless the options name a standard
    path = cache_dir() / f"ptxas_{digest(code, *opts)}.json"
    if path.exists():
        return json.loads(path.read_text())
    if _nvrtc is None:
        raise RuntimeError("NVRTC is not bound: the stand-in was not installed by install()")
    start = time.perf_counter()
    prog = _nvrtc.createProgram(code, "gpuact_standin.cu", [], [])
    try:
        try:
            _nvrtc.compileProgram(prog, opts)
        except Exception as exc:
            raise RuntimeError(
                f"NVRTC cannot compile the kernel source for sm_{ARCH} "
                f"(CuPy would raise CompileException):\n{exc}\n{_nvrtc.getProgramLog(prog)[-6000:]}"
            ) from exc
        log = _nvrtc.getProgramLog(prog)
    finally:
        _nvrtc.destroyProgram(prog)
    stats["nvrtc_s"] += time.perf_counter() - start
    stats["nvrtc"] += 1
    report = _parse_report(log)
    _write_atomic(path, json.dumps(report))
    return report


# ---------------------------------------------------------------------------------------------
# Host builds on the threads shim

_FLOAT_MATH = (
    "exp",
    "exp2",
    "expm1",
    "log",
    "log1p",
    "log2",
    "log10",
    "tanh",
    "sinh",
    "cosh",
    "erf",
    "erfc",
    "sin",
    "cos",
    "tan",
    "atan",
)
PRELUDE = (
    """// the stand-in's precompiled prelude: what every host build of a kernel includes first
#include <cmath>
#include <cstdint>
#include "cuda_shim.h"
typedef _Float16 float16;  // CuPy's float16 in ElementwiseKernel code: a float rounded to half
// CuPy 14's bfloat16 in ElementwiseKernel code (cupy/_core/include/cupy/bfloat16.cuh): 16 bits,
// widened exactly by operator float, narrowed from float to nearest even (__float2bfloat16), NaN
// kept NaN; other arithmetic types convert explicitly, through float.
struct bfloat16 {
    unsigned short bits_;
    bfloat16() = default;
    bfloat16(float v) {
        unsigned int u;
        __builtin_memcpy(&u, &v, 4);
        bits_ = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)((u >> 16) | 0x40u)
                                                : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    template <typename T> explicit bfloat16(T v) : bfloat16((float)v) {}
    operator float() const {
        unsigned int u = (unsigned int)bits_ << 16;
        float f;
        __builtin_memcpy(&f, &u, 4);
        return f;
    }
};
// The float math library, evaluated in double and rounded once: glibc's float functions are off by
// an ulp in places where CUDA's are exact (tanhf(1.4e-5f) is x + 1 ulp, so x - tanh(x) < 0 and
// tanh_shrink stops being monotone). Linked -Bsymbolic, the kernels call these, nothing else does.
extern "C" {
"""
    + "".join(f"float {f}f(float x) noexcept {{ return (float){f}((double)x); }}\n" for f in _FLOAT_MATH)
    + """\
float hypotf(float x, float y) noexcept { return (float)hypot((double)x, (double)y); }
float powf(float x, float y) noexcept { return (float)pow((double)x, (double)y); }
}
"""
)


def _pch_dir() -> Path:
    """A directory holding prelude.h and its precompiled prelude.h.gch (built once)."""
    shim = (SHIM_DIR / "cuda_shim.h").read_text()
    d = cache_dir() / f"pch_{digest(PRELUDE, shim, *CXXFLAGS, gxx() or '')}"
    gch = d / "prelude.h.gch"
    with _lock:
        if not gch.exists():
            d.mkdir(parents=True, exist_ok=True)
            (d / "cuda_shim.h").write_text(shim)
            (d / "prelude.h").write_text(PRELUDE)
            tmp = d / f"prelude.{os.getpid()}.gch.tmp"
            _run([gxx(), *CXXFLAGS, "-x", "c++-header", str(d / "prelude.h"), "-o", str(tmp)])
            os.replace(tmp, gch)
    return d


def _run(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    stats["gxx_s"] += time.perf_counter() - start
    stats["gxx"] += 1
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed:\n{' '.join(cmd)}\n{proc.stderr[-6000:]}")


class HostBuild:
    """A g++ build of ``source`` started now (in the background); ``lib()`` waits and loads it."""

    def __init__(self, source: str):
        pch = _pch_dir()
        self.so = cache_dir() / f"lib_{digest(source, pch.name)}.so"
        self._proc = None
        self._lib = None
        if not self.so.exists():
            src = self.so.with_suffix(".cpp")
            _write_atomic(src, source)
            self._tmp = self.so.with_name(f"{self.so.name}.{os.getpid()}.tmp")
            self._cmd = [
                gxx(),
                *CXXFLAGS,
                "-shared",
                "-Wl,-Bsymbolic",
                "-I",
                str(pch),
                "-I",
                str(SHIM_DIR),
                "-include",
                "prelude.h",
                str(src),
                "-o",
                str(self._tmp),
            ]
            self._start = time.perf_counter()
            self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def abort(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None

    def lib(self) -> ctypes.CDLL:
        if self._lib is None:
            if self._proc is not None:
                _, err = self._proc.communicate()
                stats["gxx_s"] += time.perf_counter() - self._start
                stats["gxx"] += 1
                if self._proc.returncode != 0:
                    raise RuntimeError(
                        f"g++ failed to build a kernel for the CPU:\n{' '.join(self._cmd)}\n{err[-6000:]}"
                    )
                os.replace(self._tmp, self.so)
                self._proc = None
            self._lib = ctypes.CDLL(str(self.so))
        return self._lib
