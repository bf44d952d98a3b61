"""Temporal-encoder attention backends on CPU: native vs HF Longformer vs full attention.

Measures one training step (forward + backward, train mode, dropout on) of the encoder backbone
over ``T`` frames (+ the [CLS] token) at a fixed batch and width, for

* ``native``: :class:`cmmvt.models.native.NativeLocalAttention` (chunked SDPA),
* ``hf``: :class:`cmmvt.models.encoder.LocalAttention` (``transformers.LongformerModel``),
* ``full``: :class:`cmmvt.models.encoder.GlobalAttention` (``nn.TransformerEncoder``, i.e. what
  ``model.attention=global`` runs), skipped with a note once its projected memory or time exceeds
  ``--mem-cap-gb`` / ``--time-cap-s`` (projection: quadratic from the previous length),

plus the attention sub-layer alone (``attention.self`` of one layer, native vs HF).

    python benchmarks/attention.py           # T ∈ {256, 1024, 4096, 16384} → reports/bench/attention.{json,png}
    python benchmarks/attention.py --quick   # T ∈ {64, 256}, 1 repeat (CI, < 30 s)

Method:

* Time: wall clock (``time.perf_counter``) of ``zero_grad → forward → sum → backward``, after one
  warm-up step; backends are interleaved within each repeat (so background load hits all of them
  alike); min and median over ``--repeats`` are reported; the speedups use the min.
* Peak memory: ``tracemalloc`` does not see PyTorch's CPU allocations, so this uses the kernel's
  resident-set high-water mark. In a fresh process per length (started with
  ``MALLOC_MMAP_THRESHOLD_=1 MiB`` so that glibc returns freed tensors to the OS instead of keeping
  them in its heap), for each backend in turn: ``gc.collect()``, reset the high-water mark by
  writing ``5`` to ``/proc/self/clear_refs``, read ``VmRSS``, run one step, read ``VmHWM``; peak =
  ``VmHWM − VmRSS before``: activations, gradients and allocator slack of that step, not the
  weights or inputs. Timings come from a separate process without that setting (it slows
  allocation-heavy code by ~20 %).
* Threads: 1 intra-op thread by default (``--threads``; 0 = PyTorch's default). On a shared 2-core
  machine, 2 OpenMP threads stall at every parallel region whenever another process holds a core:
  the same step then varied up to 5× between runs. One thread measures the work reproducibly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("native", "hf", "full")
FULL_LENGTHS = (256, 1024, 4096, 16384)
QUICK_LENGTHS = (64, 256)


# ---- worker (runs in a subprocess) -----------------------------------------------------------


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _build(args: argparse.Namespace):
    import torch

    from cmmvt.models.encoder import GlobalAttention, LocalAttention
    from cmmvt.models.native import NativeLocalAttention

    torch.manual_seed(0)
    sizes = dict(hidden=args.hidden, heads=args.heads, layers=args.layers, dropout=args.dropout)
    hf = LocalAttention(**sizes, window=args.window)
    native = NativeLocalAttention(**sizes, window=args.window)
    native.load_state_dict(hf.state_dict())
    makers = {"native": lambda: native, "hf": lambda: hf, "full": lambda: GlobalAttention(**sizes)}
    return {k: makers[k]().train() for k in args.backends}


def _step(module, x, mask) -> None:
    module.zero_grad(set_to_none=True)
    xr = x.detach().requires_grad_(True)
    module(xr, mask).sum().backward()


def _attention_op(modules, L: int, args: argparse.Namespace):
    """Callables running fwd+bwd of one layer's ``attention.self`` alone (native and HF)."""
    import torch
    import torch.nn.functional as F

    from cmmvt.models.native import AttentionLayout

    B, D, w = args.batch, args.hidden, args.window
    x = torch.randn(B, L, D)
    mask = torch.ones(B, L, dtype=torch.bool)
    ops = {}
    if "native" in modules:
        sa = modules["native"].longformer.encoder.layer[0].attention.self

        def native_op():
            xr = x.detach().requires_grad_(True)
            sa(xr, AttentionLayout(mask, w // 2)).sum().backward()

        ops["native"] = native_op
    if "hf" in modules:
        sa_hf = modules["hf"].longformer.encoder.layer[0].attention.self
        Lp = L + (-L % w)  # HF's kernel needs a multiple of the window, as the wrapper pads
        ext = torch.zeros(B, Lp)
        ext[:, L:] = torch.finfo(torch.float32).min
        ext[:, 0] = torch.finfo(torch.float32).max
        xp = F.pad(x, (0, 0, 0, Lp - L))

        def hf_op():
            xr = xp.detach().requires_grad_(True)
            out = sa_hf(xr, attention_mask=ext, is_index_masked=ext < 0, is_index_global_attn=ext > 0,
                        is_global_attn=True)[0]
            out.sum().backward()

        ops["hf"] = hf_op
        lins = [getattr(sa_hf, n) for n in ("query", "key", "value", "query_global", "key_global", "value_global")]

        def hf_proj():  # what HF's attention spends in its six D×D projections of every token
            xr = xp.detach().requires_grad_(True)
            sum(lin(xr).sum() for lin in lins).backward()

        ops["hf_projections"] = hf_proj
    if "native" in modules:
        lay = AttentionLayout(mask, w // 2)
        n_rows = (lay.n + 2) * (lay.b + 1)  # rows of the interleaved layout
        xl = torch.randn(n_rows, D)

        def native_proj():  # the fused q/k/v GEMM over the interleaved layout ([CLS]-side is O(D²))
            xr = xl.detach().requires_grad_(True)
            sa._qkv(xr).sum().backward()

        ops["native_projections"] = native_proj
    return ops


def worker(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    modules = _build(args)
    out: dict = {}
    warm = torch.randn(args.batch, 33, args.hidden), torch.ones(args.batch, 33, dtype=torch.bool)
    for m in modules.values():  # library / thread-pool initialisation, not counted anywhere
        _step(m, *warm)
    for T in args.lengths:
        L = T + 1  # frames + [CLS]
        x = torch.randn(args.batch, L, args.hidden)
        mask = torch.ones(args.batch, L, dtype=torch.bool)
        res: dict = {}
        if args.kind in ("memory", "both"):
            for name, m in modules.items():
                gc.collect()
                _reset_peak()
                before = _status("VmRSS")
                t0 = time.perf_counter()
                _step(m, x, mask)
                res[name] = {"peak_mb": max(0, _status("VmHWM") - before) / 2**20,
                             "first_step_s": time.perf_counter() - t0}
        if args.kind in ("time", "both"):
            times: dict[str, list[float]] = {k: [] for k in modules}
            for m in modules.values():
                _step(m, x, mask)  # warm-up at this length
            for _ in range(args.repeats):
                for name, m in modules.items():
                    t0 = time.perf_counter()
                    _step(m, x, mask)
                    times[name].append(time.perf_counter() - t0)
            op_times: dict[str, list[float]] = {}
            ops = _attention_op(modules, L, args)
            for f in ops.values():
                f()
            for _ in range(args.repeats):
                for name, f in ops.items():
                    t0 = time.perf_counter()
                    f()
                    op_times.setdefault(name, []).append(time.perf_counter() - t0)
            fwd: dict[str, list[float]] = {k: [] for k in modules}
            with torch.inference_mode():
                for m in modules.values():
                    m.eval()
                    m(x, mask)  # warm-up
                for _ in range(args.repeats):
                    for name, m in modules.items():
                        t0 = time.perf_counter()
                        m(x, mask)
                        fwd[name].append(time.perf_counter() - t0)
                for m in modules.values():
                    m.train()
            for k, v in times.items():
                res.setdefault(k, {}).update(_summary(v))
                res[k]["forward_eval_s"] = min(fwd[k])
            res["attention_op"] = {k: _summary(v) for k, v in op_times.items()}
        out[str(T)] = res
    return out


def _summary(ts: list[float]) -> dict:
    s = sorted(ts)
    return {"time_s": s[0], "time_median_s": s[len(s) // 2], "times_s": ts}


# ---- driver ----------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, kind: str, lengths: list[int], backends: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
           "--lengths", *map(str, lengths), "--backends", *backends]
    for k in ("batch", "hidden", "heads", "window", "layers", "dropout", "repeats", "threads"):
        cmd += [f"--{k}", str(getattr(args, k))]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kind in ("memory", "both"):
        env.update(MALLOC_MMAP_THRESHOLD_=str(2**20), MALLOC_TRIM_THRESHOLD_=str(2**20))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"worker {kind} {lengths} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def drive(args: argparse.Namespace) -> dict:
    import torch
    import transformers

    lengths = list(args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS))
    results: dict[str, dict[str, dict]] = {b: {} for b in args.backends}
    attn_op: dict[str, dict[str, dict]] = {b: {} for b in ("native", "hf") if b in args.backends}
    notes: list[str] = []
    load_before = _loadavg()
    t_start = time.perf_counter()
    # Quick: one process per kind for all lengths. Full: fresh processes per length.
    groups = [lengths] if args.quick else [[T] for T in lengths]
    prev: dict[str, tuple[int, float, float]] = {}  # backend → (T, peak_mb, time_s) last measured
    for group in groups:
        T0 = group[0]
        run = []
        for b in args.backends:
            if b == "full" and b in prev:
                Tp, mem_p, time_p = prev[b]
                scale = (T0 / Tp) ** 2
                if mem_p * scale > args.mem_cap_gb * 1024 or time_p * scale > args.time_cap_s:
                    for T in group:
                        results[b][str(T)] = {"skipped": (
                            f"projected peak {mem_p * scale / 1024:.1f} GiB, step {time_p * scale:.0f} s "
                            f"(quadratic from T={Tp}) > caps {args.mem_cap_gb} GiB / {args.time_cap_s} s")}
                    notes.append(f"full attention skipped at T={T0}: {results[b][str(T0)]['skipped']}")
                    continue
            run.append(b)
        if args.quick:  # one process: memory first, then (allocator-penalised) timings
            mem = tim = _spawn(args, "both", group, run)
        else:
            mem = _spawn(args, "memory", group, run)
            tim = _spawn(args, "time", group, run)
        for T in group:
            for b in run:
                results[b][str(T)] = {**tim[str(T)][b], "peak_mb": mem[str(T)][b]["peak_mb"]}
                prev[b] = (T, mem[str(T)][b]["peak_mb"], tim[str(T)][b]["time_s"])
            for b, r in tim[str(T)].get("attention_op", {}).items():
                attn_op.setdefault(b, {})[str(T)] = r
        print(f"T={group}: " + ", ".join(
            f"{b} {results[b][str(group[-1])].get('time_s', float('nan')):.3f}s/"
            f"{results[b][str(group[-1])].get('peak_mb', float('nan')):.0f}MB" for b in run), flush=True)

    def ratio(a: dict, b: dict, key: str) -> float | None:
        return b[key] / a[key] if key in a and key in b and a[key] > 0 else None

    speedup = {T: ratio(results["native"][T], results["hf"][T], "time_s")
               for T in results.get("native", {}) if "hf" in results and T in results["hf"]}
    op_speedup = {T: ratio(attn_op["native"][T], attn_op["hf"][T], "time_s")
                  for T in attn_op.get("native", {}) if T in attn_op.get("hf", {})}
    fwd_speedup = {T: ratio(results["native"][T], results["hf"][T], "forward_eval_s")
                   for T in speedup}
    core = {}  # attention op minus its projection GEMMs: the sliding-window machinery itself
    for T in op_speedup:
        c_nat = attn_op["native"][T]["time_s"] - attn_op.get("native_projections", {}).get(T, {}).get("time_s", 0)
        c_hf = attn_op["hf"][T]["time_s"] - attn_op.get("hf_projections", {}).get(T, {}).get("time_s", 0)
        core[T] = {"native_s": c_nat, "hf_s": c_hf, "speedup": c_hf / c_nat if c_nat > 0 else None}
    # What native would reach if its sliding-window core (per layer) cost nothing: the projections,
    # FFN and norms it shares with HF bound any exact-equivalent kernel's speedup.
    bound = {T: results["hf"][T]["time_s"] / (results["native"][T]["time_s"] - args.layers * core[T]["native_s"])
             for T in core if T in speedup}
    full_vs_native = {T: ratio(results["native"][T], results["full"][T], "time_s")
                      for T in results.get("full", {}) if "time_s" in results["full"][T]}
    nat = results.get("native", {})
    mem_ratio = (nat["16384"]["peak_mb"] / nat["4096"]["peak_mb"]
                 if "16384" in nat and "4096" in nat else None)
    at4096 = speedup.get("4096")
    report = {
        "config": {
            "batch": args.batch, "hidden": args.hidden, "heads": args.heads, "window": args.window,
            "layers": args.layers, "dropout": args.dropout, "lengths_frames": lengths,
            "tokens": "T frames + 1 [CLS]", "step": "train mode, forward + sum + backward",
            "repeats": args.repeats, "quick": args.quick,
            "threads": args.threads or torch.get_num_threads(), "cpu": _cpu_name(),
            "torch": torch.__version__, "transformers": transformers.__version__,
        },
        "method": {
            "time": "wall clock of zero_grad+forward+backward (train mode), 1 warm-up step, backends "
                    "interleaved per repeat; time_s = min, time_median_s = median over repeats; "
                    "forward_eval_s = min over repeats of an eval-mode forward under inference_mode",
            "memory": "peak resident set: fresh process per length with MALLOC_MMAP_THRESHOLD_=1MiB; per "
                      "backend: gc, reset VmHWM via /proc/self/clear_refs, VmHWM after one step minus "
                      "VmRSS before it (tracemalloc cannot see torch CPU allocations)",
            "full_attention_cap": f"skipped when projected (quadratic) peak > {args.mem_cap_gb} GiB or "
                                  f"step > {args.time_cap_s} s",
        },
        "results": results,
        "attention_op": attn_op,
        "speedup_native_over_hf": speedup,
        "speedup_native_over_hf_forward_eval": fwd_speedup,
        "speedup_native_over_hf_attention_op": op_speedup,
        "attention_core_without_projections": core,
        "speedup_bound_if_native_core_were_free": bound,
        "speedup_native_over_full": full_vs_native,
        "speedup_native_over_hf_at_4096": at4096,
        "memory_ratio_native_16384_over_4096": mem_ratio,
        "targets": {
            "speedup_at_4096_min": 5.0, "memory_ratio_max": 5.0,
            "speedup_met": None if at4096 is None else at4096 >= 5.0,
            "memory_ratio_met": None if mem_ratio is None else mem_ratio <= 5.0,
        },
        "load_average": {"before": load_before, "after": _loadavg()},
        "wall_s": time.perf_counter() - t_start,
        "notes": notes,
    }
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for b, rows in report["results"].items():
        Ts = [int(T) for T, r in rows.items() if "time_s" in r]
        if not Ts:
            continue
        axes[0].plot(Ts, [rows[str(T)]["time_s"] for T in Ts], "o-", label=b)
        axes[1].plot(Ts, [rows[str(T)]["peak_mb"] for T in Ts], "o-", label=b)
        for T, r in rows.items():
            if "skipped" in r:
                axes[0].annotate(f"{b} skipped at T={T}\n(projected over the caps)", (int(T), max(Ts and [
                    rows[str(t)]["time_s"] for t in Ts])), fontsize=7, ha="right", va="top")
    for b, rows in report.get("attention_op", {}).items():
        if b not in ("native", "hf"):
            continue
        Ts = [int(T) for T in rows]
        axes[0].plot(Ts, [rows[str(T)]["time_s"] for T in Ts], "x:", label=f"{b} (attention op only)")
    c = report["config"]
    axes[0].set(xscale="log", yscale="log", xlabel="frames T", ylabel="fwd+bwd step (s)",
                title=f"time, B={c['batch']}, D={c['hidden']}, {c['layers']} layers, window {c['window']}")
    axes[1].set(xscale="log", yscale="log", xlabel="frames T", ylabel="peak RSS over step (MiB)",
                title="peak memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="T ∈ {64, 256}, 1 repeat (CI)")
    ap.add_argument("--out", type=Path, default=REPO / "reports/bench/attention.json")
    ap.add_argument("--png", type=Path, default=None, help="default: --out with .png")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="frames T")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1, see the module docstring; 0 = torch default)")
    ap.add_argument("--mem-cap-gb", type=float, default=8.0)
    ap.add_argument("--time-cap-s", type=float, default=60.0)
    ap.add_argument("--worker", choices=("memory", "time", "both"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.worker:
        args.kind = args.worker
        print(json.dumps(worker(args)))
        return
    report = drive(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.png or args.out.with_suffix(".png"))
    s, m = report["speedup_native_over_hf_at_4096"], report["memory_ratio_native_16384_over_4096"]
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)"
          + (f"; native/hf speedup at T=4096: {s:.2f}x" if s else "")
          + (f"; native peak memory T=16384/T=4096: {m:.2f}x" if m else ""))


if __name__ == "__main__":
    main()
