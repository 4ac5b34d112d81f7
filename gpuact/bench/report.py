"""Terminal table (rich when installed), progress, JSON and the plot."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys

from gpuact.bench.cases import SOFTMAX_OPS, size_label


def _have(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def have_matplotlib() -> bool:
    if not _have("matplotlib"):
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# formatting


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_gbps(g):
    return "-" if g is None else (f"{g:.1f}" if g < 1000 else f"{g:.0f}")


def case_label(r) -> str:
    if r["axis"] is None:
        return size_label(r["elements"])
    return f"{'x'.join(map(str, r['shape']))} ax{r['axis']}"


HEADERS = (
    "op",
    "dtype",
    "size / shape",
    "dev",
    "backend",
    "median",
    "GB/s",
    "of copy",
    "vs numpy",
    "vs torch",
    "vs jax",
)


def _rows(doc):
    order = {op: i for i, op in enumerate(doc["config"]["ops"])}
    backend_order = ("numpy", "cupy", "numba", "numpy-naive", "cupy-naive", "torch", "jax", "tensorflow")
    results = sorted(
        doc["results"],
        key=lambda r: (
            order.get(r["op"], 99),
            r["dtype"],
            r["axis"] is not None and r["axis"] != -1,
            r["axis"] is not None and r["shape"][r["axis"]],
            r["elements"],
            r["device"] != "cpu",
            backend_order.index(r["backend"]) if r["backend"] in backend_order else 99,
        ),
    )
    for r in results:
        if r["correct"]:
            cells = (
                fmt_time(r["median_s"]),
                fmt_gbps(r["gbps"]),
                fmt_ratio(r["frac_of_copy"]) + (" !" if r.get("suspicious") else ""),
                fmt_ratio(r["speedup_vs_numpy"]),
                fmt_ratio(r.get("speedup_vs_torch")),
                fmt_ratio(r.get("speedup_vs_jax")),
            )
        else:
            cells = ("WRONG", "-", "-", "-", "-", "-")
        yield r, (r["op"], r["dtype"], case_label(r), r["device"], r["backend"], *cells)


class Output:
    """Everything the CLI prints: through rich when installed (and not --plain), else plain text."""

    def __init__(self, plain=False):
        self.rich = None
        self.statuses = []
        if not plain and _have("rich"):
            from rich.console import Console

            width = None if sys.stdout.isatty() else 150
            self.rich = Console(width=width, highlight=False)
            self.err = Console(stderr=True, highlight=False)

    def note(self, text):
        print(text, file=sys.stderr, flush=True)

    def backends(self, statuses):
        self.statuses = statuses
        print("Backends:")
        for s in statuses:
            mark = "used   " if s.used else "skipped"
            print(f"  {mark} {s.backend + '@' + s.device:<18} {s.reason}")
        sys.stdout.flush()

    @contextlib.contextmanager
    def progress(self, total, enabled=True):
        if not enabled or total == 0:
            yield lambda text: None
            return
        if self.rich is not None and self.err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn("{task.description:<44}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.err,
                transient=True,
            ) as bar:
                task = bar.add_task("benchmark", total=total)

                def tick(text):
                    bar.update(task, advance=1, description=text)

                yield tick
            return
        # plain: a line every 10 %
        state = {"done": 0, "next": 0.1}

        def tick(text):
            state["done"] += 1
            frac = state["done"] / total
            if frac >= state["next"] or state["done"] == 1:
                print(f"[{state['done']}/{total}] {text}", file=sys.stderr, flush=True)
                while state["next"] <= frac:
                    state["next"] += 0.1

        yield tick

    def table(self, doc):
        rows = list(_rows(doc))
        title = (
            "gpuact-bench: median per call; GB/s = (input + output bytes) / median; "
            "'of copy' = GB/s / same-size copy; 'vs X' = X's time / this time (> 1: faster)"
        )
        if self.rich is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
            for h in HEADERS:
                table.add_column(
                    h, justify="right" if h not in ("op", "dtype", "backend", "dev") else "left", no_wrap=True
                )
            last_op = None
            for r, cells in rows:
                if last_op is not None and r["op"] != last_op:
                    table.add_section()
                last_op = r["op"]
                style = (
                    "bold red"
                    if not r["correct"]
                    else ("yellow" if r.get("suspicious") else ("bold" if r["backend"] in ("cupy", "numba") else None))
                )
                table.add_row(*cells, style=style)
            self.rich.print(table)
        else:
            print(title)
            widths = [max(len(h), *(len(c[i]) for _, c in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
            line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths))
            print(line)
            print("-" * len(line))
            last_op = None
            for r, cells in rows:
                if last_op is not None and r["op"] != last_op:
                    print()
                last_op = r["op"]
                print("  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        sys.stdout.flush()

    def side_by_side(self, doc):
        from gpuact.bench import peers

        entries = doc.get("side_by_side") or []
        if not entries:
            return
        title = peers.TITLE.format(rounds=entries[0]["rounds"], calls=entries[0]["calls"])
        rows = peers.table_rows(entries)
        if self.rich is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left", pad_edge=False)
            for h in peers.HEADER:
                table.add_column(h, justify="left" if h in ("op", "shape") else "right", no_wrap=True)
            for e, cells in zip(entries, rows):
                behind = any(r > 1.0 for r in e["ratio"].values())
                table.add_row(*cells, style="yellow" if behind else None)
            self.rich.print(table)
        else:
            print(title)
            widths = [max(len(h), *(len(c[i]) for c in rows)) for i, h in enumerate(peers.HEADER)]
            print("  ".join(h.rjust(w) for h, w in zip(peers.HEADER, widths)))
            for cells in rows:
                print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
        sys.stdout.flush()

    def summary(self, doc):
        cg = doc["copy_gbps"]
        large = doc.get("copy_gbps_large", {})
        parts = [f"copy bandwidth (peak / large): CPU {fmt_gbps(cg['cpu'])} / {fmt_gbps(large.get('cpu'))} GB/s"]
        if cg.get("gpu"):
            parts.append(f"GPU {fmt_gbps(cg['gpu'])} / {fmt_gbps(large.get('gpu'))} GB/s")
        print("; ".join(parts))
        if doc["overhead"]:
            print(
                "Per-call host overhead (200 back-to-back calls, one sync; gpuact against the plain NumPy "
                "expression on the CPU, a bare CuPy launch on the GPU):"
            )
            for o in doc["overhead"]:
                versus = ""
                if o.get("vs_reference") is not None:
                    versus = f"  {o['vs_reference']:.2f}x the reference ({fmt_time(o['added_s'])} added)"
                print(
                    f"  {o['op']:<10} {case_label(o):<14} {o['backend'] + '@' + o['device']:<18} "
                    f"{fmt_time(o['median_s'])}{versus}"
                )
        if doc.get("memory"):
            tokens, hidden, intermediate = doc["memory"][0]["shape"]
            print(
                f"Memory of one MLP training step, Linear({hidden}, 2x{intermediate}) -> swiglu -> "
                f"Linear({intermediate}, {hidden}) on {tokens} tokens (kept for the backward; CUDA peak):"
            )
            for m in doc["memory"]:
                peak = "" if m["peak_bytes"] is None else f"  peak {m['peak_bytes'] / 2**20:.1f} MiB"
                print(f"  {m['variant'] + '@' + m['device']:<18} saved {m['saved_bytes'] / 2**20:.1f} MiB{peak}")
        wrong = [r for r in doc["results"] if not r["correct"]]
        for r in wrong:
            print(f"WRONG: {r['op']} {r['dtype']} {case_label(r)} {r['backend']}@{r['device']}: {r['error']}")
        by_message: dict = {}
        for e in doc["errors"]:
            by_message.setdefault((e["status"], e["message"]), []).append(e)
        for (status, message), entries in by_message.items():
            if len(entries) > 3:
                where = sorted({f"{e['backend']}@{e['device']}" for e in entries})
                print(f"{status.upper()} x{len(entries)} ({', '.join(where)}): {message}")
                continue
            for e in entries:
                print(f"{status.upper()}: {e['op']} {e['dtype']} {e['shape']} {e['backend']}@{e['device']}: {message}")
        for s in doc["suspicious"]:
            print(f"SUSPICIOUS (faster than the copy measured in this run): {s}")
        print(
            f"{len(doc['results'])} results, {len(wrong)} wrong, {len(doc['errors'])} errors/skips, "
            f"{len(doc['suspicious'])} suspicious, {doc.get('wall_s', 0):.1f} s"
        )
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------


def _clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(doc, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_clean(doc), f, separators=(",", ":"), allow_nan=False)
        f.write("\n")


def _softmax_pick(results):
    """The softmax shape a panel shows: rows of 1024 along the last axis when present."""
    for want in ((1024, -1), (4096, -1), (32, -1)):
        sel = [r for r in results if r["axis"] == want[1] and r["shape"][want[1]] == want[0]]
        if sel:
            return sel, f"rows of {want[0]}, axis {want[1]}"
    if not results:
        return [], ""
    r0 = results[0]
    length = r0["shape"][r0["axis"]]
    sel = [r for r in results if r["axis"] == r0["axis"] and r["shape"][r0["axis"]] == length]
    return sel, f"rows of {length}, axis {r0['axis']}"


def plot(doc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = doc["config"]["ops"]
    cols = min(4, len(ops))
    rows = math.ceil(len(ops) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    dtypes = doc["config"]["dtypes"]
    styles = {"cpu": "--", "gpu": "-"}
    colors = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, op in enumerate(ops):
        ax = axes[i // cols][i % cols]
        res = [r for r in doc["results"] if r["op"] == op and r["correct"] and r["gbps"]]
        title = op
        if op in SOFTMAX_OPS:
            res, what = _softmax_pick(res)
            title = f"{op} ({what})"
        for dtype in dtypes:
            lines = {}
            for r in res:
                if r["dtype"] == dtype:
                    lines.setdefault((r["backend"], r["device"]), []).append((r["elements"], r["gbps"]))
            for (backend, device), pts in sorted(lines.items()):
                pts.sort()
                color = colors.setdefault(backend, palette[len(colors) % len(palette)])
                label = f"{backend}@{device}" + (f" {dtype}" if len(dtypes) > 1 else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[device], color=color, marker=".", label=label)
            for device in ("cpu", "gpu"):
                cp = sorted(
                    (c["elements"], c["gbps"]) for c in doc["copy"] if c["device"] == device and c["dtype"] == dtype
                )
                if cp:
                    ax.plot([p[0] for p in cp], [p[1] for p in cp], ":", color="gray", label=f"copy@{device}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("elements", fontsize=8)
        ax.set_ylabel("GB/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=6)
    for j in range(len(ops), rows * cols):
        axes[j // cols][j % cols].axis("off")
    machine = doc["machine"]["cpu_model"]
    gpu = (doc.get("gpu") or {}).get("name")
    fig.suptitle(f"gpuact-bench: {machine}" + (f" + {gpu}" if gpu else ""), fontsize=10)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
