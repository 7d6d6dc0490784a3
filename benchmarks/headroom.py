"""Headroom of candidate pairs for the main job: on each, the student's learning rate tuned on CE
alone and on KD (relkd.tuning, seeds per rate), then tuned KD against tuned CE and the tuned CE
student against its teacher, with the cost of one run. The main job's pair is chosen from this
table (studies/fmnist_quick.yaml says which run chose it).

    .venv/bin/python benchmarks/headroom.py [--candidates quick,low1k,...] [--seeds 3] [--device cpu]
        [--data real|synthetic] [--kd-settings] [--replicate CE,KD,T [--replicate-seeds 6,7,8,9,10]]

``--kd-settings`` asks whether KD at another setting than the presets' (CE 0.1 + KD 0.9 at
T = 4) has room where the presets' does not: at each candidate's tuned rate it trains the
KD settings of KD_SETTINGS on the tuning's seeds, picks the best, then trains that one and
CE alone on as many fresh seeds, and compares them there (picking and measuring on the same
seeds would favour whichever setting was luckiest). ``--replicate 0.5,0.5,1`` measures one KD
setting, fixed before the run, against CE alone on more seeds (6-10 by default): how a pick
that looked like room is checked once more.

Each candidate is studies/fmnist_quick.yaml's setting with a few fields changed (CANDIDATES
below: the student's training subset and epochs, the student's or the teacher's model).
Every tuning is cached (relkd.tuning), so a second run of the same candidates prints the table
at once. Prints a markdown table for docs/benchmarks.md and writes JSON to benchmarks/out/headroom/.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relkd.engine import get_teacher  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.setting import load_setting, validate_setting  # noqa: E402
from relkd.tuning import tune_recipe  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "headroom"

#: name -> (what it changes, changes to the quick study's setting document)
CANDIDATES = {
    "quick": ("the quick study as it was: 8k samples, 3 epochs", {}),
    "quick9": ("8k samples, 9 epochs", {"budget": {"epochs": 9}}),
    "low2k": ("2k samples, 10 epochs", {"data": {"train_subset": 2000}, "budget": {"epochs": 10}}),
    "low1k": ("1k samples, 15 epochs", {"data": {"train_subset": 1000}, "budget": {"epochs": 15}}),
    "low500": ("500 samples, 20 epochs", {"data": {"train_subset": 500}, "budget": {"epochs": 20}}),
    "low1k_w4": ("1k samples, 15 epochs, cnn_tiny width 4",
                 {"data": {"train_subset": 1000}, "budget": {"epochs": 15}, "student": {"params": {"width": 4}}}),
    "low1k_self": ("1k samples, 15 epochs, student cnn_small (the teacher's own model)",
                   {"data": {"train_subset": 1000}, "budget": {"epochs": 15}, "student": {"model": "cnn_small"}}),
    "low500_self": ("500 samples, 20 epochs, student cnn_small (the teacher's own model)",
                    {"data": {"train_subset": 500}, "budget": {"epochs": 20}, "student": {"model": "cnn_small"}}),
    "low1k_large": ("1k samples, 15 epochs, teacher cnn_large 5 epochs",
                    {"data": {"train_subset": 1000}, "budget": {"epochs": 15},
                     "teacher": {"model": "cnn_large", "epochs": 5}}),
    # few labels: the student sees the quick study's 8k images but only some keep their labels (data.labelled);
    # CE alone learns from the labelled ones, KD from every image through the teacher
    "label1k": ("8k samples, 1k of them labelled, 3 epochs", {"data": {"labelled": 1000}}),
    "label500": ("8k samples, 500 of them labelled, 3 epochs", {"data": {"labelled": 500}}),
    "label250": ("8k samples, 250 of them labelled, 3 epochs", {"data": {"labelled": 250}}),
    # CE's fair reference for the label* candidates: the labelled images alone, for about as many optimizer steps
    # as 3 epochs over 8k images take (62 steps of 128 an epoch, the last partial batch dropped: 186 steps)
    "low1k_steps": ("1k samples, 27 epochs (189 steps)", {"data": {"train_subset": 1000}, "budget": {"epochs": 27}}),
    "low500_steps": ("500 samples, 62 epochs (186 steps)",
                     {"data": {"train_subset": 500}, "budget": {"epochs": 62}}),
}

#: KD settings tried by --kd-settings: (CE weight, KD weight, temperature).
KD_SETTINGS = [(0.1, 0.9, 4.0), (0.5, 0.5, 4.0), (0.5, 0.5, 2.0), (0.5, 0.5, 1.0), (1.0, 1.0, 2.0), (0.1, 0.9, 2.0)]


def kd_config(ce: float, kd: float, temperature: float) -> dict:
    return {"relkd_config": 1, "ce_weight": ce, "kd": {"weight": kd, "temperature": temperature}, "terms": []}


def against_ce(at, kd_setting, seeds: list[int], teacher) -> dict:
    """``kd_setting`` and CE alone trained at ``at`` on ``seeds``: both, their Welch difference
    and the difference in pooled seed standard deviations."""
    from relkd.engine import run_trial
    from relkd.stats import welch_difference

    def accuracies(config: dict) -> list[float]:
        return [float(run_trial(at, config, seed=s, teacher=teacher, every_epoch=False).val_accuracy)
                for s in seeds]

    kd, ce = accuracies(kd_config(*kd_setting)), accuracies({"relkd_config": 1, "terms": []})
    difference, se, p = welch_difference(kd, ce)
    pooled = ((statistics.variance(ce) + statistics.variance(kd)) / 2) ** 0.5
    return {"setting": list(kd_setting), "seeds": list(seeds), "kd": kd, "ce": ce, "difference": difference,
            "standard_error": se, "p": p, "in_sds": difference / pooled if pooled > 0 else 0.0}


def kd_settings(setting, tuning, teacher) -> dict:
    """KD_SETTINGS at the tuned rate: picked on the tuning's seeds, measured on fresh ones
    against CE alone (:func:`against_ce`)."""
    from relkd.engine import run_trial

    at = setting.with_budget(lr=tuning.lr)
    picking, fresh = tuning.seeds, [s + len(tuning.seeds) for s in tuning.seeds]
    tried = {k: [float(run_trial(at, kd_config(*k), seed=s, teacher=teacher, every_epoch=False).val_accuracy)
                 for s in picking] for k in KD_SETTINGS}
    best = max(tried, key=lambda k: statistics.fmean(tried[k]))
    measured = against_ce(at, best, fresh, teacher)
    return {"picked_on": picking, "fresh_seeds": fresh, "tried": {str(k): v for k, v in tried.items()},
            "best": list(best), **{k: measured[k] for k in ("kd", "ce", "difference", "standard_error", "p", "in_sds")}}


def spread(values: list[float]) -> str:
    """Accuracies as percent, mean ± std (0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) and value else value
    return out


