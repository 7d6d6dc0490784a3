"""Throughput of study workers: trials per hour with one and two `relkd study worker`
processes on one study, and the per-process thread setting that gives the most.

    .venv/bin/python benchmarks/workers.py [--study studies/fmnist_quick.yaml] [--trials 8] [--rounds 2]

Every configuration runs the same work: a new study on one SQLite file whose trials are a
fixed list of anchors (known methods: never pruned, always the same compositions), so a
configuration differs from another only in how many processes share it and how many
threads each uses (``OMP_NUM_THREADS``, which torch reads at start-up). The wall time runs
from starting the workers to the last one's exit, so process start-up, data loading and
loading the cached teacher count, as they do for a real worker. The teacher and its
cached outputs are made before the first timed run. Configurations run round-robin,
``--rounds`` times, and the table gives the median wall time of each, with its ratio to
the first configuration measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relkd.fields import read_yaml_file

from relkd.fields import yaml_dump  # noqa: E402

# The same list for every configuration: KD alone, and each relation method with KD.
ANCHORS = ["kd", "sp+kd", "rkd+kd", "pkt+kd", "cc+kd", "sp", "pkt", "none"]
# (workers, threads per worker): one process with all the cores first, the reference.
CONFIGS = [(1, 2), (1, 1), (2, 1), (2, 2)]


def bench_study(source: str, folder: Path, trials: int) -> Path:
    doc = read_yaml_file(source)
    anchors = (ANCHORS * (trials // len(ANCHORS) + 1))[:trials]
    if len(set(anchors)) != len(anchors):
        raise SystemExit(f"--trials: at most {len(ANCHORS)} (one per anchor)")
    kept = {k: v for k, v in doc.get("optuna", {}).items() if k not in ("ladder", "refine", "rerun")}
    doc["optuna"] = {**kept, "anchors": anchors, "n_trials": trials, "timeout": None, "pruner": "none"}
    path = folder / "bench.yaml"
    path.write_text(yaml_dump(doc))
    return path


def run_config(study: Path, folder: Path, name: str, workers: int, threads: int) -> float:
    storage = f"sqlite:///{folder / (name + '.db')}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    relkd = [sys.executable, "-m", "relkd.cli", "study", "worker", str(study), "--storage", storage,
             "--study-name", name, "--quiet"]
    start = time.perf_counter()
    procs = [subprocess.Popen(relkd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise SystemExit(f"worker of {name} failed:\n{err[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relkd-workers-") as tmp:
        folder = Path(tmp)
        study = bench_study(args.study, folder, args.trials)
        print(f"warm-up: teacher and its cached outputs ({args.study})", file=sys.stderr, flush=True)
        run_config(study, folder, "warmup", 1, os.cpu_count() or 1)
        seconds: dict[tuple[int, int], list[float]] = {c: [] for c in CONFIGS}
        for r in range(args.rounds):
            for workers, threads in CONFIGS:
                s = run_config(study, folder, f"w{workers}t{threads}r{r}", workers, threads)
                seconds[(workers, threads)].append(s)
                print(f"round {r}: {workers} worker(s) x {threads} thread(s): {s:.1f} s", file=sys.stderr, flush=True)
    reference = statistics.median(seconds[CONFIGS[0]])
    print(f"\n{args.trials} trials of {Path(args.study).name} per configuration, {os.cpu_count()} CPU cores, "
          f"median of {args.rounds} round(s)\n")
    print("| workers | threads each | wall s | trials/hour | throughput / 1 worker x "
          f"{CONFIGS[0][1]} threads |")
    print("|---|---|---|---|---|")
    for workers, threads in CONFIGS:
        s = statistics.median(seconds[(workers, threads)])
        print(f"| {workers} | {threads} | {s:.1f} | {args.trials / s * 3600:.0f} | {reference / s:.2f} |")


if __name__ == "__main__":
    main()
