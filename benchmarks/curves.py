"""Cost curves: time against problem size for kexue and its peers, on a geometric grid.

Every implementation of a curve runs in its own worker process (``python -m benchmarks.curves
worker CURVE IMPL``) whose address space is capped at its size after start-up plus a memory
budget (``RLIMIT_AS``). The parent sends the sizes in increasing order:

* a call that fails to allocate marks the implementation "out of memory" at that size, and it
  is not run at larger sizes;
* a first call that has not returned after the time cap is killed and marked "time cap";
* otherwise the point is the median of ``ROUNDS`` repeats, each about ``BUDGET`` seconds of calls
  (a single call if one call takes longer than that).

The implementations of a curve are not interleaved with each other (each has its own process);
the curves show how time grows with size, and the fitted log-log slopes use the larger sizes only,
where fixed per-call costs no longer dominate.
"""

from __future__ import annotations

import argparse
import gc
import json
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.harness import THREADS, fit_slope

MEMORY_GB = 4.0  # address space each implementation may use beyond its start-up size
TIME_CAP = 5.0  # seconds for one call
ROUNDS = 3
BUDGET = 0.1  # seconds of calls per repeat
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CurveSpec:
    name: str
    x_label: str
    problem: str
    sizes: list[int]
    quick_sizes: list[int]
    impls: dict[str, Callable[[int], Callable[[], object]]]  # name -> (size -> a call on inputs of that size)
    limit: str | None = None  # the implementation that is the machine's limit (drawn dashed), if any
    fit_above: int = 0  # slopes are fitted on sizes >= this
    notes: dict[str, str] = field(default_factory=dict)
    time_cap: float = TIME_CAP  # seconds for one call


SPECS: dict[str, Callable[[], CurveSpec]] = {}


def spec(fn: Callable[[], CurveSpec]) -> Callable[[], CurveSpec]:
    SPECS[fn.__name__] = fn
    return fn


# ----------------------------------------------------------------------------------- the curves


@spec
def rope() -> CurveSpec:
    from kexue import rope as rope_module

    d, heads = 128, 8

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(n)
        return torch.randn(1, heads, n, d, generator=g), torch.randn(1, heads, n, d, generator=g), torch.arange(n)

    def ours(n: int) -> Callable[[], object]:
        from kexue import rope as R

        q, k, pos = inputs(n)
        theta = R.frequencies(d)
        return lambda: (R.apply_rope(q, pos, theta, "half"), R.apply_rope(k, pos, theta, "half"))

    def ours_tables(n: int) -> Callable[[], object]:
        from kexue import rope as R

        q, k, pos = inputs(n)
        c, s = R.rope_tables(pos, R.frequencies(d), q.dtype)
        tq, tk = torch.empty_like(q), torch.empty_like(k)
        return lambda: (R.apply_rope_tables(q, c, s, "half", out=tq), R.apply_rope_tables(k, c, s, "half", out=tk))

    def ours_compiled(n: int) -> Callable[[], object]:
        from kexue import rope as R

        q, k, pos = inputs(n)
        c, s = R.rope_tables(pos, R.frequencies(d), q.dtype)
        tq, tk = torch.empty_like(q), torch.empty_like(k)
        call = lambda: (R.apply_rope_tables(q, c, s, "half", out=tq, compiled=True),
                        R.apply_rope_tables(k, c, s, "half", out=tk, compiled=True))
        call()  # compile here (the first size, then once more with symbolic sizes), not in the timed calls
        return call

    def hf(n: int) -> Callable[[], object]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        from kexue import rope as R

        q, k, pos = inputs(n)
        ang = R.rope_angles(pos, R.frequencies(d))
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos().float()[None], emb.sin().float()[None]
        return lambda: apply_rotary_pos_emb(q, k, cos, sin)

    def ret(n: int) -> Callable[[], object]:
        from rotary_embedding_torch import RotaryEmbedding

        q, k, _ = inputs(n)
        rot = RotaryEmbedding(dim=d)
        return lambda: (rot.rotate_queries_or_keys(q), rot.rotate_queries_or_keys(k))

    def copy(n: int) -> Callable[[], object]:
        q, k, _ = inputs(n)
        cq, ck = torch.empty_like(q), torch.empty_like(k)
        return lambda: (cq.copy_(q), ck.copy_(k))

    return CurveSpec(
        "RoPE apply", "sequence length L", f"q, k: 1x{heads}xLx{d} float32", [2**i for i in range(9, 17)],
        [512, 2048, 8192],
        {"kexue apply_rope (half)": ours, "kexue apply_rope_tables (half, reused buffers)": ours_tables,
         # compiled=True needs the C++ compiler torch.compile uses
         **({"kexue apply_rope_tables (half, compiled)": ours_compiled} if rope_module._compiler_found() else {}),
         "HF apply_rotary_pos_emb": hf, "rotary-embedding-torch": ret, "copy q, k (limit)": copy},
        limit="copy q, k (limit)", fit_above=4096)


