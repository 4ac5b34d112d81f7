"""Compile the NumPy path's kernels (kernels/gpuact_cpu.cc) when gpuact is built or installed.

hatchling runs this hook for ``pip install .``, ``pip install -e .`` and ``python -m build``. It
writes ``gpuact/_gpuact_cpu.so`` into the source tree (where an editable install finds it) and
adds it to the wheel, which then carries the platform's tag. Without a C++ compiler, or with
``GPUACT_BUILD_NATIVE=0``, it says why on stderr and the package stays pure Python: gpuact then
runs its NumPy ufunc formulas, with the same results and less speed.

``python hatch_build.py`` rebuilds the library in place (after editing kernels/, for example).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "kernels" / "gpuact_cpu.cc"
LIBRARY = ROOT / "gpuact" / "_gpuact_cpu.so"
# -ffast-math never: NaN and inf must follow IEEE rules (docs/contract.rst), and its start-up code would
# turn on flush-to-zero for the whole process that loads the library.
FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-fPIC",
    "-shared",
    "-std=c++17",
    "-fvisibility=hidden",
    "-pthread",  # the module's own threads (split passes), std::thread on any glibc
]
# The stable ABI from Python 3.11 (the first with the buffer protocol in it): one build then
# serves every later Python; 3.10 gets a build for itself.
LIMITED_API = 0x030B0000


def python_flags() -> list[str]:
    """Where Python.h is, and the ABI the extension module is built for."""
    flags = ["-I", sysconfig.get_paths()["include"]]
    if sys.version_info >= (3, 11):
        flags.append(f"-DGA_LIMITED_API={LIMITED_API:#x}")
    return flags


def compiler() -> list[str] | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shlex.split(cxx)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build_library(log=sys.stderr) -> Path | None:
    """Compile SOURCE into LIBRARY; None (and a line on ``log``) when it cannot be done."""
    if os.environ.get("GPUACT_BUILD_NATIVE", "1").strip() == "0":
        print("gpuact: GPUACT_BUILD_NATIVE=0, the CPU kernels are not compiled", file=log)
        return None
    cxx = compiler()
    if cxx is None:
        print("gpuact: no C++ compiler found (set CXX); the NumPy path will use plain ufuncs", file=log)
        return None
    tmp = LIBRARY.with_suffix(".so.tmp")
    cmd = [*cxx, *FLAGS, *python_flags(), "-I", str(SOURCE.parent), str(SOURCE), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"gpuact: compiling the CPU kernels failed ({shlex.join(cmd)}):\n{result.stderr}", file=log)
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, LIBRARY)  # atomic: a running process keeps the old file
    return LIBRARY


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    BuildHookInterface = object


class NativeKernelsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        if build_library() is None:
            return
        build_data["artifacts"].append("gpuact/_gpuact_cpu.so")
        if version == "standard":
            build_data["pure_python"] = False
            # an extension module: the stable ABI from 3.11 on (cp311-abi3), else this Python's own
            from packaging.tags import sys_tags

            generic = (t.platform for t in sys_tags() if not t.platform.startswith(("manylinux", "musllinux")))
            platform = next(generic)
            if sys.version_info >= (3, 11):
                build_data["tag"] = f"cp311-abi3-{platform}"
            else:
                build_data["infer_tag"] = True


if __name__ == "__main__":
    built = build_library()
    print(built or "not built")
    sys.exit(0 if built else 1)
