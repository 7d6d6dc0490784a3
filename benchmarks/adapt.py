"""Target-aware adaptation against simple baselines, on the transfer setting: accuracy (test
split, mean ± std over seeds), parameters, MACs and CPU inference time of the unpruned
student and of students adapted to several sizes by the target-aware criterion and by uniform
L1-norm filter pruning, each distilled without and with KD and with a relation composition.

    .venv/bin/python benchmarks/adapt.py [--setting studies/adapt_fmnist.yaml] [--ratios 0.75 0.5 0.25]
                                         [--seeds 3] [--methods none kd sp+kd] [--out benchmarks/out/adapt]

For each seed s the student's init (the source checkpoint) is adapted with seed s to each
ratio by each criterion (``relkd.adapt``: the same loop, steps and fine-tuning epochs; only
the criterion differs), then every method trains it for the setting's budget with seed s
(``relkd.engine.run_trial``, the teacher trained once). The unpruned student trains from
its init with the same budget; since an adapted student has also been fine-tuned during its
adaptation, the unpruned student is also trained for the budget plus as many epochs as the
longest adaptation fine-tuned (row ``unpruned +N ep``), so that extra training alone is
measured too. The methods are fixed before the run (``sp+kd`` is the best known method of
the main job). Inference time: every model of seed 0 in eval mode on a batch of 256 inputs
on the CPU, timed in interleaved rounds on one process, median per model, as a ratio to the
unpruned model's. Writes ``adapt.md`` and ``adapt.json`` into ``--out`` and prints the table.
``--timing-only`` skips the training runs and times the models again (the adapted students
come from the cache), on a quiet machine: the timing of a full run shares the CPU with
whatever else runs then.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relkd.adapt import get_adapted, resolve_student, with_ratio  # noqa: E402
from relkd.engine import build_model, get_teacher, load_data, run_trial  # noqa: E402
from relkd.models import create_model  # noqa: E402
from relkd.models.adapted import PREFIX  # noqa: E402
from relkd.pretrain import resolve_inits  # noqa: E402
from relkd.setting import load_setting  # noqa: E402


def adaptation_epochs(meta: dict) -> int:
    return (meta["warmup_epochs"] or 0) + meta["steps_taken"] * (meta["finetune_epochs"] or 0)


def inference_ratios(models: dict[str, torch.nn.Module], input_size: tuple[int, ...], rounds: int = 15,
                     batch: int = 256, reps: int = 5) -> dict[str, float]:
    """Median forward time of each model over interleaved rounds, as a ratio to the first one's."""
    x = torch.randn(batch, *input_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model.eval()
            for _ in range(3):
                model(x, taps=("logits",))
        order = list(models)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                start = time.perf_counter()
                for _ in range(reps):
                    models[name](x, taps=("logits",))
                times[name].append((time.perf_counter() - start) / reps)
    base = statistics.median(times[next(iter(models))])
    return {name: statistics.median(t) / base for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default=str(ROOT / "studies" / "adapt_fmnist.yaml"))
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["none", "kd", "sp+kd"])
    parser.add_argument("--criteria", nargs="+", default=["activation", "l1"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "adapt"))
    parser.add_argument("--timing-only", action="store_true", help="time the models only (no training runs)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    args = parser.parse_args()
    base = resolve_inits(load_setting(args.setting).replace(device="cpu"), progress=False)
    teacher = get_teacher(base)
    seeds = list(range(args.seeds))
    variants: dict[str, dict] = {}  # label -> {"criterion", "ratio", "settings": {seed: setting}}
    for criterion in args.criteria:
        for ratio in args.ratios:
            label = f"{'adapted' if criterion == 'activation' else 'L1 uniform'} {ratio:.0%}"
            settings = {s: resolve_student(with_ratio(base.replace(seed=s), ratio, criterion=criterion))
                        for s in seeds}
            variants[label] = {"criterion": criterion, "ratio": ratio, "settings": settings,
                               "meta": {s: get_adapted(settings[s]).meta for s in seeds}}
    unpruned = with_ratio(base, None)
    extra = max((adaptation_epochs(m) for v in variants.values() for m in v["meta"].values()), default=0)
    rows = []
    if args.timing_only:
        seeds = []
    plans = [("unpruned", None, lambda s: unpruned.replace(seed=s))]
    if extra:
        longer = unpruned.with_budget(epochs=unpruned.budget.epochs + extra)
        plans.append((f"unpruned +{extra} ep", None, lambda s: longer.replace(seed=s)))
    plans += [(label, v, (lambda v: lambda s: v["settings"][s])(v)) for label, v in variants.items()]
    for label, variant, setting_of in plans:
        for method in args.methods if seeds else ():
            runs = [run_trial(setting_of(s), method, seed=s, eval_test=True, teacher=teacher) for s in seeds]
            test = [r.test_accuracy for r in runs]
            rows.append({
                "student": label, "method": method, "criterion": variant["criterion"] if variant else None,
                "ratio": variant["ratio"] if variant else 1.0,
                "test_accuracy": statistics.fmean(test), "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                "val_accuracy": statistics.fmean(r.val_accuracy for r in runs),
                "params": statistics.fmean(r.student_params for r in runs),
                "macs": statistics.fmean(r.student_macs for r in runs),
                "adapt_epochs": statistics.fmean(adaptation_epochs(m) for m in variant["meta"].values())
                if variant else (extra if "+" in label else 0),
                "per_seed": test,
            })
            print(f"{label:>18} {method:>6}: {100 * rows[-1]['test_accuracy']:.2f} ± {100 * rows[-1]['test_std']:.2f}",
                  flush=True)
    data = load_data(base)
    input_size = tuple(data.train_images.shape[1:])
    models = {"unpruned": build_model(dataclasses.replace(unpruned.student), data, 0, torch.device("cpu"))}
    for label, v in variants.items():
        models[label] = create_model(PREFIX + v["settings"][0].student.adapt.checkpoint,
                                     num_classes=data.num_classes, in_channels=data.in_channels)
    speed = inference_ratios(models, input_size, rounds=args.rounds)
    if args.timing_only:
        for name, ratio in speed.items():
            print(f"{name:>18}: CPU time ratio {ratio:.2f} (median of {args.rounds} interleaved rounds)")
        return
    first = {r["student"]: r for r in rows}
    base_params, base_macs = first["unpruned"]["params"], first["unpruned"]["macs"]
    lines = [f"{base.name}: {base.student.model} from its init, teacher {base.teacher.model}, budget "
             f"{base.budget.epochs} epochs, seeds {seeds}, test split (mean ± std)", "",
             "| student | method | accuracy (%) | params | MACs | params ratio | MACs ratio | CPU time ratio "
             "| adapt epochs |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        time_ratio = speed.get(r["student"], speed["unpruned"] if r["student"].startswith("unpruned") else None)
        lines.append(f"| {r['student']} | {r['method']} | {100 * r['test_accuracy']:.2f} ± {100 * r['test_std']:.2f} "
                     f"| {r['params']:,.0f} | {r['macs']:,.0f} | {r['params'] / base_params:.3f} "
                     f"| {r['macs'] / base_macs:.3f} | {time_ratio:.2f} | {r['adapt_epochs']:.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt.md").write_text(table + "\n")
    (out / "adapt.json").write_text(json.dumps({"rows": rows, "cpu_time_ratio": speed, "seeds": seeds,
                                                "setting": args.setting}, indent=2))
    print(f"\nwritten: {out / 'adapt.md'}, {out / 'adapt.json'}")


if __name__ == "__main__":
    main()
