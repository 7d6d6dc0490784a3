"""``relkd study ablate``: a thin command over :mod:`relkd.study.ablate`."""
from __future__ import annotations

import argparse
from typing import Any

from .cli_args import device_flag, in_flags, integer, out_folder, print_json, seed_count_or_list, storage_flag

__all__ = ["add_ablate_command", "cmd_study_ablate", "seeds_flag"]

def seeds_flag(text: str) -> int | list[int]:
    """``--seeds 3``: three seeds from the study's seed on (a count); ``--seeds 0,4,7``: these seeds."""
    seeds = seed_count_or_list(text)
    return len(seeds) if "," not in text else seeds


def cmd_study_ablate(args: argparse.Namespace) -> int:
    import optuna

    # Optuna logs every trial at INFO and a failed trial's traceback at WARNING: only with -v
    optuna.logging.set_verbosity(optuna.logging.INFO if getattr(args, "verbose", 0) else optuna.logging.ERROR)
    from .study import load_relkd_study
    from .study.ablate import ablate_study, format_ablation
    from .study.trial import preempt_on_sigterm

    try:
        study, _ = load_relkd_study(args.study_name, args.storage)
    except ValueError as err:
        raise in_flags(err, "--study-name")
    preempt_on_sigterm()  # SIGTERM puts the running run back in the queue at once
    try:
        table = ablate_study(study, trial=args.trial, seeds=args.seeds, epochs=args.epochs, out_dir=args.out,
                             device=args.device, progress=not args.quiet)
    except ValueError as err:
        raise in_flags(err)
    if args.json:
        print_json(table)
        return 0
    print(format_ablation(table), end="")
    print(f"files: {', '.join(table['files'])} (and the study's report: relkd study report)")
    return 0


def add_ablate_command(study_sub: Any) -> None:
    """Add ``relkd study ablate`` to the ``relkd study`` subcommands."""
    q = study_sub.add_parser("ablate", help="retrain a composition (default: the best searched one) with each part "
                                            "removed or reset, paired by seed: what each part contributes")
    q.add_argument("--study-name", required=True)
    q.add_argument("--storage", type=storage_flag,
                   help="the study's Optuna storage URL (default: OPTUNA_STORAGE, then "
                        "sqlite:///runs/<study>/optuna.db)")
    q.add_argument("--trial", type=integer("--trial", 0),
                   help="ablate this completed trial (default: the best searched composition by its mean over seeds)")
    q.add_argument("--seeds", type=seeds_flag, default=3,
                   help="at least 2: a count (3: the study's seed + 0, 1, 2; the default) or a list 0,4,7")
    q.add_argument("--epochs", type=integer("--epochs"), help="default: the study's budget")
    q.add_argument("--out", type=out_folder,
                   help="folder for ablate.db / ablation.json / ablation.md (default runs/<study>/ablate)")
    q.add_argument("--device", type=device_flag, help="override the study's device (auto, cpu, cuda, cuda:1, mps)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--json", action="store_true", help="print the table as JSON")
    q.set_defaults(func=cmd_study_ablate)
