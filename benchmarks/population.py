"""Population training vs separate trials: trials per hour when K objective configs train as one
population (relkd.engine.population) with each engine (fold: grouped convolutions; vmap: stacked
students; loop: K models in a Python loop) and when they train as K separate run_trial calls,
side by side in one process, for K = 1, 2, 4, 8, 16.

    .venv/bin/python benchmarks/population.py [--setting studies/fmnist_quick.yaml] [--ks 1,2,4,8,16]
        [--engines fold,vmap,loop] [--epochs N] [--train-subset N] [--reps 1]

The quick setting's student with the teacher-output cache on: the teacher is trained (or
loaded from the cache) and its outputs computed once before any timing, as in a study where
every trial after the first finds them in the cache; a first untimed run also loads the data.
Each K's configs are the first K of ``--configs``. Prints a markdown table (trials per hour and
the speed-up over separate trials per engine, and the largest difference in validation
accuracy between a member and its separate trial) and writes JSON to benchmarks/out/population/.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from relkd.engine import get_teacher, run_trial  # noqa: E402
from relkd.engine.population import run_population  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.setting import load_setting  # noqa: E402

DEFAULT_CONFIGS = "sp+kd,rkd+kd,pkt+kd,cc+kd,rkd_d+kd,rkd_a+kd,kd,none"
OUT = ROOT / "benchmarks" / "out" / "population"


def timed(run) -> tuple[float, list[dict]]:
    """Seconds and the member summaries of one way of training K configs."""
    start = time.perf_counter()
    results = run()
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--ks", default="1,2,4,8,16", help="population sizes, comma-separated")
    parser.add_argument("--engines", default="fold,vmap,loop", help="population engines, comma-separated")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="presets; K takes the first K (cycled)")
    parser.add_argument("--epochs", type=int, help="override the budget's epochs")
    parser.add_argument("--train-subset", type=int, help="override data.train_subset (student runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=1, help="repetitions per K and way (median)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    setting = load_setting(args.setting)
    if args.epochs:
        setting = setting.with_budget(epochs=args.epochs)
    if args.train_subset:
        setting = dataclasses.replace(setting, data=dataclasses.replace(setting.data, train_subset=args.train_subset))
    ks = [int(k) for k in args.ks.split(",")]
    names = args.configs.split(",")
    configs = [names[i % len(names)] for i in range(max(ks))]
    teacher = get_teacher(setting, progress=True)
    run_trial(setting, configs[0], seed=args.seed, teacher=teacher)  # data, teacher outputs: not timed

    engines = args.engines.split(",")
    ways = {"separate": lambda cs: [run_trial(setting, c, seed=args.seed, teacher=teacher) for c in cs]}
    for engine in engines:
        ways[engine] = functools.partial(lambda cs, engine: run_population(setting, cs, seed=args.seed, teacher=teacher,
                                                                           engine=engine), engine=engine)
    info = {"setting": setting.name, "student": setting.student.model, "teacher": setting.teacher.model,
            "epochs": setting.budget.epochs, "train_subset": setting.data.train_subset, "seed": args.seed,
            "threads": torch.get_num_threads(), "device": str(setting.device), "reps": args.reps,
            "torch": torch.__version__, "command": " ".join(sys.argv)}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / f"{setting.name}_e{info['epochs']}_n{info['train_subset']}_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for k in ks:
        row: dict = {"k": k, "configs": configs[:k]}
        accuracies = {}
        for way, run in ways.items():
            seconds = []
            for _ in range(args.reps):
                s, results = timed(lambda: run(configs[:k]))
                seconds.append(s)
            row[f"{way}_seconds"] = statistics.median(seconds)
            row[f"{way}_trials_per_hour"] = k * 3600 / row[f"{way}_seconds"]
            accuracies[way] = [r.val_accuracy for r in results]
        for engine in engines:
            row[f"{engine}_speedup"] = row["separate_seconds"] / row[f"{engine}_seconds"]
        row["val_accuracy"] = accuracies
        row["max_val_accuracy_difference"] = max(abs(a - b) for engine in engines
                                                 for a, b in zip(accuracies[engine], accuracies["separate"]))
        rows.append(row)
        print(f"K={k}: separate {row['separate_seconds']:.1f}s, " + ", ".join(
            f"{e} {row[e + '_seconds']:.1f}s (x{row[e + '_speedup']:.2f})" for e in engines), file=sys.stderr, flush=True)
        write_text(out, json.dumps({"info": info, "rows": rows}, indent=2))  # kept if a later K is cut short

    print(f"setting {info['setting']}: student {info['student']}, {info['epochs']} epoch(s), train subset "
          f"{info['train_subset']}, {info['threads']} thread(s), median of {args.reps}\n")
    print("| K | separate trials/h | " + " | ".join(f"{e} trials/h | {e} x" for e in engines) + " | max val acc diff |")
    print("|---|---|" + "---|---|" * len(engines) + "---|")
    for r in rows:
        print(f"| {r['k']} | {r['separate_trials_per_hour']:.0f} | " + " | ".join(
            f"{r[e + '_trials_per_hour']:.0f} | {r[e + '_speedup']:.2f}" for e in engines)
            + f" | {r['max_val_accuracy_difference']:.4f} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
