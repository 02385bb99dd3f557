"""Run every benchmark case and write ``benchmarks/results.json``.

Usage: ``python -m benchmarks [case ...] [--quick]`` (``make bench`` runs them all).
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
from benchmarks.harness import THREADS, copy_bandwidth, gemm_throughput, machine

OUT = Path(__file__).resolve().parent / "results.json"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=OUT.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"cases to run (default: all of {', '.join(cases.CASES)})")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(cases.CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(cases.CASES)}")
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    limits = {"copy_gb_per_s": copy_bandwidth(), "gemm_gflop_per_s": gemm_throughput()}
    print(f"machine: copy {limits['copy_gb_per_s']:.1f} GB/s, GEMM {limits['gemm_gflop_per_s']:.1f} GFLOP/s", flush=True)
    results = []
    for name in args.names or list(cases.CASES):
        t0 = time.perf_counter()
        for result in cases.CASES[name](limits):
            results.append(result.as_dict())
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result.ratios().items() if k != result.reference)
            frac = f"; {result.limit_fraction:.0%} of {result.limit}" if result.limit_fraction is not None else ""
            print(f"{result.case} [{result.problem}]: {ratios}{frac}", flush=True)
        print(f"  ({name} took {time.perf_counter() - t0:.0f} s)", flush=True)
    report = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": machine(),
        "limits": limits,
        "results": results,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
