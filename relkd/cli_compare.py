"""``relkd compare``: a thin command over :mod:`relkd.study.compare`."""
from __future__ import annotations

import argparse
from typing import Any

from .cli_args import log_to_option, out_folder, print_json, storage_flag

__all__ = ["add_compare_command", "cmd_compare"]


def cmd_compare(args: argparse.Namespace) -> int:
    import optuna

    # Optuna logs every trial at INFO and a failed trial's traceback at WARNING: only with -v
    optuna.logging.set_verbosity(optuna.logging.INFO if getattr(args, "verbose", 0) else optuna.logging.ERROR)
    from .study.compare import format_markdown, load_compare, run_compare
    from .study.trial import preempt_on_sigterm

    spec = load_compare(args.compare)
    preempt_on_sigterm()  # SIGTERM puts the running run back in the queue at once, for the other processes
    table = run_compare(spec, storage=args.storage, out_dir=args.out, progress=not args.quiet, log_to=args.log_to)
    if args.json:
        print_json(table)
    else:
        print(format_markdown(table), end="")
        print("files: " + ", ".join(table["files"]))
    return 0


def add_compare_command(sub: Any) -> None:
    """Add ``relkd compare`` to the top-level parser's subcommands."""
    q = sub.add_parser("compare", help="method comparison: baseline, each preset alone and with KD, N seeds, test")
    q.add_argument("compare", help="a compare file, e.g. studies/compare_fmnist.yaml")
    q.add_argument("--storage", type=storage_flag,
                   help="Optuna storage URL of the compare's run queue (the study <name>, which is all a compare "
                        "stores): processes given the same one share the runs (default: OPTUNA_STORAGE, the "
                        "compare file's compare.storage, then sqlite:///runs/<name>/optuna.db)")
    q.add_argument("--out", type=out_folder,
                   help="folder for compare.csv/.md/.json/.png/.svg (default runs/<name>/compare)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.add_argument("--json", action="store_true")
    log_to_option(q)
    q.set_defaults(func=cmd_compare)
