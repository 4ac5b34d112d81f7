"""Build helpers for the CUDA tests that run without a GPU: host C++ (g++), NVRTC, nvcc, and
the parsing of ptxas's resource report.

Host code is built with ``g++ -O2`` and never with ``-ffast-math`` (which would also switch the
whole Python process to flush-to-zero and break the NaN rules under test).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent


def kernels_dir() -> Path:
    from gpuact import _kernel_sources

    return _kernel_sources.kernels_dir()


def gxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for cand in sorted(Path("/usr/local").glob("cuda*/bin/nvcc"), reverse=True):
        return str(cand)
    return None


def build_shared(source: str, build_dir: Path, *, std: str = "c++20", extra=()) -> Path:
    """Compile C++ ``source`` into a shared object in ``build_dir`` (cached on the text's hash)."""
    digest = hashlib.sha256((source + std + " ".join(extra)).encode()).hexdigest()[:16]
    so = build_dir / f"lib_{digest}.so"
    if so.exists():
        return so
    src = build_dir / f"src_{digest}.cpp"
    src.write_text(source)
    cmd = [
        gxx(),
        "-O2",
        f"-std={std}",
        "-shared",
        "-fPIC",
        "-pthread",
        "-fno-fast-math",
        "-I",
        str(kernels_dir()),
        "-I",
        str(SHIM_DIR),
        *extra,
        str(src),
        "-o",
        str(so) + ".tmp",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed:\n{' '.join(cmd)}\n{proc.stderr[-6000:]}")
    os.replace(str(so) + ".tmp", so)
    return so


def nvrtc_compile(source: str, arch: int, options=()) -> tuple[bool, str]:
    """(ok, log) of NVRTC compiling ``source`` to a cubin for sm_<arch> with ptxas -v."""
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(source, "gpuact_test.cu", [], [])
    opts = [f"-arch=sm_{arch}", "-Xptxas=-v", *options]
    try:
        nvrtc.compileProgram(prog, opts)
        ok = True
    except Exception as exc:  # NVRTCError: the log says why
        ok = False
        log = f"{exc}\n"
    else:
        log = ""
    log += nvrtc.getProgramLog(prog)
    nvrtc.destroyProgram(prog)
    return ok, log


def nvcc_compile(source: str, arch: int, build_dir: Path, options=()) -> tuple[bool, str]:
    """(ok, log) of ``nvcc -cubin -arch=sm_<arch> --resource-usage``."""
    digest = hashlib.sha256((source + str(arch) + " ".join(options)).encode()).hexdigest()[:16]
    src = build_dir / f"nv_{digest}.cu"
    src.write_text(source)
    cmd = [
        nvcc(),
        "-cubin",
        f"-arch=sm_{arch}",
        "--resource-usage",
        "-std=c++17",
        *options,
        str(src),
        "-o",
        str(build_dir / f"nv_{digest}.cubin"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode == 0, proc.stdout + proc.stderr


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_resource_usage(log: str) -> dict[str, dict]:
    """Per kernel: registers, spill stores / loads (bytes), stack frame and static shared memory."""
    out: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        mo = _ENTRY.search(line)
        if mo:
            current = out.setdefault(
                mo.group(1),
                {"arch": mo.group(2), "registers": None, "spill_stores": 0, "spill_loads": 0, "stack": 0, "smem": 0},
            )
            continue
        if current is None:
            continue
        mo = _PROPS.search(line)
        if mo:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, mo.groups())
            continue
        mo = _USED.search(line)
        if mo:
            current["registers"] = int(mo.group(1))
            if mo.group(2):
                current["smem"] = int(mo.group(2))
    return out


def double_warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if "double precision" in line.lower()]
