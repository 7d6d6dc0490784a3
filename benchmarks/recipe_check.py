"""An independent check of a tuned recipe: CE alone (``none``) and KD (``kd``) trained at half,
at and at twice the learning rate a setting's tuning chose, on fresh seeds that played no part
in the choice. A recipe is tuned when neither neighbour gains more than a point (issue 25's
target); the table says by how much each does.

    .venv/bin/python benchmarks/recipe_check.py [--setting studies/fmnist_quick.yaml] [--seeds 3,4,5]
        [--device cpu] [--data real|synthetic]

The tuning is the setting's own (relkd.tuning, cached: a study that ran already has it); the
check trains 3 rates x 2 configs x len(seeds) runs at the setting's budget. Prints a markdown
table for docs/benchmarks.md and writes JSON to benchmarks/out/recipe_check/.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.headroom import spread  # noqa: E402
from relkd.engine import get_teacher, run_trial  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.setting import load_setting, validate_setting  # noqa: E402
from relkd.stats import welch_difference  # noqa: E402
from relkd.tuning import tune_recipe  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "recipe_check"
LIMIT = 0.01  # a neighbour that gains more than a point means the tuning missed


def check(setting, seeds: list[int]) -> dict:
    """``none`` and ``kd`` at ½, 1 and 2 times the tuned rate on ``seeds``: each neighbour's
    mean gain over the tuned rate with its Welch standard error, and whether it is within
    :data:`LIMIT`."""
    teacher = get_teacher(setting, progress=False)
    tuning = tune_recipe(setting, teacher=teacher)
    overlap = set(seeds) & set(tuning.seeds)
    if overlap:
        raise SystemExit(f"--seeds: {sorted(overlap)} chose the rate (the tuning's seeds are {tuning.seeds}); "
                         f"give fresh ones")
    rates = {"half": tuning.lr / 2, "tuned": tuning.lr, "twice": tuning.lr * 2}
    values = {config: {name: [float(run_trial(setting.with_budget(lr=lr), config, seed=s, teacher=teacher,
                                              every_epoch=False).val_accuracy) for s in seeds]
                       for name, lr in rates.items()}
              for config in ("none", "kd")}
    rows = []
    for config, by_rate in values.items():
        for name in ("half", "twice"):
            gain, se, p = welch_difference(by_rate[name], by_rate["tuned"])
            rows.append({"config": config, "neighbour": name, "lr": rates[name], "gain": gain, "standard_error": se,
                         "p": p, "within_limit": gain <= LIMIT})
    return {"setting": setting.name, "tuned_lr": tuning.lr, "tuning_seeds": tuning.seeds, "seeds": seeds,
            "rates": rates, "values": values, "rows": rows, "passed": all(r["within_limit"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--seeds", default="3,4,5", help="fresh seeds (not the tuning's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data", choices=("real", "synthetic"), default="real")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    doc = load_setting(args.setting).to_dict()
    if args.device:
        doc["device"] = args.device
    if doc.get("tune") is None:
        raise SystemExit(f"--setting: {args.setting} has no tune section, so there is no tuned rate to check")
    if args.data == "synthetic":  # checks the script, not the data: a quick run anywhere
        doc["data"] = {**doc["data"], "dataset": "synthetic", "train_subset": None, "labelled": None,
                       "params": {"train_size": 300, "test_size": 60}}
        doc["teacher"]["epochs"] = 1
        doc["name"] = f"{doc['name']}_synthetic"
    start = time.perf_counter()
    result = check(validate_setting(doc), [int(s) for s in args.seeds.split(",")])
    result["seconds"] = time.perf_counter() - start
    out = Path(args.out) / f"recipe_check_{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_text(out, json.dumps(result, indent=2))
    r = result["rates"]
    print(f"\n{result['setting']}: tuned lr {result['tuned_lr']:g} (chosen on seeds {result['tuning_seeds']}); "
          f"validation accuracy on fresh seeds {result['seeds']}, mean ± std\n")
    print(f"| config | ½ × ({r['half']:g}) | tuned ({r['tuned']:g}) | 2 × ({r['twice']:g}) | "
          f"gain at ½ × | gain at 2 × |")
    print("|---|---|---|---|---|---|")
    for config, by_rate in result["values"].items():
        gains = {row["neighbour"]: row["gain"] for row in result["rows"] if row["config"] == config}
        print(f"| {config} | {spread(by_rate['half'])} | {spread(by_rate['tuned'])} | {spread(by_rate['twice'])} | "
              f"{100 * gains['half']:+.2f} | {100 * gains['twice']:+.2f} |")
    verdict = "within a point" if result["passed"] else "MORE than a point: the tuning missed"
    print(f"\nbest neighbour gain {100 * max(row['gain'] for row in result['rows']):+.2f} points: {verdict}; "
          f"{result['seconds']:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
