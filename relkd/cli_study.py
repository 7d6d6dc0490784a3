"""``relkd study ...``: thin commands over :mod:`relkd.study`."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from .cli_args import (device_flag, integer, log_to_option, out_file, out_folder, population_flag, positive_float,
                       print_json, seed_count_or_list, shows_flags, storage_flag)
from .fields import yaml_dump
from .text import percent

log = logging.getLogger("relkd")

def _optuna_logging(args: argparse.Namespace) -> None:
    """Optuna logs every trial at INFO and a failed trial's traceback at WARNING; relkd shows
    a progress bar and one line per failed trial instead, unless -v."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if getattr(args, "verbose", 0) else optuna.logging.ERROR)


def _print_summary(result, study_file: str, export_path: Path | None, plot_dir: Path | None) -> None:
    from .results.pareto import format_front, is_multi_objective, objective_names, pareto_front
    from .study import tool_storage
    from .results.ranking import compositions, verdict_line
    from .tuning import headroom_line

    study = result.study
    counts = result.counts
    print(f"\nstudy {study.study_name} ({tool_storage(result.storage)}): stopped because {result.stopped_because}; "
          f"{result.trials_run} trials run now in {result.seconds:.0f} s"
          + (f", {result.population} at a time" if result.population > 1 else ""))
    print("trials: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if is_multi_objective(study):
        print(f"\nPareto front ({', '.join(objective_names(study))}):")
        print(format_front(pareto_front(study)), end="")
        print(f"export one: relkd study export --study-name {study.study_name} --max-params N (or --max-macs N, "
              f"or --trial N) --out best.yaml")
        if plot_dir is not None:
            print(f"plots: {plot_dir}")
        _print_dashboard(study, result.storage)
        return
    if result.tuning is not None:
        print(f"\n{headroom_line(result.tuning)}")
    ranked = compositions(study)
    anchors = [c for c in ranked if c.anchor is not None]
    tuned = [c for c in ranked if c.tuned is not None]
    search = [c for c in ranked if not c.known]
    if anchors:
        print("\nanchors (validation accuracy; mean ± std over seeds where re-run):")
        for c in anchors:
            print(f"  {c.anchor:<10} {c.spread()}")
    if tuned:
        print(f"best tuned anchor: {tuned[0].label}, {tuned[0].spread()} ({len(tuned)} tuned-anchor trials)")
    if search:
        print(f"best searched composition: {search[0].label}, {search[0].spread()}")
    if not ranked:
        print("no completed trial yet")
        return
    best = ranked[0]
    print(f"\nbest composition: {best.label}, validation accuracy {best.spread()}")
    print(yaml_dump(best.record.config), end="")
    print(f"\nverdict: {verdict_line(result.verdict)}")
    if export_path is not None:
        print(f"exported config: {export_path}\n  retrain it: relkd train --setting {study_file} --config {export_path}"
              f"\n  confirm the winners on the test split: relkd study confirm --study-name {study.study_name}")
    if plot_dir is not None:
        print(f"plots: {plot_dir}")
    _print_dashboard(study, result.storage)


def _print_dashboard(study, url: str) -> None:
    """The command line that opens the study in optuna-dashboard, with its artifact store."""
    from .study.artifacts import dashboard_command, study_artifacts

    import importlib.util

    missing = importlib.util.find_spec("optuna_dashboard") is None
    print(f"watch it in Optuna's tools: {dashboard_command(study, url)}"
          + ("  (pip install 'relkd[dashboard]' first)" if missing else ""))
    artifacts = study_artifacts(study)
    if artifacts is not None and artifacts.dashboard_config():
        print("  dashboard.toml:\n" + "".join(f"    {line}\n" for line in artifacts.dashboard_config().splitlines()),
              end="")


@shows_flags
def cmd_study_run(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .study import load_study_spec, run_study
    from .study.trial import preempt_on_sigterm

    spec = load_study_spec(args.study)
    if args.study_name:
        spec = spec.renamed(args.study_name)
    if args.artifacts is not None:
        from .study.artifacts import NONE, Artifacts

        spec = spec.with_artifacts(args.artifacts)
        if spec.artifacts != NONE:
            Artifacts(spec.artifacts, "--artifacts").store  # noqa: B018 - a store that cannot open names the flag
    if args.command_name == "worker" and not (args.storage or os.environ.get("OPTUNA_STORAGE") or spec.storage):
        raise ValueError("study worker: give the shared storage with --storage URL (or OPTUNA_STORAGE, or "
                         "optuna.storage in the study file); workers on one SQLite file must share its disk")
    preempt_on_sigterm()
    result = run_study(spec, storage=args.storage, n_trials=args.n_trials, timeout=args.timeout,
                       progress=not args.quiet, enqueue_missing_anchors=args.command_name == "run",
                       population=args.population, log_to=args.log_to)
    if result.error:
        log.error("study %s stopped: %s", spec.study_name, result.error)
    if args.command_name == "run":
        from .analysis import write_outputs

        result = write_outputs(result)
    if args.command_name == "worker":
        print(f"worker done: {result.trials_run} trials run; stopped because {result.stopped_because}")
        return 1 if result.error else 0
    export_path = result.best_config
    plot_dir = result.plot_dir
    if args.json:
        print_json({"stopped_because": result.stopped_because, "counts": result.counts,
                    "population": result.population,
                    "verdict": result.verdict,
                    "export": str(export_path) if export_path else None,
                    "plots": str(plot_dir) if plot_dir else None})
    else:
        _print_summary(result, args.study, export_path, plot_dir)
    return 1 if result.error else 0


@shows_flags
def cmd_study_status(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .results.pareto import format_front
    from .study import load_relkd_study, study_status, tool_storage

    study, url = load_relkd_study(args.study_name, args.storage)
    status = study_status(study)
    if args.json:
        print_json(status)
        return 0
    counts = status["counts"]
    target = status["n_trials"]
    print(f"study {status['study']} in {tool_storage(url)}")
    print(f"finished trials: {status['finished']}" + (f" of {target}" if target else ""))
    print("by state: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if status["mean_trial_seconds"] is not None:
        eta = status["eta_seconds"]
        eta_text = "unknown (no n_trials)" if eta is None else f"{eta / 60:.1f} min"
        print(f"mean trial: {status['mean_trial_seconds']:.1f} s; ETA {eta_text}")
    if status["recipe"]:
        print(status["recipe"]["line"])
    if status["anchors"]:
        anchors = sorted(status["anchors"].items(), key=lambda kv: -kv[1])
        print("anchors: " + ", ".join(f"{k} {percent(v, missing='-', unit='%')}" for k, v in anchors))
    if "pareto" in status:
        print(f"Pareto front ({', '.join(status['objectives'])}; accuracy maximised, size minimised):")
        print(format_front(status["pareto"]), end="")
    best = status["best"]
    if best:
        print(f"best: {best['label']}, validation accuracy {percent(best['value'], missing='-', unit='%')}"
              + (f" ± {percent(best['std'], missing='-', unit='%')} over {len(best['seeds'])} seeds"
                 if best["std"] is not None else ""))
        print(yaml_dump(best["objective_config"]), end="")
    print(f"verdict: {status['verdict_line']}")
    return 0


@shows_flags
def cmd_study_export(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .study import export_trials, load_relkd_study

    if (args.max_params is not None or args.max_macs is not None) and (args.trial is not None
                                                                       or args.top_k is not None):
        raise ValueError("--max-params and --max-macs choose the trial by size: give them without --trial and "
                         "--top-k")
    study, url = load_relkd_study(args.study_name, args.storage, artifacts=args.artifacts)
    for path in export_trials(study, url, args.out, trial=args.trial, top_k=args.top_k,
                              max_params=args.max_params, max_macs=args.max_macs):
        print(path)
    return 0


@shows_flags
def cmd_study_confirm(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .study import confirm_study, format_table, load_relkd_study
    from .study.confirm_budgets import confirm_budgets, format_budgets
    from .study.trial import preempt_on_sigterm

    budgets = args.full_train or (args.epochs is not None and len(args.epochs) > 1)
    if budgets and args.top_k is not None:
        raise ValueError("--top-k: with several --epochs or --full-train, confirm retrains the study's winner and "
                         "its best known method (and none and kd), not the top k; drop --top-k")
    study, _ = load_relkd_study(args.study_name, args.storage)
    preempt_on_sigterm()  # SIGTERM puts the running run back in the queue at once, for the other processes
    if budgets:
        table = confirm_budgets(study, epochs=args.epochs, seeds=args.seeds, full_train=args.full_train,
                                out_dir=args.out, device=args.device, progress=not args.quiet, log_to=args.log_to,
                                storage=args.queue_storage)
    else:
        table = confirm_study(study, top_k=3 if args.top_k is None else args.top_k, seeds=args.seeds,
                              epochs=args.epochs and args.epochs[0], out_dir=args.out, device=args.device,
                              progress=not args.quiet, log_to=args.log_to, storage=args.queue_storage)
    if args.json:
        print_json(table)
    else:
        print((format_budgets if budgets else format_table)(table), end="")
    return 0


@shows_flags
def cmd_study_plot(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .analysis.plots import write_study_plots
    from .study import load_relkd_study

    study, _ = load_relkd_study(args.study_name, args.storage, artifacts=args.artifacts)
    paths = write_study_plots(study, args.out, evaluator=args.evaluator)
    for path in paths:
        print(path)
    return 0 if paths else 1


@shows_flags
def cmd_study_importance(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .analysis.importance import study_importance
    from .study import load_relkd_study

    study, _ = load_relkd_study(args.study_name, args.storage)
    result = study_importance(study, args.evaluator)
    if args.json:
        print_json(result)
        return 0
    print(f"importance ({result['evaluator']}, {result['trials_used']} searched trials, {result['pruned_used']} "
          f"of them pruned and counted at the rung they reached)")
    for group, value in sorted(result["groups"].items(), key=lambda kv: -kv[1]):
        print(f"  {group:<18} {value:.3f}")
    print("best value of each choice (validation accuracy, trials):")
    for choice, values in result["best_per_choice"].items():
        if values:
            name, stats = next(iter(values.items()))
            print(f"  {choice:<14} {name:<12} {percent(stats['best'], missing='-', unit='%')} (n={stats['count']})")
    return 0


@shows_flags
def cmd_study_report(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .analysis.report import write_report
    from .study import load_relkd_study

    study, url = load_relkd_study(args.study_name, args.storage, artifacts=args.artifacts)
    print(write_report(study, url, args.out, top_k=args.top_k, evaluator=args.evaluator))
    return 0


@shows_flags
def cmd_study_artifacts(args: argparse.Namespace) -> int:
    _optuna_logging(args)
    from .study import load_relkd_study
    from .study.artifacts import download_artifacts, list_artifacts, study_artifacts

    if args.file and not args.download:
        raise ValueError("--file: picks files to download; give --download FOLDER too")
    study, url = load_relkd_study(args.study_name, args.storage, artifacts=args.artifacts)
    store = study_artifacts(study)
    rows = list_artifacts(study)
    paths = download_artifacts(study, args.download, args.file) if args.download else []
    if args.json:
        print_json({"store": store.location if store else None, "artifacts": rows,
                    "downloaded": [str(p) for p in paths]})
        return 0
    print(f"study {study.study_name}: artifact store {store.location if store else 'none'}; {len(rows)} artifacts")
    for r in rows:
        print(f"  {'study' if r['trial'] is None else 'trial ' + str(r['trial']):<10} {r['filename']:<44} "
              f"{r['artifact_id']}")
    for path in paths:
        print(f"downloaded {path}")
    _print_dashboard(study, url)
    return 0


@shows_flags
def cmd_study_validate(args: argparse.Namespace) -> int:
    from .study import load_study_spec

    spec = load_study_spec(args.study)
    print(yaml_dump(spec.document), end="")
    combos = spec.space.valid_combinations()
    print(f"# {len(combos)} valid affinity x normalisation x loss combinations in the space", flush=True)
    return 0


def add_study_commands(sub: Any) -> None:
    """Add ``relkd study <command>`` to the top-level parser's subcommands."""
    p = sub.add_parser("study", help="Optuna studies: run, worker, status, export, confirm, ablate, plot, "
                                     "importance, report, artifacts, validate")
    study_sub = p.add_subparsers(dest="study_command", required=True)

    def storage_option(q: argparse.ArgumentParser) -> None:
        q.add_argument("--storage", type=storage_flag,
                       help="Optuna storage URL (default: OPTUNA_STORAGE, the study file, "
                            "then sqlite:///runs/<study>/optuna.db)")

    def artifacts_option(q: argparse.ArgumentParser) -> None:
        def location(text: str) -> str:
            from .study.artifacts import artifacts_location

            try:
                return artifacts_location(text, "--artifacts")
            except ValueError as err:
                raise argparse.ArgumentTypeError(str(err)) from None

        q.add_argument("--artifacts", type=location, metavar="FOLDER|s3://BUCKET|none",
                       help="the study's artifact store, where best.yaml, the plots and the report are uploaded for "
                            "optuna-dashboard (default: optuna.artifacts of the study file, then the folder "
                            "artifacts beside an SQLite or journal storage)")

    for name, help_text in (("run", "create or resume a study and run trials"),
                            ("worker", "join a study on a shared storage and run trials")):
        q = study_sub.add_parser(name, help=help_text)
        q.add_argument("study", help="a study file, e.g. studies/fmnist_quick.yaml")
        storage_option(q)
        q.add_argument("--study-name", help="override the study's name")
        artifacts_option(q)
        q.add_argument("--n-trials", type=integer("--n-trials"),
                       help="finished trials of the whole study, over all workers")
        q.add_argument("--timeout", type=positive_float("--timeout"),
                       help="stop starting trials after this many seconds")
        q.add_argument("--population", type=population_flag,
                       help="trials this process trains together: a number, or auto (measured best for this "
                            "device); default: optuna.population of the study file (auto)")
        log_to_option(q)
        q.add_argument("--quiet", action="store_true", help="no progress bars")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
        q.set_defaults(func=cmd_study_run, command_name=name)

    q = study_sub.add_parser("status", help="trials by state, best value and composition, ETA")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_study_status)

    q = study_sub.add_parser("export", help="write the best (or a chosen) composition as an objective config; on a "
                                            "multi-objective study choose one with --max-params/--max-macs or --trial")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    which = q.add_mutually_exclusive_group()
    which.add_argument("--trial", type=integer("--trial", 0), help="export this trial number")
    which.add_argument("--top-k", type=integer("--top-k"), help="export the k best (files *_rank<r>.yaml)")
    q.add_argument("--max-params", type=integer("--max-params"),
                   help="export the most accurate trial whose student has at most this many parameters, with its "
                        "student section in <out stem>.student.yaml (not with --trial / --top-k)")
    q.add_argument("--max-macs", type=integer("--max-macs"),
                   help="the same with multiply-accumulates per input (with or without --max-params)")
    q.add_argument("--out", type=out_file, required=True, help="output YAML file, e.g. best.yaml")
    artifacts_option(q)
    q.set_defaults(func=cmd_study_export)

    q = study_sub.add_parser("confirm", help="retrain the top-k and the anchors with several seeds, on the test split")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    from .cli_args import queue_storage_flag
    from .study.confirm import QUEUE_STORAGE_ENV

    q.add_argument("--queue-storage", type=queue_storage_flag, metavar="URL",
                   help=f"Optuna storage URL of the confirm's run queue (the study <study>.confirm): processes given "
                        f"the same one, on any machine, share the runs and each trains the ones no other has "
                        f"(default: ${QUEUE_STORAGE_ENV}, then sqlite:///<out>/confirm.db; --storage is the "
                        f"study's)")
    q.add_argument("--top-k", type=integer("--top-k"),
                   help="compositions confirmed at one budget (default 3; not with several --epochs or --full-train)")
    q.add_argument("--seeds", type=seed_count_or_list, default=[0, 1, 2],
                   help="a count (3: seeds 0,1,2) or a list 0,4,7")

    def budgets(text: str) -> list[int]:
        from .study.confirm_budgets import parse_budgets

        try:
            return parse_budgets(text)
        except ValueError as err:  # its message opens with "epochs:"
            raise argparse.ArgumentTypeError(f"--{err}") from None

    q.add_argument("--epochs", type=budgets,
                   help="one budget (default: twice the study's), or several, e.g. 3,9,27: then the verdict's winner, "
                        "its best known method, none and kd are retrained at each (confirm_budgets.md)")
    q.add_argument("--full-train", action="store_true",
                   help="train on the full training set, not the study's data.train_subset / train_per_class "
                        "(the winner, the best known method, none and kd, as with several --epochs)")
    q.add_argument("--out", type=out_folder,
                   help="folder for confirm.db / confirm.json / confirm.md / confirm_budgets.md "
                        "(default runs/<study>/confirm)")
    q.add_argument("--device", type=device_flag, help="override the study's device (auto, cpu, cuda, cuda:1, mps)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--json", action="store_true")
    log_to_option(q)
    q.set_defaults(func=cmd_study_confirm)
    from .cli_ablate import add_ablate_command  # relkd study ablate
    add_ablate_command(study_sub)

    def evaluator_option(q: argparse.ArgumentParser) -> None:
        q.add_argument("--evaluator", default="ped_anova", choices=["ped_anova", "fanova", "mdi"],
                       help="importance evaluator (default ped_anova: handles conditional parameters)")

    q = study_sub.add_parser("plot", help="write the study's plots (PNG and SVG)")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    q.add_argument("--out", type=out_folder, required=True, help="output folder")
    evaluator_option(q)
    artifacts_option(q)
    q.set_defaults(func=cmd_study_plot)

    q = study_sub.add_parser("importance", help="importance of each design choice")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    evaluator_option(q)
    q.add_argument("--json", action="store_true", help="print importances, groups and best per choice as JSON")
    q.set_defaults(func=cmd_study_importance)

    q = study_sub.add_parser("report", help="one self-contained HTML page: summary, tables, plots")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    q.add_argument("--out", type=out_file, required=True, help="output HTML file, e.g. report.html")
    q.add_argument("--top-k", type=integer("--top-k"), default=5, help="compositions shown with their YAML")
    evaluator_option(q)
    artifacts_option(q)
    q.set_defaults(func=cmd_study_report)

    q = study_sub.add_parser("artifacts", help="list the files kept with a study for optuna-dashboard (best.yaml, "
                                               "plots, report, study.yaml, setting.json), and download them")
    q.add_argument("--study-name", required=True)
    storage_option(q)
    artifacts_option(q)
    q.add_argument("--download", type=out_folder, metavar="FOLDER",
                   help="download them into this folder (a trial's into FOLDER/trial_<number>), replacing files "
                        "of the same names")
    q.add_argument("--file", action="append", metavar="NAME",
                   help="only this file (repeat for more), e.g. --file best.yaml")
    q.add_argument("--json", action="store_true", help="print the store, the artifacts and the files downloaded "
                                                        "as JSON")
    q.set_defaults(func=cmd_study_artifacts)

    q = study_sub.add_parser("validate", help="check a study file and print its canonical form")
    q.add_argument("study")
    q.set_defaults(func=cmd_study_validate)

