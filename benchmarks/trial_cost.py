"""What distillation costs per trial: wall time of a student run with KD plus an SP term at
``last_stage``, divided by a CE-only run of the same student and budget, measured in one
process (runs interleaved, repeated, median). Reported with the teacher-output cache on
(the target is <= 1.15 on the CPU) and off, with samples/s.

    .venv/bin/python benchmarks/trial_cost.py [--setting studies/fmnist_full.yaml] [--reps 3] [--markdown]

The teacher is trained (or loaded from the cache) first and is not part of any timing; the
first cached run pays for computing the teacher's outputs once, as a study's first trial
does, so the cached ratio is reported both for that first run and for later ones.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import relkd  # noqa: E402
from relkd.engine import TeacherOutputs, get_teacher, run_trial  # noqa: E402
from relkd.setting import load_setting  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default=str(ROOT / "studies" / "fmnist_full.yaml"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="override the budget's epochs")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    setting = load_setting(args.setting)
    if args.epochs:
        setting = setting.with_budget(epochs=args.epochs)
    teacher = get_teacher(setting, progress=True)
    kd_sp = relkd.preset("sp+kd")

    def timed(config, cache: bool):
        return run_trial(setting, config, teacher=teacher, teacher_cache=cache)

    TeacherOutputs.persist = False  # measure computing the outputs, not reading another process's files
    TeacherOutputs.clear()
    first_cached = timed(kd_sp, True).wall_seconds  # pays for the teacher's outputs once
    times: dict[str, list[float]] = {"ce": [], "cached": [], "live": []}
    rates: dict[str, list[float]] = {"ce": [], "cached": [], "live": []}
    for _ in range(args.reps):
        for name, config, cache in (("ce", "none", True), ("cached", kd_sp, True), ("live", kd_sp, False)):
            m = timed(config, cache)
            times[name].append(m.wall_seconds)
            rates[name].append(m.samples_per_second)
    ce = statistics.median(times["ce"])
    rows = [
        ("CE only", ce, statistics.median(rates["ce"])),
        ("KD + SP, teacher cache on (first trial)", first_cached, None),
        ("KD + SP, teacher cache on", statistics.median(times["cached"]), statistics.median(rates["cached"])),
        ("KD + SP, teacher cache off", statistics.median(times["live"]), statistics.median(rates["live"])),
    ]
    print(f"setting {setting.name}: student {setting.student.model}, teacher {setting.teacher.model}, "
          f"{setting.budget.epochs} epochs, train subset {setting.data.train_subset}, "
          f"{torch.get_num_threads()} threads, median of {args.reps}\n")
    bar = "|" if args.markdown else " "
    print(f"{bar} run {' ' * 37}{bar} seconds {bar} / CE only {bar} samples/s {bar}")
    if args.markdown:
        print("|---|---|---|---|")
    for name, seconds, rate in rows:
        rate_text = f"{rate:>9.0f}" if rate is not None else f"{'':>9}"
        print(f"{bar} {name:<40}{bar} {seconds:>7.2f} {bar} {seconds / ce:>9.3f} {bar} {rate_text} {bar}")
    cached_ratio = statistics.median(times["cached"]) / ce
    print(f"\ncached ratio {cached_ratio:.3f} (target <= 1.15): {'OK' if cached_ratio <= 1.15 else 'OVER'}")


if __name__ == "__main__":
    main()
