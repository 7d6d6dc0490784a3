"""The quick study's trials per hour with populations of K against K = 1: the same study file,
searched for the same number of seconds from a fresh storage with each population size, one
after the other in one process (the teacher and its outputs come from the cache, so neither
run pays for them).

    .venv/bin/python benchmarks/population_study.py [--study studies/fmnist_quick.yaml] [--ks 1,4]
        [--seconds 300] [--out benchmarks/out/population_study]

``--ks auto`` compares K = 1 with the size ``population: auto`` measures on this machine. The
re-runs of the leaders are left out (they train one at a time whatever K is). A trial counts
when it trained (completed, or pruned by the ladder at its rung), as ``n_trials`` counts.
Prints a markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from relkd.engine import get_teacher, run_trial  # noqa: E402
from relkd.engine.calibrate import best_population  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.study import counted_trials, load_study_spec, run_study  # noqa: E402
from relkd.results.ranking import compositions  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "population_study"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--ks", default="1,auto", help="population sizes; auto: the calibrated one")
    parser.add_argument("--seconds", type=float, default=300.0, help="search time per population size")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = load_study_spec(args.study)
    spec = dataclasses.replace(spec, rerun=None)
    get_teacher(spec.setting, progress=True)
    run_trial(spec.setting, "sp+kd")  # the teacher's outputs into the cache, the data loaded: not timed
    ks = [best_population(spec.setting) if k == "auto" else int(k) for k in args.ks.split(",")]
    info = {"study": spec.study_name, "seconds": args.seconds, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "command": " ".join(sys.argv), "ks": ks}
    out = Path(args.out) / f"{spec.study_name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for k in ks:
            storage = f"sqlite:///{folder}/k{k}_{len(rows)}.db"
            start = time.perf_counter()
            result = run_study(spec.renamed(f"{spec.study_name}_k{k}"), storage=storage, timeout=args.seconds,
                               n_trials=10_000, progress=False, population=k)
            seconds = time.perf_counter() - start
            counted = counted_trials(result.study)
            searched = [c for c in compositions(result.study) if c.anchor is None]
            best = max((t.value for t in result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if "anchor" not in t.user_attrs), default=None)
            rows.append({"k": k, "seconds": seconds, "trials": len(counted), "trials_per_hour": len(counted) * 3600
                         / seconds, "searched_compositions": len(searched), "best_searched": best})
            print(f"K={k}: {len(counted)} trials in {seconds:.0f} s", file=sys.stderr, flush=True)
            write_text(out, json.dumps({"info": info, "rows": rows}, indent=2))
    base = rows[0]["trials_per_hour"]
    print(f"study {spec.study_name}: {args.seconds:g} s of search per K, {info['threads']} threads\n")
    print("| K | trials | trials/h | x first | best searched val acc |")
    print("|---|---|---|---|---|")
    for r in rows:
        best = f"{100 * r['best_searched']:.2f}%" if r["best_searched"] is not None else "-"
        print(f"| {r['k']} | {r['trials']} | {r['trials_per_hour']:.0f} | {r['trials_per_hour'] / base:.2f} | {best} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
