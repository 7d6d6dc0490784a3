"""The ``relkd`` command. Thin: it parses arguments, calls the library and prints."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .cli_args import (MAX_SEED, Parser, checkpoint_every_option, device_flag, integer, log_to_option, out_file,
                       out_folder, print_json, seed_list)
from .fields import ConfigError, yaml_dump
from .config import validate_config
from .objective import build_objective, probe_objective
from .features import FEATURES
from .registry import Registry, markdown_tables
from .relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS
from .presets import PRESETS, preset

log = logging.getLogger("relkd")
#: How the CLI's log lines show their time (``2026-12-06 14:03:27 INFO relkd.study.queue: ...``).
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"

#: The registries `relkd list` shows (and `relkd list --markdown` writes to docs/registries.md).
LISTED: dict[str, Registry] = {
    "affinities": AFFINITIES,
    "normalisations": NORMALISATIONS,
    "losses": LOSSES,
    "views": VIEWS,
    "features": FEATURES,
    "presets": PRESETS,
}


def _format_properties(entry) -> str:
    return ", ".join(f"{k}={'(depends on params)' if callable(v) else v}" for k, v in entry.properties.items())


def cmd_list(args: argparse.Namespace) -> int:
    kinds = list(LISTED) if args.kind == "all" else [args.kind]
    if args.markdown:
        print(markdown_tables({kind: LISTED[kind] for kind in kinds}))
        return 0
    for kind in kinds:
        registry = LISTED[kind]
        print(f"{kind} ({len(registry)}):")
        for entry in registry.entries():
            params = ", ".join(p.summary() for p in entry.params)
            print(f"  {entry.name:<14} {entry.description}")
            if params:
                print(f"  {'':<14}   params: {params}")
            if args.properties and entry.properties:
                print(f"  {'':<14}   properties: {_format_properties(entry)}")
        print()
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    if args.setting:
        from .setting import load_setting

        config = load_setting(args.setting).preset(args.preset)
    elif args.student or args.teacher:
        if not (args.student and args.teacher):
            raise ValueError("--student and --teacher: give both models (or --setting FILE)")
        from .models import body_stages

        config = preset(args.preset, stages=(body_stages(args.student), body_stages(args.teacher)))
    else:
        config = preset(args.preset)
    print(yaml_dump(config), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    objective = build_objective(args.config)
    result = probe_objective(objective.to_config(), batch_size=args.batch_size, seed=args.seed)
    bad = [name for name, value in result.items() if not math.isfinite(value)]
    if args.json:
        print_json(result)
    else:
        print(repr(objective))
        print(f"\nparts on random features (B={args.batch_size}, student width 64, teacher width 256):")
        width = max(12, *(len(name) for name in objective.part_names))
        for name in objective.part_names:
            print(f"  {name:<{width}} {result[name]:>12.6g}   weighted {result[name + '.weighted']:>12.6g}")
        print(f"  {'total':<{width}} {result['total']:>12.6g}   grad norm {result['grad_norm']:.4g}")
    if bad:
        raise FloatingPointError(f"{args.config}: the objective is not finite on random features "
                                 f"({', '.join(bad)}); expected finite parts: lower the weights or the KD "
                                 f"temperature")
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    from .models import describe_models

    if args.markdown:
        raise ValueError(f"--markdown: the registries only ({', '.join(LISTED)}); expected no --markdown with models")
    from .models.timm_models import status_line

    if args.timm and args.pattern == "*":
        raise ValueError("--timm: give --pattern too (e.g. 'timm:resnet*'): timm has over a thousand models, each "
                         "built to show its taps")
    rows = describe_models(args.pattern, torchvision=args.torchvision, timm=args.timm)
    print(f"models ({len(rows)}); taps with shapes for one {{C,H,W}} input:")
    for row in rows:
        taps = ", ".join(f"{k}{list(v)}" for k, v in row.taps.items())
        print(f"  {row.name:<14} {row.num_params:>10,d} params  input {list(row.input_size)}  {row.description}")
        print(f"  {'':<14}   taps: {taps}")
        if row.params:
            print(f"  {'':<14}   params: {', '.join(p.summary() for p in row.params)}")
    print(status_line())
    return 0


def _load_setting(args: argparse.Namespace):
    """The setting file with the command's overrides, its ``pretrain`` inits and adapted student
    resolved (a run follows)."""
    from .adapt import resolve_student
    from .setting import load_setting

    setting = load_setting(args.setting)
    if getattr(args, "epochs", None):
        setting = setting.with_budget(epochs=args.epochs)
    if getattr(args, "device", None):
        setting = setting.replace(device=args.device)
    return resolve_student(setting, progress=not getattr(args, "quiet", False))


def cmd_teacher_train(args: argparse.Namespace) -> int:
    from .engine import get_teacher

    result = get_teacher(_load_setting(args), progress=not args.quiet, force=args.force,
                         checkpoint_every=args.checkpoint_every)
    summary = result.summary()
    if args.json:
        print_json(summary)
    else:
        what = "trained" if result.trained else "loaded from the cache"
        print(f"teacher {what}: val accuracy {result.val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}")
        print(f"checkpoint: {result.checkpoint}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import export_pretrained, get_pretrained
    from .setting import load_setting

    setting = load_setting(args.setting, teacher_required=False)
    if args.epochs:
        setting = setting.with_budget(epochs=args.epochs)
    if args.device:
        setting = setting.replace(device=args.device)
    result = get_pretrained(setting, progress=not args.quiet, force=args.force,
                            checkpoint_every=args.checkpoint_every)
    summary = result.summary()
    if args.out:
        checkpoint, meta = export_pretrained(result, args.out)
        summary.update(out=str(checkpoint), meta=str(meta))
    if args.json:
        print_json(summary)
        return 0
    what = "trained" if result.trained else "loaded from the cache"
    print(f"{setting.student.model} {what}: val accuracy {summary['val_accuracy']:.4f}, "
          f"test accuracy {summary['test_accuracy']:.4f} on {summary['dataset']} ({', '.join(summary['classes'])})")
    print(f"checkpoint: {summary.get('out', result.checkpoint)}  sha256 {result.sha256}")
    if args.out:
        print(f"metadata: {summary['meta']}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from .adapt import adapt_setting, export_adapted, get_adapted
    from .setting import load_setting

    setting = load_setting(args.setting, teacher_required=False)
    if args.device:
        setting = setting.replace(device=args.device)
    setting = adapt_setting(setting, ratio=args.target_ratio, criterion=args.criterion, measure=args.measure)
    result = get_adapted(setting, progress=not args.quiet, force=args.force)
    summary = result.summary()
    if args.out:
        summary["out"] = str(export_adapted(result, args.out))
    if args.json:
        print_json(summary)
        return 0
    what = "adapted" if result.built else "loaded from the cache"
    m = result.meta
    print(f"{setting.student.model} {what} ({m['criterion']}, {m['steps_taken']} steps): "
          f"{m['original_params']:,} -> {m['params']:,} parameters, {m['original_macs']:,} -> {m['macs']:,} MACs "
          f"({m['ratio_reached']:.3f} of the {m['measure']}, target {m['ratio']})")
    warmup = "n/a" if m["warmup_val_accuracy"] is None else f"{m['warmup_val_accuracy']:.4f}"
    print(f"val accuracy {m['val_accuracy']:.4f} (unpruned after warm-up: {warmup}), test accuracy "
          f"{m['test_accuracy']:.4f}")
    folder = summary.get("out", str(result.checkpoint.parent))
    print(f"model: {folder}  sha256 {m['sha256']}")
    print(f"use it as  student: {{model: adapted:{folder}}}")
    return 0


def _ratio_flag(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1 (the adapted size as a "
                                         f"fraction of the original, e.g. 0.5), got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import train_runs
    from .evaluation import TestEvaluation
    from .tuning import headroom_line, resolve_recipe

    setting, tuning = resolve_recipe(_load_setting(args), progress=not args.quiet)  # at its tuned rate
    if tuning is not None:
        log.info(headroom_line(tuning))
    summary = train_runs(setting, args.config, args.seeds, eval_test=args.eval_test, out=args.out,
                         progress=not args.quiet, teacher_cache=not args.no_teacher_cache,
                         evaluation=TestEvaluation(setting), log_to=args.log_to)
    if args.json:
        print_json({k: v for k, v in summary.items() if k != "objective_config"})
        return 0
    test = "test_accuracy" in summary
    test_head = f"{'test acc':>10}" if test else ""
    print(f"{'seed':>6} {'val acc':>9}{test_head} {'epochs':>7} {'seconds':>8} {'samples/s':>10}")
    for m in summary["per_seed"]:
        test_col = f" {m['test_accuracy']:>9.4f}" if test else ""
        print(f"{m['seed']:>6} {m['val_accuracy']:>9.4f}{test_col} {m['epochs']:>7} {m['wall_seconds']:>8.1f} "
              f"{m['samples_per_second']:>10.0f}")
    test_mean = f"  test {summary['test_accuracy']:.4f} ± {summary['test_accuracy_std']:.4f}" if test else ""
    print(f"mean   val {summary['val_accuracy']:.4f} ± {summary['val_accuracy_std']:.4f}{test_mean}"
          f"  ({summary['wall_seconds']:.1f} s in all)")
    if test:
        print(f"test   top-5 {summary['top5_accuracy']:.4f}  ECE {summary['ece']:.4f}  NLL {summary['nll']:.4f}"
              f"  (accuracy under degradation: metrics.json, degradation; relkd evaluate)")
    if args.out:
        print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _checkpoints(values: list[str]) -> dict[str, str]:
    """``--checkpoint PATH`` or ``--checkpoint LABEL=PATH`` (repeatable) as {label: path}."""
    out: dict[str, str] = {}
    for i, value in enumerate(values):
        label, sep, path = value.partition("=")
        label, path = (label, path) if sep else (Path(value).stem if len(values) > 1 else "student", value)
        if not label or not path or label in out:
            raise ValueError(f"--checkpoint: expected PATH or LABEL=PATH with each label once, got {value!r}")
        out[label] = path
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_checkpoints, format_degradation_table

    setting = _load_setting(args)
    results = evaluate_checkpoints(setting, _checkpoints(args.checkpoint), out=args.out, split=args.split,
                                   with_teacher=not args.no_teacher, seed=args.seed)
    if args.json:
        print_json(results)
        return 0
    for label, r in results.items():
        agree = f", teacher agreement {r['teacher_agreement']:.4f}" if "teacher_agreement" in r else ""
        print(f"{label}: {args.split} accuracy {r['accuracy']:.4f}, top-{r['top_k']} {r['top5_accuracy']:.4f}, "
              f"ECE {r['ece']:.4f}, NLL {r['nll']:.4f}{agree}")
        print("  per class: " + ", ".join(f"{c} {'-' if a is None else f'{a:.3f}'}"
                                           for c, a in r["per_class_accuracy"].items()))
    print()
    print(format_degradation_table(results))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'evaluation.json'}, evaluation.md and degradation.png/.svg")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .fields import read_yaml_file

    canonical = validate_config(read_yaml_file(args.config), args.config)
    print(yaml_dump(canonical), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="relkd", description="Search the design space of relation-based knowledge distillation."
    )
    parser.add_argument("--version", action="version", version=f"relkd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registry entries (or models) with descriptions and parameters")
    p.add_argument("kind", nargs="?", default="all", choices=["all", *LISTED, "models"])
    p.add_argument("--properties", "-p", action="store_true", help="also show each entry's properties")
    p.add_argument("--markdown", action="store_true",
                   help="Markdown tables of the registries (docs/registries.md is this output)")
    p.add_argument("--pattern", default="*", help="models: a wildcard pattern such as 'resnet*'")
    p.add_argument("--torchvision", action="store_true", help="models: also list every supported tv:<name>")
    p.add_argument("--timm", action="store_true", help="models: also list the timm:<name> models matching --pattern")
    p.set_defaults(func=lambda a: cmd_list_models(a) if a.kind == "models" else cmd_list(a))

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--setting", required=True, help="a setting or study YAML file (e.g. studies/fmnist_quick.yaml)")
        p.add_argument("--device", type=device_flag,
                       help="override the setting's device (auto, cpu, cuda, cuda:1, mps)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("teacher", help="teacher commands")
    teacher_sub = p.add_subparsers(dest="teacher_command", required=True)
    p = teacher_sub.add_parser("train", help="train the setting's teacher, or load it from the cache")
    run_options(p)
    p.add_argument("--force", action="store_true", help="train again even if a cached checkpoint exists")
    checkpoint_every_option(p)
    p.set_defaults(func=cmd_teacher_train)

    p = sub.add_parser("pretrain", help="train the setting's student with CE only as a source checkpoint for "
                                        "transfer learning (student.init), or load it from the cache")
    run_options(p)
    p.add_argument("--out", type=out_file,
                   help="also copy the checkpoint here, with its metadata (and sha256) beside it as .json")
    p.add_argument("--epochs", type=integer("--epochs"), help="override the budget's epochs")
    p.add_argument("--force", action="store_true", help="train again even if a cached checkpoint exists")
    checkpoint_every_option(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("adapt", help="prune the setting's pretrained student (student.init) to the target task: "
                                     "filters removed by activation statistics, fine-tuned in turns (relkd.adapt)")
    run_options(p)
    p.add_argument("--target-ratio", type=_ratio_flag, help="the adapted size as a fraction of the original "
                                                            "(default: student.adapt.ratio)")
    p.add_argument("--criterion", choices=("activation", "l1"), help="activation: the target-aware method "
                                                                    "(default); l1: uniform L1-norm pruning")
    p.add_argument("--measure", choices=("params", "macs"), help="what the ratio counts (default: params)")
    p.add_argument("--out", type=out_folder, help="also copy the adapted model into this folder (model.pt, "
                                                  "meta.json); name it student.model: adapted:<folder>")
    p.add_argument("--force", action="store_true", help="adapt again even if a cached model exists")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("train", help="train the setting's student with an objective (config file or preset)")
    run_options(p)
    p.add_argument("--config", required=True, help="an objective config file or a preset name (relkd list presets)")
    p.add_argument("--seeds", type=seed_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--epochs", type=integer("--epochs"), help="override the budget's epochs")
    p.add_argument("--eval-test", action="store_true", help="also evaluate on the test split (final evaluation)")
    p.add_argument("--out", type=out_folder, help="write metrics.json, objective.yaml and student weights here")
    p.add_argument("--no-teacher-cache", action="store_true", help="run the teacher live in every step")
    log_to_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate student checkpoints beyond accuracy: top-5, calibration (ECE), "
                                        "NLL, per-class accuracy, teacher agreement, accuracy under degradation")
    run_options(p)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a student checkpoint (relkd train --out DIR writes DIR/student_seed0.pt); repeat as "
                        "LABEL=PATH to compare several (e.g. none=..., kd=..., best=...)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="the split to evaluate (default test)")
    p.add_argument("--seed", type=integer("--seed", 0, MAX_SEED), default=0,
                   help="seed of the degradations (the same for every checkpoint)")
    p.add_argument("--no-teacher", action="store_true", help="skip agreement with the setting's teacher")
    p.add_argument("--out", type=out_folder, help="write evaluation.json, evaluation.md and degradation.png/.svg here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("show-config", help="print a preset's objective config as YAML (for given models: the layers "
                                          "the multi-layer presets read)")
    p.add_argument("preset", help=f"one of {', '.join(PRESETS.list())}")
    p.add_argument("--setting", help="a setting or study file: the preset for its student and teacher")
    p.add_argument("--student", help="a student model (with --teacher): the preset for these two models")
    p.add_argument("--teacher", help="a teacher model (with --student)")
    p.set_defaults(func=cmd_show_config)

    p = sub.add_parser("validate", help="validate an objective config file and print its canonical form")
    p.add_argument("config", help="a YAML objective config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("check", help="build an objective (config file or preset) and evaluate it on random features")
    p.add_argument("config", help="a YAML objective config or a preset name")
    p.add_argument("--batch-size", type=integer("--batch-size", 2, 4096), default=64,
                   help="samples per random batch (2 to 4096: relations need two samples)")
    p.add_argument("--seed", type=integer("--seed", 0, MAX_SEED), default=0)
    p.add_argument("--json", action="store_true", help="print the parts as JSON")
    p.set_defaults(func=cmd_check)

    from .cli_compare import add_compare_command
    from .cli_tune import add_tune_command
    from .cli_study import add_study_commands

    add_study_commands(sub)
    add_compare_command(sub)
    add_tune_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    # Each line starts with its local date and time: a study's log spans hours, its workers' several processes.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt=LOG_DATEFMT)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            FloatingPointError) as err:  # the user's input: a file, a value, a path
        print(f"relkd: error: {_redacted(_describe_input(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relkd: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _environment_error(err):
            raise  # a bug in relkd: the traceback is what a report needs
        log.debug("the failure in full", exc_info=True)
        print(f"relkd: error: {_redacted(_describe(err))} (run with -vv for the traceback)", file=sys.stderr)
        return 1


def _environment_error(err: BaseException) -> bool:
    """A failure of the machine or the storage (disk, permissions, database, connection),
    not of relkd: reported in one line instead of a traceback."""
    return isinstance(err, OSError) or type(err).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "sqlite3") \
        or type(err).__module__ == "optuna.exceptions"


def _path_error(err: BaseException) -> str | None:
    """``PATH: reason`` for an error about a path (``None`` for any other)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return None


def _describe_input(err: BaseException) -> str:
    """An error in the user's input in one line; a path error says the path first."""
    return _path_error(err) or str(err)


def _describe(err: BaseException) -> str:
    """The first line of an error and of its cause (Optuna's storage errors wrap the database's)."""
    def first_line(e: BaseException) -> str:
        if _path_error(e):
            return f"{type(e).__name__}: {_path_error(e)}"
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")

    cause = err.__cause__ or err.__context__
    return first_line(err) + (f" (caused by {first_line(cause)})" if cause is not None else "")


def _redacted(text: str) -> str:
    from .study.storage import redact

    return redact(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
