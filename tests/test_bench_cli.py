"""The benchmark CLI itself: it runs, prints its table, and writes JSON whose numbers agree.

One ``python -m gpuact.bench --quick --json --plot`` subprocess (a few seconds on 2 cores) feeds
the schema and consistency checks; small in-process runs cover wrong results and bad arguments.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpuact.bench import cases as C
from gpuact.bench import cli, report
from gpuact.bench.impls import Impl

ROOT = Path(__file__).resolve().parents[1]

RESULT_FIELDS = {
    "op": str,
    "dtype": str,
    "shape": list,
    "axis": (int, type(None)),
    "elements": int,
    "device": str,
    "backend": str,
    "correct": bool,
}
TIME_FIELDS = ("median_s", "min_s", "max_s", "gbps")
NULLABLE_FIELDS = ("frac_of_copy", "speedup_vs_numpy")


def _bench(*args, env=None, timeout=120):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gpuact.bench", *args],
        cwd=ROOT,
        env=full_env,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path, png_path = out / "bench.json", out / "bench.png"
    proc = _bench("--quick", "--no-progress", "--json", str(json_path), "--plot", str(png_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(json_path.read_text()), png_path


def test_quick_prints_backends_and_table(quick):
    proc, doc, _ = quick
    assert "Backends:" in proc.stdout
    assert "numpy@cpu" in proc.stdout
    for header in ("backend", "median", "GB/s", "of copy", "vs numpy"):
        assert header in proc.stdout
    for op in C.QUICK_OPS:
        assert op in proc.stdout
    # every backend and peer is accounted for, used or skipped with a reason
    seen = {(b["backend"], b["device"]) for b in doc["backends"]}
    assert ("numpy", "cpu") in seen and ("cupy", "gpu") in seen and ("numba", "gpu") in seen
    for b in doc["backends"]:
        assert b["used"] or b["reason"], b


def test_quick_writes_a_png(quick):
    *_, png = quick
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_json_schema(quick):
    _, doc, _ = quick
    assert doc["schema"] == "gpuact-bench/1"
    assert isinstance(doc["machine"], dict) and doc["machine"]["cpu_model"]
    assert doc["gpu"] is None or isinstance(doc["gpu"], dict)
    assert set(doc["copy_gbps"]) == {"cpu", "gpu"}
    assert isinstance(doc["copy_gbps"]["cpu"], float) and doc["copy_gbps"]["cpu"] > 0
    assert doc["copy_gbps"]["gpu"] is None or doc["copy_gbps"]["gpu"] > 0
    assert doc["results"]
    for r in doc["results"]:
        for key, kind in RESULT_FIELDS.items():
            assert isinstance(r[key], kind), (key, r)
        assert r["device"] in ("cpu", "gpu")
        assert r["elements"] == math.prod(r["shape"])
        for key in (*TIME_FIELDS, "samples_s", *NULLABLE_FIELDS):
            assert key in r
        if r["correct"]:
            for key in TIME_FIELDS:
                assert isinstance(r[key], float) and r[key] > 0, (key, r)
            assert len(r["samples_s"]) >= 3 and all(s > 0 for s in r["samples_s"])
        else:
            assert all(r[key] is None for key in (*TIME_FIELDS, "samples_s", *NULLABLE_FIELDS))


def test_every_quick_case_is_timed_correctly_on_numpy(quick):
    _, doc, _ = quick
    numpy_cases = {
        (r["op"], tuple(r["shape"]), r["axis"]) for r in doc["results"] if r["backend"] == "numpy" and r["correct"]
    }
    cases = C.build_cases(
        C.QUICK_OPS,
        ("float32",),
        C.QUICK_CPU_SIZES,
        C.QUICK_SOFTMAX_ROWS,
        C.SOFTMAX_AXES,
        1,
        softmax_max=C.SOFTMAX_CPU_MAX,
    )
    cases += C.build_training_cases(
        C.QUICK_GRAD_OPS,
        ("float32",),
        C.QUICK_TRAIN_CPU_SIZES,
        C.QUICK_TRAIN_ROWS,
        softmax_max=C.SOFTMAX_CPU_MAX,
        bias="gelu" in C.QUICK_OPS,
    )
    expected = {(c.op, c.shape, c.axis) for c in cases}
    assert numpy_cases == expected
    assert any(C.is_grad(op) for op, _, _ in numpy_cases) and any(C.is_bias(op) for op, _, _ in numpy_cases)
    axes = {r["axis"] for r in doc["results"] if r["op"] == "softmax"}
    assert axes == {-1, 0}


def test_numbers_are_consistent(quick):
    _, doc, _ = quick
    copies = {(c["device"], c["bytes"]): c for c in doc["copy"]}
    numpy_time = {
        (r["op"], r["dtype"], tuple(r["shape"]), r["axis"]): r["median_s"]
        for r in doc["results"]
        if r["backend"] == "numpy" and r["device"] == "cpu"
    }
    for r in doc["results"]:
        if not r["correct"]:
            continue
        samples = r["samples_s"]
        assert r["median_s"] == pytest.approx(statistics.median(samples), rel=1e-12)
        assert r["min_s"] == min(samples) and r["max_s"] == max(samples)
        arrays = 3 if C.is_grad(r["op"]) else 2  # a gradient reads x and dy and writes dx
        nbytes = arrays * r["elements"] * np.dtype(r["dtype"]).itemsize
        # GB/s is bytes (inputs read + output written) over the median time
        assert r["gbps"] == pytest.approx(nbytes / r["median_s"] / 1e9, rel=1e-9)
        copy = copies[(r["device"], nbytes // arrays)]
        assert copy["gbps"] == pytest.approx(2 * (nbytes // arrays) / copy["median_s"] / 1e9, rel=1e-9)
        assert r["frac_of_copy"] == pytest.approx(r["gbps"] / copy["gbps"], rel=1e-9)
        # flagged exactly when faster than 1.1x the same-size copy (a peer can be, in cache:
        # PyTorch's relu at 1 MiB on its own threads, say; so can gpuact's NumPy path on its
        # threads, relu at 2**18 on two cores' caches), which the line above checks; but no path
        # of gpuact's beats the peak copy, one thread's, by more than its threads can
        assert r["suspicious"] == (r["frac_of_copy"] > cli.SUSPICIOUS_FRAC)
        if r["backend"] in ("numpy", "cupy", "numba"):
            threads = doc["machine"]["gpuact_numpy_threads"] if r["device"] == "cpu" else 1
            assert r["gbps"] <= cli.SUSPICIOUS_FRAC * threads * doc["copy_gbps"][r["device"]], r
        base = numpy_time.get((r["op"], r["dtype"], tuple(r["shape"]), r["axis"]))
        if base is not None:
            assert r["speedup_vs_numpy"] == pytest.approx(base / r["median_s"], rel=1e-9)
    assert len(doc["suspicious"]) == sum(r["suspicious"] for r in doc["results"])
    for device in ("cpu", "gpu"):
        values = [c["gbps"] for c in doc["copy"] if c["device"] == device]
        assert doc["copy_gbps"][device] == (max(values) if values else None)
    large = [c for c in doc["copy"] if c["device"] == "cpu" and c["bytes"] >= cli.CPU_LARGE_COPY_BYTES]
    assert large, "the CPU copy is measured at a large size too"


def test_overhead_entries(quick):
    _, doc, _ = quick
    entries = [o for o in doc["overhead"] if o["device"] == "cpu"]
    assert {o["backend"] for o in entries} >= {"numpy", "numpy-naive"}
    for o in entries:
        assert o["median_s"] > 0 and o["min_s"] <= o["median_s"] <= o["max_s"]


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    json_path = tmp_path / "b.json"
    proc = _bench(
        "--ops",
        "relu",
        "--sizes",
        "2**10",
        "--backends",
        "numpy",
        "--min-time",
        "0",
        "--min-runs",
        "3",
        "--no-progress",
        "--plain",
        "--json",
        str(json_path),
        "--plot",
        str(tmp_path / "b.png"),
        env={"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install gpuact[bench]" in proc.stderr
    assert not (tmp_path / "b.png").exists()
    assert json.loads(json_path.read_text())["results"]


@pytest.mark.parametrize("args", [["--ops", "nope"], ["--dtype", "int8"], ["--sizes", "ten"]])
def test_bad_arguments_are_refused(args):
    proc = _bench(*args, "--no-progress")
    assert proc.returncode == 2
    assert "gpuact-bench: error:" in proc.stderr


def _run_in_process(impls, argv):
    cfg = cli.Config(cli._parser().parse_args(argv))
    out = report.Output(plain=True)
    out.statuses = []
    return cli.Run(cfg, impls, out, progress=False).execute()


def test_a_wrong_result_is_reported_as_wrong_never_as_a_time(capsys):
    wrong = Impl("numpy", "cpu", True, "cpu", _make=lambda op, axis: lambda x: x * 0 + 1)
    naive = Impl("numpy-naive", "cpu", False, "cpu", _make=lambda op, axis: lambda x: np.maximum(x, 0))
    doc = _run_in_process(
        [wrong, naive], ["--ops", "relu", "--sizes", "2**10", "--min-time", "0", "--min-runs", "3", "--no-backward"]
    )
    by_backend = {r["backend"]: r for r in doc["results"]}
    bad = by_backend["numpy"]
    assert bad["correct"] is False and "outside" in bad["error"]
    assert all(bad[k] is None for k in (*TIME_FIELDS, "samples_s", "frac_of_copy", "speedup_vs_numpy"))
    good = by_backend["numpy-naive"]
    assert good["correct"] is True and good["median_s"] > 0 and good["speedup_vs_numpy"] is None


def test_an_error_is_reported_not_timed():
    def broken(op, axis):
        raise NotImplementedError("not written yet")

    doc = _run_in_process(
        [Impl("cupy", "cpu", True, "cpu", _make=broken)],
        ["--ops", "relu", "--sizes", "2**10", "--min-time", "0", "--min-runs", "3", "--no-backward"],
    )
    assert doc["results"] == []
    assert doc["errors"] and doc["errors"][0]["status"] == "error"
    assert "not written yet" in doc["errors"][0]["message"]


def test_sizes_and_cases():
    assert C.parse_sizes("10:14:2") == (2**10, 2**12, 2**14)
    assert C.parse_sizes("2**20, 4096") == (4096, 2**20)
    cases = C.build_cases(("softmax",), ("float32",), C.CPU_SIZES, softmax_max=C.SOFTMAX_CPU_MAX)
    assert {c.row_length for c in cases} == set(C.SOFTMAX_ROWS)
    assert {c.axis for c in cases} == {-1, 0}
    assert all(c.elements <= C.SOFTMAX_CPU_MAX for c in cases)
    for c in cases:
        assert c.shape[c.axis] == c.row_length and c.elements >= c.row_length
    # default ladders
    assert C.CPU_SIZES[0] == 2**10 and C.CPU_SIZES[-1] == 2**24
    assert C.GPU_SIZES[0] == 2**10 and C.GPU_SIZES[-1] == 2**28


def test_reference_check_catches_an_off_by_a_little_result():
    case = C.Case("sigmoid", "float32", (2**21,), None)  # above CHECK_FULL_MAX: sampled
    x = C.make_input(case.shape, case.dtype)
    slices = C.check_slices(case)
    assert slices is not None
    y = C.reference("sigmoid", x).astype(np.float32)
    ok, _ = C.compare(case, C.sample_view(case, y, slices), C.sample_view(case, x, slices), gpuact=True)
    assert ok
    y[-1] *= 1.001  # the last element is always in the sample
    ok, msg = C.compare(case, C.sample_view(case, y, slices), C.sample_view(case, x, slices), gpuact=True)
    assert not ok and "1 of" in msg


def test_the_glu_variants_rows_and_the_memory_row(tmp_path):
    # forward and gradient rows of swiglu and geglu on every CPU backend installed, each checked
    # against the float64 reference (a sampled check at the larger size), and the memory row
    json_path = tmp_path / "gated.json"
    proc = _bench(
        "--ops", "swiglu,geglu", "--cpu-sizes", "2**14", "--device", "cpu", "--min-time", "0", "--min-runs", "3",
        "--no-progress", "--json", str(json_path),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(json_path.read_text())
    rows = {(r["op"], r["backend"]) for r in doc["results"] if r["correct"]}
    assert not [r for r in doc["results"] if not r["correct"]]
    for op in ("swiglu", "geglu", "swiglu:grad", "geglu:grad"):
        assert (op, "numpy") in rows
    for r in doc["results"]:
        assert r["shape"][-1] == 2 * C.GATED_UNITS and r["axis"] == -1
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert ("swiglu:grad", "torch") in rows and ("swiglu:grad", "gpuact-torch") in rows
    memory = {m["variant"]: m for m in doc["memory"]}
    # the fused backward keeps up(x) and recomputes silu(a): the composition also keeps silu(a),
    # one intermediate-wide activation per token more
    tokens, _, intermediate = memory["torch"]["shape"]
    assert memory["torch"]["saved_bytes"] - memory["gpuact-torch"]["saved_bytes"] == tokens * intermediate * 4
    assert "Memory of one MLP training step" in proc.stdout


def test_the_gated_cases_split_their_input():
    case = C.Case("swiglu:grad", "float32", (4, 2 * C.GATED_UNITS), -1)
    a = C.make_case_input(case)
    x, dy, bias = C.split_input(case.op, a)
    assert x.shape == (4, 2 * C.GATED_UNITS) and dy.shape == (4, C.GATED_UNITS) and bias is None
    assert case.bytes_moved == 5 * case.elements * 4 // 2
    got = C.reference("swiglu:grad", a, axis=-1)
    assert got.shape == x.shape


def test_bfloat16_rows(tmp_path):
    pytest.importorskip("ml_dtypes")
    json_path = tmp_path / "bf16.json"
    proc = _bench(
        "--ops", "relu,gelu,softmax,swiglu", "--dtype", "bfloat16", "--cpu-sizes", "2**14", "--rows", "1024",
        "--device", "cpu", "--backends", "numpy,numpy-naive", "--min-time", "0", "--min-runs", "3",
        "--no-progress", "--json", str(json_path),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(json_path.read_text())
    ours = [r for r in doc["results"] if r["backend"] == "numpy"]
    assert ours and all(r["correct"] and r["dtype"] == "bfloat16" for r in ours)
    assert {r["op"] for r in ours} >= {"relu", "gelu", "softmax", "swiglu", "gelu:grad", "gelu(x+bias)"}


def test_the_side_by_side_section_interleaves_and_takes_ratios(monkeypatch):
    # small cases, fake peers of known relative speed: gpuact's NumPy path (the real one) against a
    # peer that does twice the work, and one that cannot run the case (listed as skipped)
    from gpuact.bench import peers

    def peer(backend, repeats):
        def make(op, axis):
            def f(x):
                for _ in range(repeats):
                    y = gpuact_relu(x)
                return y

            return f

        return Impl(backend, "cpu", False, "cpu", _make=make)

    import gpuact

    gpuact_relu = gpuact.relu
    ours_calls = []

    def ours(x):
        ours_calls.append(time.perf_counter())
        return gpuact_relu(x)

    numpy_impl = Impl("numpy", "cpu", True, "cpu", _make=lambda op, axis: ours)

    def broken(op, axis):
        raise RuntimeError("no such op here")

    cases = [C.Case("relu", "float32", (2**16,), None)]
    entries = peers.side_by_side(
        [numpy_impl, peer("torch", 3), Impl("jax", "cpu", False, "cpu", _make=broken)],
        cases,
        rounds=5,
        calls=3,
        warm_s=0.02,
    )
    (entry,) = entries
    # one warm-up call, then per round untimed calls for warm_s (at least one) and the 3 timed ones:
    # far more than 1 + 5 * 4 calls, since one call of 2**16 takes well under a millisecond
    assert len(ours_calls) > 1 + 5 * 4 + 5 * 5 and entry["warm_s"] == 0.02
    assert set(entry["seconds"]) == {"numpy", "torch", peers.COPY}
    assert all(len(v) == 5 for v in entry["round_medians"].values())
    assert 0.1 < entry["ratio"]["torch"] < 0.9  # the peer does three passes to gpuact's one
    assert "no such op here" in entry["skipped"]["jax"]
    assert entry["frac_of_copy"] > 0
    rows = peers.table_rows(entries)
    assert rows[0][:2] == ["relu", "2**16"] and rows[0][4] == "-"  # jax: no ratio
    # no peer, no section
    assert peers.side_by_side([numpy_impl], cases) == []


def test_the_side_by_side_section_runs_by_default_and_alone():
    parse = cli._parser().parse_args
    assert cli.Config(parse([])).side_by_side
    assert not cli.Config(parse(["--quick"])).side_by_side
    assert not cli.Config(parse(["--ops", "relu"])).side_by_side
    assert not cli.Config(parse(["--no-side-by-side"])).side_by_side
    assert not cli.Config(parse(["--device", "gpu"])).side_by_side
    alone = cli.Config(parse(["--side-by-side"]))
    assert alone.side_by_side and not alone.forward and not alone.train_ops
