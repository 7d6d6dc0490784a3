"""What the median pruner saves: the same study run twice, with the median pruner and with
none, the same number of trials and the same sampler seed; reports epochs trained, wall
time and the best validation accuracy reached.

    .venv/bin/python benchmarks/pruning.py [--study studies/fmnist_quick.yaml] [--n-trials 30] [--markdown]

The study's fidelity ladder, refinement and re-runs are switched off: this compares the
median pruner with none on the open space. Both studies live in a temporary SQLite file that is removed afterwards. Anchors are left out so that every trial is
a search trial the pruner may stop (anchors are never pruned). The teacher is trained
first; each timed run then only loads it from the cache (well under a second). The "pruned"
column counts trials the pruner stopped (not NaN/inf losses). The two runs share the
sampler seed, so they draw the same compositions until the first pruned trial changes
what the sampler has seen.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from relkd.engine import get_teacher  # noqa: E402
from relkd.study import counted_trials, load_study_spec, ranked_trials, run_study  # noqa: E402


def run(spec, pruner: tuple[str, dict], n_trials: int, storage: str) -> dict:
    spec = dataclasses.replace(spec, pruner=pruner, anchors=(), timeout=None, ladder=None, refine=None, rerun=None,
                               study_name=f"{spec.study_name}-pruning-{pruner[0]}")
    start = time.perf_counter()
    result = run_study(spec, storage=storage, n_trials=n_trials, progress=False)
    seconds = time.perf_counter() - start
    trials = counted_trials(result.study)
    best = ranked_trials(result.study)
    return {
        "pruner": pruner[0],
        "trials": len(trials),
        "pruned": sum(t.user_attrs.get("pruned_reason", "").startswith("pruned by") for t in trials),
        "epochs": sum(len(t.intermediate_values) for t in trials),
        "seconds": seconds,
        "best": best[0].value if best else float("nan"),
        "best_trial": best[0].number if best else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study_spec(args.study)
    get_teacher(spec.setting, progress=True)
    median = dict(spec.pruner[1]) if spec.pruner[0] == "median" else {}
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/pruning.db"
        rows = [run(spec, ("median", median), args.n_trials, storage),
                run(spec, ("none", {}), args.n_trials, storage)]
    base = rows[1]
    print(f"study {spec.study_name}: {args.n_trials} search trials of at most {spec.setting.budget.epochs} epochs, "
          f"sampler {spec.sampler[0]} seed {spec.seed}, no anchors\n")
    bar = "|" if args.markdown else " "
    print(f"{bar} pruner {bar} trials {bar} pruned {bar} epochs trained {bar} epochs / none {bar} wall s "
          f"{bar} wall / none {bar} best val acc {bar}")
    if args.markdown:
        print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"{bar} {r['pruner']:<6} {bar} {r['trials']:>6} {bar} {r['pruned']:>6} {bar} {r['epochs']:>14} {bar} "
              f"{r['epochs'] / base['epochs']:>13.2f} {bar} {r['seconds']:>6.0f} {bar} "
              f"{r['seconds'] / base['seconds']:>11.2f} {bar} {100 * r['best']:>10.2f}% (trial {r['best_trial']}) "
              f"{bar}")


if __name__ == "__main__":
    main()
