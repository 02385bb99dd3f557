"""Run every benchmark case and write ``benchmarks/results.json``.

Usage: ``python -m benchmarks [case ...] [--quick] [--rounds R]`` (``make bench`` runs them all).
``--quick`` runs the smallest problem of each case with three rounds, a smoke test of the
benchmarks rather than a measurement; it writes ``benchmarks/results-quick.json`` unless
``--out`` says otherwise, so the committed results are never replaced by quick numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks import cases
from benchmarks.harness import (
    ROUNDS,
    THREADS,
    Bench,
    Result,
    copy_bandwidth,
    gemm_throughput,
    machine,
    sharing_probe,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "results.json"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=HERE).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _print(result: Result) -> None:
    ratios = ", ".join(f"{k} {v:.2f}x [{result.ratio_spread[k][0]:.2f}-{result.ratio_spread[k][1]:.2f}]"
                       for k, v in result.ratios.items() if k != result.reference)
    frac = ""
    if result.limit_fraction is not None:
        lo, hi = result.limit_fraction_spread
        frac = f"; {result.limit_fraction:.0%} [{lo:.0%}-{hi:.0%}] of {result.limit}"
    print(f"{result.case} [{result.problem}]: {ratios}{frac}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"cases to run (default: all of {', '.join(cases.CASES)})")
    parser.add_argument("--quick", action="store_true", help="smallest problems, three rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds per case (default {ROUNDS})")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(cases.CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(cases.CASES)}")
    rounds = args.rounds or (3 if args.quick else ROUNDS)
    if rounds < 3:
        parser.error("--rounds must be at least 3 (a median and a spread need three)")
    out_path = args.out or (HERE / "results-quick.json" if args.quick else OUT)
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    limits = {"copy_gb_per_s": copy_bandwidth(), "gemm_gflop_per_s": gemm_throughput()}
    print(f"machine: copy {limits['copy_gb_per_s']:.1f} GB/s, GEMM {limits['gemm_gflop_per_s']:.1f} GFLOP/s", flush=True)
    bench = Bench(limits, rounds=rounds, budget=0.1 if args.quick else 0.25, quick=args.quick)
    results, curves, seconds, sharing = [], [], {}, {}
    for name in args.names or list(cases.CASES):
        sharing[name] = [round(sharing_probe(), 2)]
        t0 = time.perf_counter()
        for item in cases.CASES[name](bench):
            if isinstance(item, Result):
                results.append(item.as_dict())
                _print(item)
            else:
                curves.append(item)
                slopes = ", ".join(f"{k} {v:.2f}" for k, v in item["slopes"].items() if v is not None)
                print(f"curve {item['case']}: slopes {slopes}", flush=True)
        seconds[name] = round(time.perf_counter() - t0, 1)
        sharing[name].append(round(sharing_probe(), 2))
        print(f"  ({name} took {seconds[name]:.0f} s; sharing probe {sharing[name][0]:.2f} before, "
              f"{sharing[name][1]:.2f} after)", flush=True)
    report = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": machine(),
        "limits": limits,
        "rounds": rounds,
        "quick": args.quick,
        "results": results,
        "curves": curves,
        "case_seconds": seconds,
        "sharing_probe": sharing,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out_path} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
