"""Rank fidelity: how well a short budget ranks compositions the way the longest budget does.

The study's anchors (the known methods) plus a fixed set of searched compositions (the first
valid draws of the study's search space under a fixed random seed, chosen before anything is
trained) are trained with several seeds at the longest budget, recording the validation
accuracy after every epoch, and, for each shorter budget, also as a run of their own with
that budget (its learning-rate schedule ends there). A fidelity is "the accuracy after epoch
B of an L-epoch run": epoch 1 of a 3-epoch run is what a ladder with rungs [1] on a 3-epoch
budget compares at its screening rung; epoch 3 of a 3-epoch run is what a study with a
3-epoch budget compares at the end.

For each, Kendall's tau and Spearman's rho between the ranking of the compositions by the
mean over seeds at B and by the mean over seeds at the longest budget, and the seed-to-seed
standard deviation (mean over compositions). The "noise" row is the ceiling a single seed
reaches: the ranking by one seed at the longest budget against the mean of the other seeds.

    .venv/bin/python benchmarks/fidelity.py [--study studies/fmnist_quick.yaml] [--budgets 1,3,9]
        [--seeds 0,1,2] [--searched 4] [--threads 1] [--out benchmarks/out/fidelity]

Every finished run is appended to ``<out>/runs.jsonl`` at once: an interrupted benchmark
resumes where it stopped (same study file, budgets and compositions). The table goes to
``<out>/fidelity.md`` and ``fidelity.json``, the plot to ``fidelity.png``. Search sees
validation accuracy only: the test split is not touched.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from relkd.engine import get_teacher, run_trial  # noqa: E402
from relkd.presets import preset  # noqa: E402
from relkd.study import load_study_spec  # noqa: E402


def searched_compositions(spec, count: int, seed: int = 12345) -> list[tuple[str, dict]]:
    """The first ``count`` valid draws of the study's space under a fixed random sampler."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    found: list[tuple[str, dict]] = []
    for _ in range(1000):
        if len(found) == count:
            break
        trial = study.ask()
        config, problems = spec.space.sample(trial)
        study.tell(trial, 0.0)
        if not problems:
            found.append((f"searched{len(found)}", config))
    return found


