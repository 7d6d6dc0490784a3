"""Beyond accuracy: the baseline student, KD and the best composition on the test split,
with calibration and accuracy under input degradation, over several seeds.

    .venv/bin/python benchmarks/robustness.py [--setting studies/fmnist_quick.yaml] [--best sp+kd] [--seeds 3]
                                              [--plot docs/robustness_fmnist]

Each method is trained with ``relkd.engine.train_runs(..., eval_test=True,
evaluation=TestEvaluation(setting))``, exactly as ``relkd train --eval-test`` does, so every number here is also in that command's
``metrics.json``: test accuracy, top-5, ECE (15 bins), NLL, agreement with the teacher (for
the methods that use it) and the accuracy under each degradation and severity, averaged
over the seeds. ``--best`` is a preset or an exported config (e.g.
``runs/fmnist_quick/best.yaml``); the default, ``sp+kd``, won the method comparison on this
setting. Prints two Markdown tables and writes the accuracy-versus-severity plot.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relkd.engine import train_runs  # noqa: E402
from relkd.evaluation import TestEvaluation, format_degradation_table, plot_degradation  # noqa: E402
from relkd.setting import load_setting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--best", default="sp+kd", help="a preset or an objective config file")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "robustness_fmnist"),
                        help="where the plot goes (without suffix: .png and .svg)")
    args = parser.parse_args()
    setting = load_setting(args.setting)
    methods = {"none": "none", "kd": "kd", f"best ({Path(args.best).name})": args.best}
    summaries = {label: train_runs(setting, config, list(range(args.seeds)), eval_test=True,
                                      evaluation=TestEvaluation(setting))
                 for label, config in methods.items()}

    print(f"\n{setting.name}: {setting.student.model} student, teacher {setting.teacher.model}, "
          f"{setting.budget.epochs} epochs, mean over seeds {list(range(args.seeds))}, test split\n")
    print("| method | accuracy (%) | top-5 (%) | ECE | NLL | agreement with teacher (%) |")
    print("|---|---|---|---|---|---|")
    for label, s in summaries.items():
        agree = f"{100 * s['teacher_agreement']:.2f}" if "teacher_agreement" in s else "–"
        print(f"| {label} | {100 * s['test_accuracy']:.2f} ± {100 * s['test_accuracy_std']:.2f} | "
              f"{100 * s['top5_accuracy']:.2f} | {s['ece']:.4f} | {s['nll']:.4f} | {agree} |")
    results = {label: {"accuracy": s["test_accuracy"], "degradation": s["degradation"]}
               for label, s in summaries.items()}
    print()
    print(format_degradation_table(results))
    paths = plot_degradation(results, args.plot)
    print(f"\nplot: {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
