"""The compute dtype of the NumPy path: float64 stays float64, everything else (float16, bfloat16,
float32, integers, booleans) is computed in float32; and what is refused as not real numbers."""

from __future__ import annotations

import numpy as np

from gpuact._contract import checks

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def compute_dtype(dtype) -> np.dtype:
    return F64 if dtype == F64 else F32


def result_dtype_of(dtype):
    """Refuses what is not real numbers (TypeError), by the contract's rule (bfloat16 included)."""
    checks.result_dtype(dtype)


def contiguous_in(a, compute) -> bool:
    return a.dtype == compute and a.flags.c_contiguous
