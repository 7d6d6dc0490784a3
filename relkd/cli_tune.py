"""``relkd tune``: a thin command over :mod:`relkd.tuning`."""
from __future__ import annotations

import argparse
from typing import Any

from .cli_args import print_json

__all__ = ["add_tune_command", "cmd_tune"]


def cmd_tune(args: argparse.Namespace) -> int:
    from .adapt import resolve_student
    from .setting import load_setting
    from .setting_tune import default_tune
    from .tuning import headroom_line, tune_recipe

    setting = load_setting(args.setting)
    if setting.tune is None:  # the default tuning: the one a fixed rate is checked against
        setting = setting.replace(tune=default_tune(setting.budget.lr))
    tuning = tune_recipe(resolve_student(setting, progress=not args.quiet), progress=not args.quiet)
    if args.json:
        print_json({**tuning.record(), "headroom": tuning.headroom()})
        return 0
    print(f"validation accuracy against budget.lr ({len(tuning.seeds)} seeds each; mean ± std):")
    print(f"{'lr':>9} {'none (CE alone)':>18} {'kd':>18}")
    for lr in tuning.grid:
        cells = [f"{100 * tuning.mean(c, lr):6.2f}% ± {100 * tuning.std(c, lr):5.2f}" for c in ("none", "kd")]
        mark = "  <- tuned" if lr == tuning.lr else ("  (as written)" if lr == tuning.baseline else "")
        print(f"{lr:>9g} {cells[0]:>18} {cells[1]:>18}{mark}")
    print(headroom_line(tuning))
    return 0


def add_tune_command(sub: Any) -> None:
    """Add ``relkd tune`` to the top-level parser's subcommands."""
    p = sub.add_parser("tune", help="tune the student's learning rate (CE alone and KD, with seeds) and measure "
                                    "the headroom for distillation; cached, and used by studies, train and compare")
    p.add_argument("--setting", required=True, help="a setting or study file (its tune section, else tune: {})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tune)
