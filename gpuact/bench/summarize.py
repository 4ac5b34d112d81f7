"""``python -m gpuact.bench.summarize FILE.json``: the headline table of one run, in Markdown.

Per op (float32, or ``--dtype``), at the largest size timed on the GPU (the CPU when the run had no
GPU), softmax at rows of 1024 along the last axis: gpuact's best path, its fraction of the copy
bandwidth, and its speed-up over gpuact's NumPy path, PyTorch and JAX on the same device. Then the
per-call host overhead. Paste it into ``bench/results/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys

from gpuact.bench.report import case_label, fmt_gbps, fmt_ratio, fmt_time

GPUACT = ("cupy", "numba", "numpy")


def _pick(results, op, dtype, device):
    rows = [r for r in results if r["op"] == op and r["dtype"] == dtype and r["device"] == device]
    if rows and rows[0]["axis"] is not None:
        want = [r for r in rows if r["axis"] == -1 and r["shape"][-1] == 1024] or rows
        rows = want
    if not rows:
        return []
    n = max(r["elements"] for r in rows)
    return [r for r in rows if r["elements"] == n]


def headline(doc, dtype="float32") -> str:
    device = "gpu" if any(r["device"] == "gpu" for r in doc["results"]) else "cpu"
    gpu = (doc.get("gpu") or {}).get("name") or "no GPU"
    lines = [
        (
            f"Run of {doc.get('date', '?')} on {doc['machine'].get('cpu_model')} + {gpu}; {dtype}; "
            f"copy bandwidth {fmt_gbps(doc['copy_gbps'].get(device))} GB/s ({device}, peak)."
        ),
        "",
        "| op | size | path | median | GB/s | of copy | vs numpy | vs torch | vs jax |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for op in doc["config"]["ops"]:
        rows = _pick(doc["results"], op, dtype, device)
        for backend in GPUACT:
            r = next((r for r in rows if r["backend"] == backend), None)
            if r is None:
                continue
            size = case_label(r)
            if not r["correct"]:
                lines.append(f"| {op} | {size} | {backend} | WRONG | | | | | |")
                continue
            lines.append(
                f"| {op} | {size} | {backend} | {fmt_time(r['median_s'])} | {fmt_gbps(r['gbps'])} | "
                f"{fmt_ratio(r['frac_of_copy'])} | {fmt_ratio(r['speedup_vs_numpy'])} | "
                f"{fmt_ratio(r.get('speedup_vs_torch'))} | {fmt_ratio(r.get('speedup_vs_jax'))} |"
            )
    overhead = [o for o in doc.get("overhead", []) if o["device"] == device]
    if overhead:
        lines += [
            "",
            "| per-call host overhead | " + " | ".join(sorted({o["backend"] for o in overhead})) + " |",
            "|---|" + "---:|" * len({o["backend"] for o in overhead}),
        ]
        for op in dict.fromkeys(o["op"] for o in overhead):
            by = {o["backend"]: o for o in overhead if o["op"] == op}
            cells = [fmt_time(by[b]["median_s"]) if b in by else "-" for b in sorted({o["backend"] for o in overhead})]
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpuact.bench.summarize", description=__doc__.splitlines()[0])
    p.add_argument("json", help="a file written by gpuact-bench --json")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    with open(args.json) as f:
        doc = json.load(f)
    if doc.get("schema") != "gpuact-bench/1":
        print(f"{args.json}: not a gpuact-bench/1 file", file=sys.stderr)
        return 2
    print(headline(doc, args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
