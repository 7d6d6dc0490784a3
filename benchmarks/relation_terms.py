"""Forward + backward time of each preset's relation term, composed by relkd
(view -> affinity -> normalisation -> loss) versus a direct single-function implementation
of the same formula, measured interleaved in one run on the CPU.

The direct functions below are written for speed the way the methods' authors wrote them
(one function, fused where natural); each is checked against relkd and against the
independent oracle in tests/reference.py before it is timed.

    .venv/bin/python benchmarks/relation_terms.py [--reps 100] [--markdown]

Prints, per preset term and batch size, the median times and their ratio (composed / direct;
the target is <= 1.10), then RKD-A's peak memory during one forward + backward (from the
profiler's allocation and free events) and each weighted term's value on the same random
features (what puts CC's default weight on the other presets' scale).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import reference as ref  # noqa: E402

import relkd  # noqa: E402
from relkd.objective import probe_objective  # noqa: E402


def sp_direct(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    b = fs.shape[0]
    fs, ft = fs.reshape(b, -1), ft.reshape(b, -1)
    return (F.normalize(fs @ fs.t()) - F.normalize(ft @ ft.t())).pow(2).mean()


def _pdist(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def rkd_d_direct(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    ds, dt = _pdist(fs), _pdist(ft)
    return F.smooth_l1_loss(ds / ds[ds > 0].mean(), dt / dt[dt > 0].mean())


def rkd_a_direct(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    es = F.normalize(fs.unsqueeze(0) - fs.unsqueeze(1), p=2, dim=2)
    et = F.normalize(ft.unsqueeze(0) - ft.unsqueeze(1), p=2, dim=2)
    return F.smooth_l1_loss(torch.bmm(es, es.transpose(1, 2)), torch.bmm(et, et.transpose(1, 2)))


def pkt_direct(fs: torch.Tensor, ft: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    fs, ft = F.normalize(fs), F.normalize(ft)
    ms, mt = (fs @ fs.t() + 1) / 2, (ft @ ft.t() + 1) / 2
    ms, mt = ms / ms.sum(1, keepdim=True), mt / mt.sum(1, keepdim=True)
    return torch.mean(mt * torch.log((mt + eps) / (ms + eps)))


def cc_direct(fs: torch.Tensor, ft: torch.Tensor, gamma: float = 0.4) -> torch.Tensor:
    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x)
        c = x @ x.t()
        return math.exp(-2 * gamma) * (1 + 2 * gamma * c + (2 * gamma) ** 2 / 2 * c * c)

    return (kernel(fs) - kernel(ft)).pow(2).mean()


TERMS = {  # preset -> (tap, direct implementation, independent oracle)
    "sp": ("last_stage", sp_direct, ref.sp_loss),
    "rkd_d": ("pool", rkd_d_direct, ref.rkd_distance_loss),
    "rkd_a": ("pool", rkd_a_direct, ref.rkd_angle_loss),
    "pkt": ("pool", pkt_direct, ref.pkt_loss),
    "cc": ("pool", cc_direct, ref.cc_loss),
}
STUDENT_WIDTH, TEACHER_WIDTH = 64, 256


def inputs(tap: str, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if tap == "last_stage":  # feature maps, as SP sees them
        s = torch.randn(b, STUDENT_WIDTH // 2, 7, 7, generator=g)
        t = torch.randn(b, TEACHER_WIDTH // 2, 7, 7, generator=g)
    else:
        s = torch.randn(b, STUDENT_WIDTH, generator=g)
        t = torch.randn(b, TEACHER_WIDTH, generator=g)
    return s.requires_grad_(True), t


def fwd_bwd(fn, s: torch.Tensor, t: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = fn(s, t)
    loss.backward()
    elapsed = time.perf_counter() - start
    s.grad = None
    return elapsed


def time_pair(name: str, b: int, reps: int) -> dict:
    tap, direct, oracle = TERMS[name]
    term = relkd.build_objective(name).terms[0]
    s, t = inputs(tap, b)
    torch.testing.assert_close(term(s, t), direct(s, t), rtol=1e-4, atol=1e-7)  # same formula
    torch.testing.assert_close(oracle(s, t), direct(s, t), rtol=1e-4, atol=1e-7)
    for _ in range(3):  # warm-up
        fwd_bwd(term, s, t), fwd_bwd(direct, s, t)
    composed, plain = [], []
    for i in range(reps):  # interleaved, alternating order, so both see the same machine load
        if i % 2:
            composed.append(fwd_bwd(term, s, t)), plain.append(fwd_bwd(direct, s, t))
        else:
            plain.append(fwd_bwd(direct, s, t)), composed.append(fwd_bwd(term, s, t))
    c, d = statistics.median(composed), statistics.median(plain)
    return {"term": name, "batch": b, "composed_ms": c * 1e3, "direct_ms": d * 1e3, "ratio": c / d}


def peak_memory_mib(fn, b: int) -> float:
    """Peak of (allocated - freed) bytes during one forward + backward, from the profiler."""
    s, t = inputs("pool", b)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(s, t).backward()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def weighted_scale(b: int = 64) -> dict[str, float]:
    """Each relation preset's weighted term on the same random features."""
    return {name: probe_objective(name, batch_size=b)[f"{name}.weighted"] for name in TERMS}