@spec
def vq() -> CurveSpec:
    kk, d = 512, 64

    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        codebook = torch.randn(kk, d, generator=g)
        return torch.randn(n, d, generator=torch.Generator().manual_seed(n)), codebook

    def ours(n: int) -> Callable[[], object]:
        from kexue import vqvae

        z, codebook = inputs(n)
        norms = codebook.pow(2).sum(1)
        return lambda: vqvae.nearest_code(z, codebook, norms)

    def theirs(n: int) -> Callable[[], object]:
        from vector_quantize_pytorch import VectorQuantize

        z, codebook = inputs(n)
        vq_mod = VectorQuantize(dim=d, codebook_size=kk, decay=0.99, commitment_weight=0.25).eval()
        with torch.no_grad():
            vq_mod._codebook.embed.copy_(codebook[None])
        vq_mod._codebook.initted.fill_(True)

        def call():
            with torch.no_grad():
                return vq_mod(z[None])

        return call

    def gemm(n: int) -> Callable[[], object]:
        z, codebook = inputs(n)
        out = torch.empty(n, kk)
        return lambda: torch.mm(z, codebook.t(), out=out)

    return CurveSpec(
        "Nearest code", "number of vectors N", f"N vectors, K={kk}, D={d} float32", [2**i for i in range(12, 22)],
        [4096, 32768],
        {"kexue nearest_code": ours, "vector-quantize-pytorch forward": theirs,
         "GEMM z @ codebook.T into a preallocated output (limit)": gemm},
        limit="GEMM z @ codebook.T into a preallocated output (limit)", fit_above=2**15)


@spec
def hsic() -> CurveSpec:
    def inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return x, x[:, :1] ** 2 + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)

    s = 1.0  # a fixed bandwidth: the curve times the statistic, not the median heuristic

    def tiled(n: int) -> Callable[[], object]:
        from kexue import hsic as H

        x, y = inputs(n)
        return lambda: H.hsic_gaussian(x, y, s, s, estimator="unbiased", normalized=True)

    def grams(n: int) -> Callable[[], object]:
        from kexue import hsic as H

        x, y = inputs(n)
        return lambda: H.normalized_hsic(H.gaussian_kernel(x, s), H.gaussian_kernel(y, s), "unbiased")

    def hyppo(n: int) -> Callable[[], object]:
        from hyppo.independence import Hsic

        x, y = inputs(n)
        peer = Hsic(bias=False, gamma=1.0 / (2 * s * s))
        xn, yn = x.numpy(), y.numpy()

        def call():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return peer.statistic(xn, yn)

        return call

    return CurveSpec(
        "HSIC statistic", "sample size n", "n points (2-D x, 1-D y), float64, Gaussian kernels",
        [500 * 2**i for i in range(7)], [500, 2000, 8000],
        {"kexue hsic_gaussian (tiled, from points)": tiled, "kexue Gram matrices -> normalized_hsic": grams,
         "hyppo Hsic.statistic": hyppo},
        fit_above=4000, time_cap=10.0,  # long enough for the tiled path at n = 32,000 (about 2 s idle)
        notes={"kexue hsic_gaussian (tiled, from points)": "never builds an n x n matrix",
               "kexue Gram matrices -> normalized_hsic": "two n x n float64 Gram matrices",
               "hyppo Hsic.statistic": "n x n distance and kernel matrices (NumPy, float64)"})


# ----------------------------------------------------------------------------------- the worker


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("can't allocate memory", "cannot allocate memory", "not enough memory",
                                    "unable to allocate"))


