"""Markdown tables from the benchmarks' JSON results (docs/benchmarks/*.json).

    .venv/bin/python -m bench.fanout --json docs/benchmarks/fanout.json   # and the others
    .venv/bin/python -m bench.report                                       # prints the tables
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def fanout(d: dict) -> list[str]:
    out = ["| server | clients | deflate offered → used | idle RSS KiB/conn | RSS KiB/conn after | "
           "fan-out ms | p50 ms | p99 ms | server CPU µs/msg | loadgen CPU % |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        note = "" if r["delivered_pct"] == 100 else f" ({r['delivered_pct']:.1f} % delivered)"
        out.append(f"| {r['impl']}{note} | {r['clients']:,} | {yes(r['deflate_offered'])} → "
                   f"{yes(r['compressed'])} | {r['rss_kib_per_conn']:.1f} | "
                   f"{r.get('rss_active_kib_per_conn', float('nan')):.1f} | {r['fanout_ms']:.0f} | "
                   f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['cpu_us_per_msg']:.1f} | "
                   f"{r['loadgen_cpu_pct']:.1f} |")
    out += ["", "| baseline vs ours | clients | deflate offered | idle RSS/conn | RSS/conn after | "
                "fan-out time | p99 | CPU/msg |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in d["ratios"]:
        out.append(f"| {r['vs ours']} | {r['clients']:,} | {yes(r['deflate offered'])} | "
                   f"{r['RSS/conn x']:.1f}x | {r.get('RSS/conn after x', float('nan')):.1f}x | "
                   f"{r['fan-out time x']:.1f}x | {r['p99 x']:.1f}x | {r['CPU/msg x']:.1f}x |")
    return out


def cross_worker(d: dict) -> list[str]:
    out = ["| server | clients (4 workers) | p50 ms | p99 ms | max ms | p99 vs ours |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        clients = f"{r['clients']:,}" if isinstance(r["clients"], int) else r["clients"]
        out.append(f"| {r['impl']} | {clients} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['max_ms']:.1f} | {r['p99 vs ours x']:.1f}x |")
    return out


def failover(d: dict) -> list[str]:
    out = ["| implementation | fault | trials | median s | p95 s | min s | max s |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        out.append(f"| {r['impl']} | {r['fault']} | {r['trials']} | {r['median_s']:.3f} | "
                   f"{r['p95_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} |")
    out += ["", "| fault | original / ours, median | original / ours, p95 |", "|---|---:|---:|"]
    for r in d["ratios"]:
        out.append(f"| {r['fault']} | {r['original / ours (median)']:.0f}x | "
                   f"{r['original / ours (p95)']:.0f}x |")
    return out


def redis_load(d: dict) -> list[str]:
    out = ["| algorithm | nodes | round trips / s per node | vs ours | steps incl. inside scripts / s "
           "per node | round trips in the window |", "|---|---:|---:|---:|---:|---|"]
    for r in d["rows"]:
        out.append(f"| {r['impl']} | {r['nodes']} | {r['per_node_per_s']:.3f} | {r['vs ours x']:.1f}x | "
                   f"{r['with_script_steps_per_node_per_s']:.3f} | {r['breakdown']} |")
    return out


def main() -> int:
    for name, render in (("fanout", fanout), ("cross_worker", cross_worker), ("failover", failover),
                         ("redis_load", redis_load)):
        path = DIR / f"{name}.json"
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        m = d["machine"]
        print(f"### {name}\n\n`{m['command']}` — {m['date']}, {m['cpu']}, {m['cores']} cores, "
              f"Python {m['python']}\n")
        print("\n".join(render(d)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
