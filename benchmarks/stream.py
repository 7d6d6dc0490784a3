"""The streaming loader against the device-resident path (issue 27), side by side in one run:

1. memory: peak RSS of a one-epoch KD run (a teacher used as it is, teacher.epochs 0) on a
   generated 20,000-image folder against the same run on a 2,000-image folder, streamed and
   device-resident, each run in a fresh process (its own peak; the DataLoader workers'
   peak, which the kernel reports for the children together, beside it);
2. speed: samples/s of one epoch on the quick setting (studies/fmnist_quick.yaml: Fashion-MNIST,
   cnn_small -> cnn_tiny, batch 128), CE alone and KD, resident against streamed (with
   ``--workers`` worker processes, and in the main process), runs alternated, median of
   ``--repeats``.

    .venv/bin/python benchmarks/stream.py [--image-size 64] [--repeats 3] [--workers 2] [--device cpu]

Prints markdown tables for docs/benchmarks.md and writes JSON to benchmarks/out/stream/. The
folders are written under ``--folders`` (default: a temporary folder, removed after).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from relkd.engine import get_teacher, run_trial  # noqa: E402
from relkd.files import write_text  # noqa: E402
from relkd.setting import load_setting, validate_setting  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "stream"
SIZES = (2000, 20000)
#: relkd's default evaluation batch (1024) is larger than the 2,000-image folder's validation split
#: (200 images): its runs evaluate in smaller batches, so their activations take less memory for a
#: reason that is not the data's size. The evaluation batch of the training batch (128) fits both.
EVAL_BATCHES = (1024, 128)


def make_folder(root: Path, images: int, image_size: int, classes: int = 10) -> Path:
    """``root/{train,test}/c<k>/<n>.png``: ``images`` RGB training images (and a tenth as many
    test images) of random noise over a per-class colour, ``image_size`` square."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", images), ("test", max(classes, images // 10))):
        for n in range(count):
            c = n % classes
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = torch.tensor([25 * c, 255 - 25 * c, 128], dtype=torch.int16).view(3, 1, 1)
            noise = torch.randint(-60, 61, (3, image_size, image_size), generator=g, dtype=torch.int16)
            pixels = (base + noise).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels, mode="RGB").save(folder / f"{n}.png")
    return root


def folder_setting(data_dir: Path, teacher_file: Path, image_size: int, loader: str, workers: int,
                   device: str, eval_batch_size: int) -> dict:
    return {
        "name": "stream_memory", "seed": 0, "device": device,
        "data": {"dataset": "imagefolder", "data_dir": str(data_dir), "val_fraction": 0.1, "batch_size": 128,
                 "eval_batch_size": eval_batch_size,
                 "params": {"image_size": image_size, "channels": 3, "flip": False, "cache": False},
                 "loader": loader, "workers": workers},
        "teacher": {"model": "cnn_small", "init": str(teacher_file), "epochs": 0},
        "student": {"model": "cnn_tiny"},
        "budget": {"epochs": 1, "lr": 0.05},
    }


def memory_child(doc_json: str) -> None:
    """One run in this (fresh) process; prints its peak RSS and its children's, in MiB, as JSON."""
    setting = validate_setting(json.loads(doc_json))
    start = time.perf_counter()
    result = run_trial(setting, "kd", seed=0, teacher_cache=False)
    print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "children_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - start, "samples_per_second": result.samples_per_second,
                      "val_accuracy": result.val_accuracy}))


def measure_memory(args: argparse.Namespace, folders: Path) -> list[dict]:
    folders.mkdir(parents=True, exist_ok=True)
    teacher_file = folders / "teacher.pt"
    torch.manual_seed(0)
    from relkd.models import create_model

    torch.save(create_model("cnn_small", num_classes=10, in_channels=3).net.state_dict(), teacher_file)
    rows = []
    for images in SIZES:
        data_dir = folders / f"folder{images}"
        if not (data_dir / "train").is_dir():
            started = time.perf_counter()
            make_folder(data_dir, images, args.image_size)
            logging.info("wrote %d images to %s in %.0f s", images, data_dir, time.perf_counter() - started)
        for eval_batch in EVAL_BATCHES:
            for loader in ("stream", "device"):
                doc = folder_setting(data_dir, teacher_file, args.image_size, loader, args.workers, args.device,
                                     eval_batch)
                out = subprocess.run([sys.executable, __file__, "--child", json.dumps(doc)], capture_output=True,
                                     text=True, check=True, env={**_env(folders)})
                row = {"images": images, "loader": loader, "eval_batch_size": eval_batch,
                       **json.loads(out.stdout.strip().splitlines()[-1])}
                logging.info("memory: %s", row)
                rows.append(row)
    return rows