def _vm_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker(curve: str, impl: str, memory_gb: float) -> int:
    """Read sizes from stdin; for each, answer ``first`` (one call) then ``point`` (the repeats)."""
    torch.set_num_threads(THREADS)
    sp = SPECS[curve]()
    make = sp.impls[impl]
    make(min(sp.sizes))()  # imports, thread pool, JIT compilation (hyppo uses numba) before the cap is set
    gc.collect()
    if sys.platform.startswith("linux"):
        resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + int(memory_gb * 2**30), resource.RLIM_INFINITY))
    _send({"ready": True})
    for line in sys.stdin:
        size = int(line)
        try:
            fn = make(size)
            t = time.perf_counter()
            fn()
            first = time.perf_counter() - t
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            _send({"size": size, "status": "out of memory"})
            return 0
        _send({"size": size, "first": first})
        repeats = []
        for _ in range(ROUNDS):
            if first > BUDGET and not repeats:
                repeats.append(first)  # a slow call is its own repeat: no separate warm-up
                continue
            times, start = [], time.perf_counter()
            while not times or time.perf_counter() - start < BUDGET:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            repeats.append(statistics.median(times))
        _send({"size": size, "status": "ok", "seconds": statistics.median(repeats), "repeats": repeats})
        del fn
        gc.collect()
    return 0


# ----------------------------------------------------------------------------------- the parent


class _Worker:
    """A worker process and a thread that queues its output lines (so a timeout never loses a line)."""

    def __init__(self, cmd: list[str]) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop); a pipe could fill up and block
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                     text=True, bufsize=1, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def send(self, size: int) -> None:
        self.proc.stdin.write(f"{size}\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if not line:
            self.proc.wait()
            self.errors.seek(0)
            raise RuntimeError(f"worker exited: {self.errors.read()[-3000:]}")
        return json.loads(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.errors.close()


def run(name: str, quick: bool = False, memory_gb: float = MEMORY_GB, time_cap: float | None = None) -> dict:
    sp = SPECS[name]()
    time_cap = sp.time_cap if time_cap is None else time_cap
    sizes = sp.quick_sizes if quick else sp.sizes
    series: dict[str, list[dict]] = {}
    for impl in sp.impls:
        pts: list[dict] = []
        series[impl] = pts
        worker_ = _Worker([sys.executable, "-m", "benchmarks.curves", "worker", name, impl,
                           "--memory-gb", str(memory_gb)])
        try:
            if worker_.read(600) is None:
                raise RuntimeError(f"{name}/{impl}: worker did not start")
            for size in sizes:
                worker_.send(size)
                msg = worker_.read(time_cap + 15)  # a little longer, for building the inputs
                if msg is None or ("first" in msg and msg["first"] > time_cap):
                    pts.append({"size": size, "seconds": None if msg is None else msg["first"], "status": "time cap",
                                "note": f"one call takes more than {time_cap:g} s"})
                    break
                if msg.get("status") == "out of memory":
                    pts.append({"size": size, "seconds": None, "status": "out of memory",
                                "note": f"allocation failed within a {memory_gb:g} GiB budget"})
                    break
                msg = worker_.read(4 * max(msg["first"], BUDGET) * ROUNDS + 60)
                if msg is None:
                    raise RuntimeError(f"{name}/{impl}: no answer at size {size}")
                pts.append({"size": size, "seconds": msg["seconds"], "status": "ok", "repeats": msg["repeats"]})
        finally:
            worker_.stop()
    fit_above = 0 if quick else sp.fit_above  # a quick run has too few sizes to leave any out
    slopes = {}
    for impl, pts in series.items():
        ok = [p for p in pts if p["status"] == "ok" and p["size"] >= fit_above]
        slopes[impl] = fit_slope([p["size"] for p in ok], [p["seconds"] for p in ok])
    return {"case": sp.name, "x_label": sp.x_label, "problem": sp.problem, "limit": sp.limit,
            "fit_above": fit_above, "memory_budget_gib": memory_gb, "time_cap_s": time_cap,
            "rounds": ROUNDS, "series": series, "slopes": slopes, "notes": sp.notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curves")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="run one curve and print it as JSON")
    one.add_argument("name", choices=sorted(SPECS))
    one.add_argument("--quick", action="store_true")
    one.add_argument("--memory-gb", type=float, default=MEMORY_GB)
    one.add_argument("--time-cap", type=float, default=None, help=f"seconds per call (default: the curve's, {TIME_CAP:g})")
    w = sub.add_parser("worker", help="(internal) time one implementation of one curve")
    w.add_argument("name", choices=sorted(SPECS))
    w.add_argument("impl")
    w.add_argument("--memory-gb", type=float, default=MEMORY_GB)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker(args.name, args.impl, args.memory_gb)
    print(json.dumps(run(args.name, args.quick, args.memory_gb, args.time_cap)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
