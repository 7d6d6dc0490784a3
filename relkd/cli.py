"""The ``relkd`` command. Thin: it parses arguments, calls the library and prints."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from . import __version__
from .config import ConfigError, validate_config, yaml_dump
from .objective import build_objective, probe_objective
from .registry import Registry
from .relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS
from .relation.presets import PRESETS, preset

log = logging.getLogger("relkd")

_LISTS: dict[str, Registry] = {
    "affinities": AFFINITIES,
    "normalisations": NORMALISATIONS,
    "losses": LOSSES,
    "views": VIEWS,
    "presets": PRESETS,
}


def _format_param(p) -> str:
    text = f"{p.name}={p.default!r}"
    if p.search is not None:
        text += f" (search {p.search[0]:g}..{p.search[1]:g}{' log' if p.log else ''})"
    return text


def _format_properties(entry) -> str:
    return ", ".join(f"{k}={'(depends on params)' if callable(v) else v}" for k, v in entry.properties.items())


def cmd_list(args: argparse.Namespace) -> int:
    kinds = list(_LISTS) if args.kind == "all" else [args.kind]
    for kind in kinds:
        registry = _LISTS[kind]
        print(f"{kind} ({len(registry)}):")
        for entry in registry.entries():
            params = ", ".join(_format_param(p) for p in entry.params)
            print(f"  {entry.name:<14} {entry.description}")
            if params:
                print(f"  {'':<14}   params: {params}")
            if args.properties and entry.properties:
                print(f"  {'':<14}   properties: {_format_properties(entry)}")
        print()
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    print(yaml_dump(preset(args.preset)), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    objective = build_objective(args.config)
    print(repr(objective))
    result = probe_objective(objective.to_config(), batch_size=args.batch_size, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\nparts on random features (B={args.batch_size}, student width 64, teacher width 256):")
    for name in objective.part_names:
        print(f"  {name:<12} {result[name]:>12.6g}   weighted {result[name + '.weighted']:>12.6g}")
    print(f"  {'total':<12} {result['total']:>12.6g}   grad norm {result['grad_norm']:.4g}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import read_yaml_file

    canonical = validate_config(read_yaml_file(args.config), args.config)
    print(yaml_dump(canonical), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relkd", description="Search the design space of relation-based knowledge distillation."
    )
    parser.add_argument("--version", action="version", version=f"relkd {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registry entries with descriptions and parameters")
    p.add_argument("kind", nargs="?", default="all", choices=["all", *_LISTS])
    p.add_argument("--properties", "-p", action="store_true", help="also show each entry's properties")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show-config", help="print a preset's objective config as YAML")
    p.add_argument("preset", help=f"one of {', '.join(PRESETS.list())}")
    p.set_defaults(func=cmd_show_config)

    p = sub.add_parser("validate", help="validate an objective config file and print its canonical form")
    p.add_argument("config", help="a YAML objective config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("check", help="build an objective (config file or preset) and evaluate it on random features")
    p.add_argument("config", help="a YAML objective config or a preset name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the parts as JSON")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, ValueError) as err:
        print(f"relkd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relkd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