def _env(folders: Path) -> dict:
    import os

    return {**os.environ, "RELKD_CACHE_DIR": str(folders / "cache"), "XDG_CACHE_HOME": str(folders / "xdg")}


def measure_speed(args: argparse.Namespace) -> list[dict]:
    base = load_setting(ROOT / "studies" / "fmnist_quick.yaml").to_dict()
    for key in ("search", "optuna", "tune"):
        base.pop(key, None)
    base["budget"]["epochs"], base["device"] = 1, args.device
    variants = {"resident": {"loader": "device"}, f"stream, {args.workers} workers":
                {"loader": "stream", "workers": args.workers}, "stream, in the main process":
                {"loader": "stream", "workers": 0}}
    settings = {}
    for name, data in variants.items():
        doc = copy.deepcopy(base)
        doc["data"].update(data)
        settings[name] = validate_setting(doc)
    get_teacher(settings["resident"])  # trained or read before any timing
    rows = []
    for config in ("none", "kd"):
        for name, setting in settings.items():  # an untimed warm-up (data, teacher outputs)
            run_trial(setting, config, seed=0)
        speeds: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.repeats):
            for name, setting in settings.items():
                speeds[name].append(run_trial(setting, config, seed=0).samples_per_second)
        resident = statistics.median(speeds["resident"])
        for name, values in speeds.items():
            rows.append({"config": config, "loader": name, "samples_per_second": statistics.median(values),
                         "ratio": statistics.median(values) / resident, "runs": values})
            logging.info("speed: %s", rows[-1])
    return rows


def tables(memory: list[dict], speed: list[dict], args: argparse.Namespace) -> str:
    lines = [f"Peak memory (RSS) of a one-epoch KD run (cnn_small used as it is -> cnn_tiny, {args.image_size}x"
             f"{args.image_size} RGB PNG files, batch 128, {args.workers} workers, {args.device}, "
             f"torch {torch.__version__}):", "",
             "| loader | eval batch | 2,000 images | 20,000 images | ratio | largest child process (2,000 / 20,000) |",
             "|---|---|---|---|---|---|"]
    for eval_batch in EVAL_BATCHES:
        for loader in ("stream", "device"):
            small, big = (next(r for r in memory if r["loader"] == loader and r["images"] == n
                               and r["eval_batch_size"] == eval_batch) for n in SIZES)
            lines.append(f"| {loader} | {eval_batch} | {small['rss_mib']:.0f} MiB | {big['rss_mib']:.0f} MiB | "
                         f"{big['rss_mib'] / small['rss_mib']:.2f}x | {small['children_rss_mib']:.0f} / "
                         f"{big['children_rss_mib']:.0f} MiB |")
    lines += ["", f"Samples/s of one epoch on the quick setting ({args.device}, median of {args.repeats}, "
                  f"runs alternated):", "", "| objective | loader | samples/s | vs resident |", "|---|---|---|---|"]
    for row in speed:
        lines.append(f"| {row['config']} | {row['loader']} | {row['samples_per_second']:.0f} | {row['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--folders", type=Path, help="where to write the generated folders (kept)")
    parser.add_argument("--skip", choices=["memory", "speed"], help="leave one measurement out")
    args = parser.parse_args(argv)
    if args.child:
        memory_child(args.child)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        folders = args.folders or Path(tmp)
        memory = measure_memory(args, folders) if args.skip != "memory" else []
    speed = measure_speed(args) if args.skip != "speed" else []
    text = tables(memory, speed, args) if memory and speed else json.dumps({"memory": memory, "speed": speed})
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_text(OUT / f"stream-{stamp}.json", json.dumps({"memory": memory, "speed": speed, "args": vars(args),
                                                         "torch": torch.__version__}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