def print_ratio_table(rows: list[dict], markdown: bool, target: float = 1.10) -> None:
    """The composed/direct table of ``time_pair`` rows, and the worst ratio against ``target``."""
    bar = "|" if markdown else " "
    width = max(len(r["term"]) for r in rows)
    print(f"{bar} {'term':<{width}} {bar} B   {bar} composed ms {bar} direct ms {bar} composed/direct {bar}")
    if markdown:
        print("|---|---|---|---|---|")
    for r in rows:
        print(f"{bar} {r['term']:<{width}} {bar} {r['batch']:<3} {bar} {r['composed_ms']:>11.3f} {bar} "
              f"{r['direct_ms']:>9.3f} {bar} {r['ratio']:>15.3f} {bar}")
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst ratio {worst:.3f} (target <= {target:.2f}): {'OK' if worst <= target else 'OVER'}")


def timing_args(doc: str, reps: int, batches: str) -> argparse.Namespace:
    """``--reps``, ``--batches``, ``--markdown`` of a composed-against-direct benchmark (seeds torch)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--batches", default=batches)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs/benchmarks.md)")
    torch.manual_seed(0)
    return parser.parse_args()


def time_all(args: argparse.Namespace, names, time_one, shapes: str) -> list[dict]:
    """``time_one(name, batch, reps)`` for every name and batch size, printed as a table."""
    rows = [time_one(name, int(b), args.reps) for b in args.batches.split(",") for name in names]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {shapes}, median of {args.reps} "
          f"interleaved fwd+bwd runs\n")
    print_ratio_table(rows, args.markdown)
    return rows


def main() -> None:
    args = timing_args(__doc__, 100, "64,256")
    time_all(args, TERMS, time_pair, f"student width {STUDENT_WIDTH}, teacher width {TEACHER_WIDTH}")
    print("\nRKD-A peak memory of one fwd+bwd (MiB, profiler):")
    term = relkd.build_objective("rkd_a").terms[0]
    for b in (64, 256):
        c, d = peak_memory_mib(term, b), peak_memory_mib(rkd_a_direct, b)
        print(f"  B={b:<4} composed {c:8.1f}   direct {d:8.1f}   (one B^3 float32 tensor: {b**3 * 4 / 2**20:.1f})")
    print("\nweighted term on random features, B=64 (default weights):")
    for name, value in weighted_scale().items():
        print(f"  {name:<6} {value:.4g}")


if __name__ == "__main__":
    main()
