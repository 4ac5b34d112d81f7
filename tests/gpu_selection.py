"""``pytest -p tests.gpu_selection -m gpu``: the GPU tests and nothing else (``bench/gpu_check.sh``,
step 3).

Only some tests carry the ``gpu`` marker themselves (``tests/test_cupy_backend.py``, a few in the
PyTorch and Dask files). This plugin marks the rest of those that run on a GPU: every test on the
``be`` fixture's ``cupy`` or ``numba`` path, and the files that run the Numba backend on device
arrays throughout. The ``numpy`` and ``numpy-ufunc`` paths, the CPU stand-ins for a GPU
(``cpu_proxy``) and everything else stay out of ``-m gpu``. A plugin of its own, loaded by the
check alone, rather than a hook in ``conftest.py``: a plain ``pytest -m gpu`` keeps its meaning.
"""

from __future__ import annotations

import pytest

GPU_PARAMS = ("cupy", "numba")
GPU_FILES = ("test_numba_backend.py", "test_numba_backward.py")


def pytest_itemcollected(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("be") in GPU_PARAMS or item.path.name in GPU_FILES:
        item.add_marker(pytest.mark.gpu)
