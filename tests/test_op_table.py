"""Every path defines every op of the op table (``gpuact._contract.ops.OPS``), and no op the table
lacks: the NumPy formulas and their derivatives, the compiled CPU kernels (the built module, and
its source's op list), the CUDA device functions (forward and derivative) and the Numba device
functions. A row added to the table fails here, naming each path it is still missing from."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gpuact import _kernel_sources
from gpuact._contract.ops import ELEMENTWISE_OPS, ELEMENTWISE_PARAMS, OPS
from gpuact.backends import _native
from gpuact.backends.numpy_backend import formulas

TABLE = set(OPS)


def _assert_defines_the_table(defined, path: str) -> None:
    defined = set(defined)
    missing, unknown = sorted(TABLE - defined), sorted(defined - TABLE)
    assert not missing and not unknown, f"{path}: missing {missing}, not in the op table {unknown}"


def test_the_derived_names_follow_the_rows():
    assert ELEMENTWISE_OPS == tuple(OPS)
    assert ELEMENTWISE_PARAMS == {name: op.params for name, op in OPS.items()}
    assert all(len(op.params) <= 4 for op in OPS.values()), "the kernels take four parameters at most"
    assert all(op.cost in ("cheap", "exp", "heavy") for op in OPS.values())


def test_numpy_formulas():
    _assert_defines_the_table(formulas.KERNELS, "numpy_backend.formulas.KERNELS")
    _assert_defines_the_table(formulas.GRADS, "numpy_backend.formulas.GRADS")


def test_compiled_cpu_kernels_source():
    source = (_kernel_sources.kernels_dir() / "gpuact_cpu.cc").read_text()
    block = re.search(r"#define GA_CPU_OPS\(X\)((?:.*\\\n)*.*)", source)
    assert block, "kernels/gpuact_cpu.cc defines no GA_CPU_OPS list"
    _assert_defines_the_table(re.findall(r"\bX\((\w+)\)", block.group(1)), "GA_CPU_OPS in kernels/gpuact_cpu.cc")


def test_compiled_cpu_kernels_built():
    reason = _native.unavailable_reason()
    if reason is not None:
        pytest.skip(f"compiled CPU kernels not in use: {reason}")
    # exported_ops() lists only the table's ops, so this finds the missing ones, not the extras
    _assert_defines_the_table(_native.exported_ops(), "the built gpuact._gpuact_cpu module")


def test_cuda_device_functions():
    math_source = _kernel_sources.read(_kernel_sources.MATH_HEADER)
    grad_source = _kernel_sources.read(_kernel_sources.GRAD_HEADER)
    forwards = re.findall(r"^GA_OP\((\w+)\)", math_source, re.M)
    forwards += ["d_" + op for op in re.findall(r"^GA_DERIVATIVE_OP\((\w+)\)", grad_source, re.M)]
    _assert_defines_the_table(forwards, "GA_OP in kernels/gpuact_math.cuh and GA_DERIVATIVE_OP in gpuact_grad.cuh")
    _assert_defines_the_table(re.findall(r"^GA_GRAD\((\w+)\)", grad_source, re.M), "GA_GRAD in kernels/gpuact_grad.cuh")


@pytest.mark.parametrize("ft", [np.float32, np.float64])
def test_numba_device_functions(ft):
    # building the tables only declares device functions: no GPU (nor the simulator) is needed
    pytest.importorskip("numba")
    from gpuact.backends._numba import scalar

    def ops(table):
        return [name for name in table if not name.startswith("_")]  # "_"-named ones are helpers

    _assert_defines_the_table(ops(scalar.device_functions(ft)), "Numba's scalar.device_functions")
    _assert_defines_the_table(ops(scalar.grad_functions(ft)), "Numba's scalar.grad_functions")
