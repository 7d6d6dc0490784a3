"""The GPU benchmark of population training: trials per hour at K = 1, 4, 16, 64 on the quick
setting (cnn_small -> cnn_tiny, Fashion-MNIST) and on resnet32x4 -> resnet8x4 (CIFAR-100, or
synthetic CIFAR-shaped data when CIFAR-100 is not on the machine), with samples per second,
peak device memory and the ratio against K = 1 (one trial alone, run_trial), in one run.

    .venv/bin/python benchmarks/gpu.py [--device cuda] [--ks 1,4,16,64] [--epochs 1]
        [--pairs quick,resnet] [--data real|synthetic] [--subset N] [--teacher-epochs N] [--engine auto]

Each pair's teacher is trained (or loaded from the cache) and its outputs computed before any
timing; a first untimed run loads the data and warms the device up. A K that runs out of device
memory is reported as such and larger ones are not tried. Prints a markdown table for
docs/benchmarks.md and writes JSON to benchmarks/out/gpu/. On a machine without CUDA it runs on the CPU
(useful to check it, not to quote).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from relkd.engine import free_device_memory, get_teacher, load_data, run_population, run_trial  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.setting import load_setting, validate_setting  # noqa: E402

CONFIGS = ("sp+kd", "rkd+kd", "pkt+kd", "cc+kd", "rkd_d+kd", "rkd_a+kd", "kd", "none")
OUT = ROOT / "benchmarks" / "out" / "gpu"
SYNTHETIC = {"quick": {"num_classes": 10, "image_size": 28, "channels": 1},
             "resnet": {"num_classes": 100, "image_size": 32, "channels": 3}}


def pair_setting(pair: str, args: argparse.Namespace):
    """The setting of ``pair`` with the benchmark's overrides; real data when it loads, else synthetic."""
    path = {"quick": "fmnist_quick.yaml", "resnet": "cifar100_resnet32x4_resnet8x4.yaml"}[pair]
    doc = load_setting(ROOT / "studies" / path).to_dict()
    for section in ("search", "optuna"):
        doc.pop(section, None)
    # throughput on every label: with data.labelled CE alone trains on another loader and populations refuse it,
    # and a --subset smaller than the labelled count would be invalid
    doc["data"].pop("labelled", None)
    doc["device"] = args.device
    doc["budget"]["epochs"] = args.epochs
    doc["teacher"]["epochs"] = args.teacher_epochs
    if args.subset:
        doc["data"]["train_subset"] = args.subset
    source = args.data
    if source == "real":
        try:
            load_data(validate_setting(doc))
        except Exception as err:  # noqa: BLE001 - no such data here: synthetic data of the same shape
            logging.warning("%s: %s; using synthetic data of the same shape", pair, err)
            source = "synthetic"
    if source == "synthetic":
        size = args.subset or 10000
        doc["data"] = {**doc["data"], "dataset": "synthetic", "train_subset": None,
                       "params": {**SYNTHETIC[pair], "train_size": int(size / 0.9) + 1, "test_size": 500}}
    return validate_setting(doc), source


def measure(setting, teacher, configs, engine: str, device: torch.device) -> dict:
    """Seconds, samples/s and peak memory of one population (K = 1: run_trial alone)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if len(configs) == 1:
        results = [run_trial(setting, configs[0], teacher=teacher)]
        samples = results[0].samples_per_second * results[0].train_seconds
    else:
        results = run_population(setting, configs, teacher=teacher, engine=engine)
        samples = sum(r.samples_per_second * r.train_seconds for r in results)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"seconds": seconds, "samples_per_second": samples / seconds, "peak_mib": peak,
            "val_accuracy": [r.val_accuracy for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ks", default="1,4,16,64")
    parser.add_argument("--epochs", type=int, default=1, help="student epochs per trial")
    parser.add_argument("--teacher-epochs", type=int, default=2, help="teacher epochs (timing only needs a teacher)")
    parser.add_argument("--pairs", default="quick,resnet")
    parser.add_argument("--data", choices=("real", "synthetic"), default="real")
    parser.add_argument("--subset", type=int, help="training samples per trial (default: the setting's)")
    parser.add_argument("--engine", default="auto", help="population engine: auto, fold, vmap or loop")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ks = sorted({int(k) for k in args.ks.split(",")} | {1})
    device = torch.device(args.device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "epochs": args.epochs,
            "engine": args.engine, "command": " ".join(sys.argv)}
    out = Path(args.out) / f"gpu_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair in args.pairs.split(","):
        setting, source = pair_setting(pair, args)
        teacher = get_teacher(setting, progress=True)
        run_trial(setting, CONFIGS[0], teacher=teacher)  # data, teacher outputs, warm-up: not timed
        base = None
        for k in ks:
            configs = [CONFIGS[i % len(CONFIGS)] for i in range(k)]
            row = {"pair": pair, "student": setting.student.model, "teacher": setting.teacher.model,
                   "data": setting.data.dataset if source == "real" else f"synthetic {pair}-shaped", "batch": setting.data.batch_size, "k": k}
            try:
                row.update(measure(setting, teacher, copy.copy(configs), args.engine, device))
            except torch.OutOfMemoryError:
                free_device_memory()
                row["out_of_memory"] = True
                rows.append(row)
                print(f"{pair} K={k}: out of device memory", file=sys.stderr, flush=True)
                break
            row["trials_per_hour"] = k * 3600 / row["seconds"]
            base = base or row["trials_per_hour"]
            row["ratio"] = row["trials_per_hour"] / base
            rows.append(row)
            print(f"{pair} K={k}: {row['trials_per_hour']:.0f} trials/h (x{row['ratio']:.2f})", file=sys.stderr,
                  flush=True)
            write_text(out, json.dumps({"info": info, "rows": rows}, indent=2))
    write_text(out, json.dumps({"info": info, "rows": rows}, indent=2))
    print(f"{info['device']}, torch {info['torch']}, engine {info['engine']}, {args.epochs} epoch(s) per trial\n")
    print("| pair | data | K | trials/h | x K=1 | samples/s | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("out_of_memory"):
            print(f"| {r['teacher']} -> {r['student']} | {r['data']} | {r['k']} | out of memory | | | |")
            continue
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "n/a"
        print(f"| {r['teacher']} -> {r['student']} | {r['data']} | {r['k']} | {r['trials_per_hour']:.0f} | "
              f"{r['ratio']:.2f} | {r['samples_per_second']:.0f} | {peak} |")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