def config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def rank_agreement(short: list[float], long: list[float]) -> tuple[float, float]:
    tau = stats.kendalltau(short, long).statistic
    rho = stats.spearmanr(short, long).statistic
    return float(tau), float(rho)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--budgets", default="1,3,9", help="comma-separated epochs; the last is the reference")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--searched", type=int, default=4, help="how many searched compositions beside the anchors")
    parser.add_argument("--no-train", action="store_true",
                        help="only analyse the runs already in runs.jsonl (budgets whose runs are all there)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "fidelity"))
    args = parser.parse_args()
    budgets = sorted({int(b) for b in args.budgets.split(",")})
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study_spec(args.study)
    top = budgets[-1]
    compositions = [(name, preset(name)) for name in spec.anchors] + searched_compositions(spec, args.searched)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "runs.jsonl"
    done: dict[tuple[str, int, int], dict] = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            try:
                r = json.loads(line)
                done[(r["key"], r["seed"], r["epochs"])] = r
            except (json.JSONDecodeError, KeyError):
                print(f"skipping a damaged line in {log_path}", file=sys.stderr)
    teacher = get_teacher(spec.setting, progress=True)
    study_budget = spec.setting.budget.epochs  # what the study's trials train for, if it is one of the budgets
    # the study's own budget first (its rungs decide the study's ladder), then the longest, then the rest
    order = sorted(budgets, key=lambda b: (b != study_budget, b != top, b))
    plan = [(name, config, seed, epochs) for epochs in order for name, config in compositions for seed in seeds]
    start = time.perf_counter()
    for i, (name, config, seed, epochs) in enumerate(plan):
        key = config_key(config)
        if (key, seed, epochs) in done or args.no_train:
            continue
        metrics = run_trial(spec.setting.with_budget(epochs=epochs), config, seed=seed, teacher=teacher)
        record = {"name": name, "key": key, "seed": seed, "epochs": epochs, "val_history": metrics.val_history,
                  "wall_seconds": metrics.wall_seconds, "config": config}
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[(key, seed, epochs)] = record
        print(f"[{i + 1}/{len(plan)}] {name} seed {seed} {epochs} epochs: {100 * metrics['val_accuracy']:.2f}% "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    names = [name for name, _ in compositions]
    keys = [config_key(config) for _, config in compositions]
    # the epochs at which every run is read: the budgets, and every epoch of the study's own budget
    rungs = sorted(set(budgets) | set(range(1, study_budget + 1)))
    budgets = [b for b in budgets if all((k, s, b) in done for k in keys for s in seeds)]  # complete ones
    if not budgets:
        sys.exit("no budget has all its runs yet")
    top = budgets[-1]

    def values(key: str, epoch: int, length: int) -> list[float]:
        """Validation accuracy after ``epoch`` of the ``length``-epoch run, one per seed."""
        return [done[(key, s, length)]["val_history"][epoch - 1] for s in seeds]

    reference = [statistics.mean(values(k, top, top)) for k in keys]
    own = [statistics.mean(values(k, study_budget, study_budget)) for k in keys] if study_budget in budgets else None
    fidelities = [(epoch, length) for length in budgets for epoch in rungs if epoch <= length]
    rows = []
    # The ladder compares searched trials with searched trials: where the study's search fixes KD
    # (on or off), the rows "(KD on only)" / "(KD off only)" rank just the compositions it could meet.
    kd_fixed = spec.space.kd.describe() if not spec.space.kd.searched else None
    families = [("", list(range(len(keys))))]
    if kd_fixed is not None:
        same = [j for j, (_, config) in enumerate(compositions) if bool(config.get("kd")) == bool(kd_fixed)]
        families.append((f" (KD {'on' if kd_fixed else 'off'} only)", same))
    for suffix, members in families:
        for epoch, length in fidelities:
            per = [values(keys[j], epoch, length) for j in members]
            means = [statistics.mean(v) for v in per]
            tau, rho = rank_agreement(means, [reference[j] for j in members])
            tau_study = rank_agreement(means, [own[j] for j in members])[0] if own is not None else float("nan")
            std = statistics.mean(statistics.stdev(v) for v in per) if len(seeds) > 1 else float("nan")
            best = members[max(range(len(members)), key=lambda j: means[j])]
            rows.append({"fidelity": f"epoch {epoch} of {length}{suffix}", "epoch": epoch, "length": length,
                         "family": suffix.strip(" ()") or "all", "n": len(members), "tau": tau, "rho": rho,
                         "tau_study": tau_study, "seed_std": std, "leader": names[best]})
    if len(seeds) > 1:  # the noise ceiling: one seed against the mean of the others, at the top budget
        taus, rhos = [], []
        for seed in seeds:
            one = [done[(k, seed, top)]["val_history"][-1] for k in keys]
            rest = [statistics.mean(done[(k, s, top)]["val_history"][-1] for s in seeds if s != seed) for k in keys]
            tau, rho = rank_agreement(one, rest)
            taus.append(tau)
            rhos.append(rho)
        rows.append({"fidelity": f"one seed of {top} vs the mean of the others", "epoch": top, "length": None,
                     "family": "all", "n": len(keys),
                     "tau": statistics.mean(taus), "rho": statistics.mean(rhos), "tau_study": float("nan"),
                     "seed_std": float("nan"),
                     "leader": ""})
    per_composition = [{"name": n, "key": k, **{f"epoch {e} of {L}": statistics.mean(values(k, e, L))
                                                  for e, L in fidelities}} for n, k in zip(names, keys)]
    table = {"study": spec.study_name, "budgets": budgets, "seeds": seeds, "rows": rows,
             "compositions": per_composition, "seconds": time.perf_counter() - start}
    (out / "fidelity.json").write_text(json.dumps(table, indent=2))
    bar = "|"
    lines = [f"{bar} fidelity {bar} Kendall tau vs epoch {top} of {top} {bar} Spearman rho {bar} Kendall tau vs "
             f"epoch {study_budget} of {study_budget} (the study's budget) {bar} seed std (points) {bar} leader {bar}",
             "|---|---|---|---|---|---|"]
    for r in rows:
        std = "" if r["seed_std"] != r["seed_std"] else f"{100 * r['seed_std']:.2f}"
        study_tau = "" if r["tau_study"] != r["tau_study"] else f"{r['tau_study']:.2f}"
        lines.append(f"| {r['fidelity']} | {r['tau']:.2f} | {r['rho']:.2f} | {study_tau} | {std} | {r['leader']} |")
    columns = [f"epoch {e} of {L}" for e, L in fidelities]
    lines += ["", "| composition | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for c in sorted(per_composition, key=lambda c: -c[f"epoch {top} of {top}"]):
        lines.append(f"| {c['name']} | " + " | ".join(f"{100 * c[col]:.2f}" for col in columns) + " |")
    text = "\n".join(lines) + "\n"
    (out / "fidelity.md").write_text(text)
    print(text)
    from relkd.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for length in budgets:
        pts = [(r["epoch"], r["tau"]) for r in rows if r["length"] == length and r["family"] == "all"]
        ax.plot(*zip(*pts), marker="o", label=f"epoch B of a {length}-epoch run")
    noise = [r["tau"] for r in rows if r["length"] is None]
    if noise:
        ax.axhline(noise[0], color="grey", linestyle="--", label="one seed vs the others (longest)")
    ax.set_xscale("log")
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("epoch B")
    ax.set_ylabel(f"Kendall tau vs {top} epochs")
    ax.set_title(f"{spec.study_name}: rank fidelity ({len(keys)} compositions, {len(seeds)} seeds)")
    ax.legend(fontsize=7)
    save_figure(fig, out, "fidelity")
    print(f"files: {out / 'fidelity.md'}, {out / 'fidelity.json'}, {out / 'fidelity.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