def candidate_setting(name: str, args: argparse.Namespace):
    doc = load_setting(ROOT / "studies" / "fmnist_quick.yaml").to_dict()
    for section in ("search", "optuna"):
        doc.pop(section, None)
    doc["data"].pop("labelled", None)  # every label unless the candidate says otherwise
    doc = merge(doc, CANDIDATES[name][1])
    doc["name"] = f"headroom_{name}"
    doc["device"] = args.device
    doc["tune"] = {"seeds": args.seeds}
    if args.data == "synthetic":  # checks the script, not the data: a quick run anywhere
        doc["data"] = {**doc["data"], "dataset": "synthetic", "train_subset": None,
                       "params": {"train_size": 600, "test_size": 100}}
        doc["teacher"]["epochs"] = 1
    return validate_setting(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", choices=("real", "synthetic"), default="real")
    parser.add_argument("--kd-settings", action="store_true",
                        help="also try other KD settings at the tuned rate (picked and measured on separate seeds)")
    parser.add_argument("--replicate", metavar="CE,KD,T",
                        help="train this KD setting and CE alone at each candidate's tuned rate on --replicate-seeds "
                             "(a setting picked earlier, measured again on seeds it was not picked on)")
    parser.add_argument("--replicate-seeds", default="6,7,8,9,10")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    out = Path(args.out) / f"headroom_{time.strftime('%Y%m%d-%H%M%S')}.json"
    for name in args.candidates.split(","):
        setting = candidate_setting(name, args)
        start = time.perf_counter()
        teacher = get_teacher(setting, progress=False)
        teacher_seconds = time.perf_counter() - start
        tuning = tune_recipe(setting, teacher=teacher)
        h = tuning.headroom()
        runs = len(tuning.grid) * 2 * len(tuning.seeds)
        row = {"candidate": name, "what": CANDIDATES[name][0], "teacher": setting.teacher.model,
               "student": setting.student.model, "teacher_val": h["teacher_val"], "lr": tuning.lr,
               "grid": tuning.grid, "baseline_ce": tuning.mean("none", tuning.baseline), **h,
               "best_lr_none": tuning.best_lr("none"), "best_lr_kd": tuning.best_lr("kd"),
               "tuning_seconds": tuning.seconds, "seconds_per_run": tuning.seconds / runs if tuning.seconds else None,
               "teacher_seconds": teacher_seconds, "curves": tuning.curves}
        if args.kd_settings:
            row["kd_settings"] = kd_settings(setting, tuning, teacher)
        if args.replicate:
            kd_setting = tuple(float(v) for v in args.replicate.split(","))
            seeds = [int(v) for v in args.replicate_seeds.split(",")]
            row["replicated"] = against_ce(setting.with_budget(lr=tuning.lr), kd_setting, seeds, teacher)
        rows.append(row)
        print(f"{name}: lr {tuning.lr:g}, CE {100 * h['ce_mean']:.2f}, KD {100 * h['kd_mean']:.2f}, "
              f"{h['in_sds']:.1f} sd, {h['outcome']}", file=sys.stderr, flush=True)
        write_text(out, json.dumps({"device": args.device, "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"\nvalidation accuracy at each candidate's tuned lr, {args.seeds} seeds (mean ± std); "
          f"device {args.device}\n")
    print("| candidate | tuned lr | CE alone | KD | KD − CE | in seed sds | teacher (val) | headroom | s per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_run = "cached" if not r["seconds_per_run"] else f"{r['seconds_per_run']:.1f}"
        print(f"| {r['candidate']}: {r['what']} | {r['lr']:g} | {100 * r['ce_mean']:.2f} ± {100 * r['ce_std']:.2f} | "
              f"{100 * r['kd_mean']:.2f} ± {100 * r['kd_std']:.2f} | {100 * r['difference']:+.2f} | "
              f"{r['in_sds']:.1f} | {100 * r['teacher_val']:.2f} | {r['outcome']} | {per_run} |")
    if args.kd_settings:
        print("\nother KD settings at the tuned lr: the best of KD_SETTINGS (CE weight, KD weight, T) on seeds "
              "picked, then it and CE alone on fresh seeds\n")
        print("| candidate | best KD setting | mean on the picking seeds | fresh seeds: KD | CE alone | KD − CE | "
              "in seed sds | Welch p |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            k = r["kd_settings"]
            picked = statistics.fmean(k["tried"][str(tuple(k["best"]))])
            print(f"| {r['candidate']} | CE {k['best'][0]:g}, KD {k['best'][1]:g}, T {k['best'][2]:g} | "
                  f"{100 * picked:.2f} | "
                  f"{spread(k['kd'])} | {spread(k['ce'])} | "
                  f"{100 * k['difference']:+.2f} | {k['in_sds']:.1f} | "
                  f"{'-' if k['p'] is None else format(k['p'], '.3f')} |")
    if args.replicate:
        print(f"\nreplicated at the tuned lr: KD (CE weight, KD weight, T) = ({args.replicate}) against CE alone on "
              f"seeds {args.replicate_seeds}\n")
        print("| candidate | KD | CE alone | KD − CE | in seed sds | Welch p |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            k = r["replicated"]
            print(f"| {r['candidate']} | {spread(k['kd'])} | {spread(k['ce'])} | {100 * k['difference']:+.2f} | "
                  f"{k['in_sds']:.1f} | {'-' if k['p'] is None else format(k['p'], '.3f')} |")
    best = max(rows, key=lambda r: r["in_sds"])
    print(f"\nmost room: {best['candidate']} ({best['in_sds']:.1f} seed sds; "
          f"CE at the untuned lr {100 * best['baseline_ce']:.2f})")
    print(f"mean seconds per run over candidates: "
          f"{statistics.fmean([r['seconds_per_run'] for r in rows if r['seconds_per_run']] or [0]):.1f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
