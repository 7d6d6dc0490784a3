"""Rebuild tests/data/space_draws_v0.json: what each shipped study file's search space draws.

The file was captured when the search space became a table (relkd.study.space's dimensions) and
``tests/study/test_space.py`` replays it: for each study file it holds the space's ``describe()`` and
``grid()`` (``null`` where a grid cannot enumerate the space) and 30 draws of an Optuna
``RandomSampler(seed=7)`` (each draw's parameters, distributions, config and problems; every
trial told 0.0).

A study file that says ``affinity: all`` (or leaves a registry field at its default ``all``)
draws from whatever the registry holds, and a broken rule's message lists the registry's
alternatives (``use one of the affinities cosine01, euclidean, ...``). So each study's entry also
pins, under ``pinned``, the names the registries a search space reads held when it was captured
(affinity, normalisation, loss, view, feature method); the replay, and this script, run with those
registries holding only the pinned names (``all`` then stands for them). A newly registered
affinity, loss, ... therefore changes nothing here. A study file missing from the golden file is
captured with today's registries (``--add``), and ``--repin`` captures every study afresh with
today's registries (after a deliberate change to a study file, the space or its rules; review
the diff).

    python scripts/regenerate_golden.py            # rewrite the file (its pins kept)
    python scripts/regenerate_golden.py --check    # exit 1 when the file on disk differs
    python scripts/regenerate_golden.py --repin    # pin today's registries (a deliberate change)
    python scripts/regenerate_golden.py --add fmnist_mixed.yaml
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from relkd.features import FEATURES  # noqa: E402
from relkd.fields import ConfigError, read_yaml_file  # noqa: E402
from relkd.relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS  # noqa: E402
from relkd.study import validate_study  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "space_draws_v0.json"
STUDIES = ROOT / "studies"
SEED = 7  # the RandomSampler's seed
DRAWS = 30  # draws per study file
#: The study files of the original capture (used when the golden file does not exist yet).
V0_STUDIES = ("cifar100_resnet32x4_resnet8x4.yaml", "compare_fmnist.yaml", "compare_transfer_fmnist.yaml",
              "factorial_grid.yaml", "fmnist_full.yaml", "fmnist_quick.yaml", "transfer_fmnist.yaml")

#: The registries a search space reads, by kind: their names are ``all`` and the rules' advice.
PINNED_REGISTRIES = {registry.kind: registry for registry in (AFFINITIES, NORMALISATIONS, LOSSES, VIEWS, FEATURES)}


def registry_pins() -> dict[str, list[str]]:
    """What :data:`PINNED_REGISTRIES` hold today: ``{"affinity": ["angle", ...], ...}``."""
    return {kind: registry.list() for kind, registry in PINNED_REGISTRIES.items()}


@contextlib.contextmanager
def pinned_registries(pins: Mapping[str, list[str]]) -> Iterator[None]:
    """Within the block, each pinned registry holds only its pinned names (entries registered
    since are hidden, and restored afterwards). A pinned name that is no longer registered is an
    error: the space then cannot draw what it drew, and the file needs ``--repin``."""
    saved = {}
    try:
        for kind, names in pins.items():
            registry = PINNED_REGISTRIES[kind]
            gone = sorted(set(names) - set(registry.list()))
            if gone:
                raise ValueError(f"{kind} {', '.join(gone)}: registered when {GOLDEN.name} was captured, not now; "
                                 f"run python scripts/regenerate_golden.py --repin and review the diff")
            saved[kind] = registry._entries
            registry._entries = {name: entry for name, entry in saved[kind].items() if name in names}
        yield
    finally:
        for kind, entries in saved.items():
            PINNED_REGISTRIES[kind]._entries = entries


def study_spec(study_file: str) -> Any:
    """The :class:`~relkd.study.StudySpec` of ``studies/<study_file>`` (validated as
    ``relkd study run`` does, without asking for its device): within :func:`pinned_registries`,
    as it was when pinned."""
    path = STUDIES / study_file
    return validate_study(read_yaml_file(path), path)


def replay(study_file: str, pins: Mapping[str, list[str]]) -> dict[str, Any]:
    """What ``studies/<study_file>`` draws with the registries as ``pins`` say."""
    with pinned_registries(pins):
        return capture(study_spec(study_file))


def capture(spec: Any) -> dict[str, Any]:
    """``describe``, ``grid`` and the seeded random draws of a study's search space."""
    try:
        grid = spec.space.grid()
    except ConfigError:
        grid = None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED), direction="maximize")
    draws = []
    for _ in range(DRAWS):
        trial = study.ask()
        config, problems = spec.space.sample(trial)
        draws.append({"params": dict(trial.params),
                      "distributions": {k: optuna.distributions.distribution_to_json(v)
                                        for k, v in trial.distributions.items()},
                      "config": config, "problems": list(problems)})
        study.tell(trial, 0.0)
    return {"describe": spec.space.describe(), "grid": grid, "draws": draws}


def regenerate(existing: Mapping[str, Any] | None = None, *, add: Iterable[str] = (),
               repin: bool = False) -> dict[str, Any]:
    """The golden file's content: one entry per study file of ``existing`` (the file as it is;
    :data:`V0_STUDIES` without one) and of ``add``, each with its pins (those of ``existing``
    unless ``repin``; today's registries for a study it lacks) and what its space draws with them."""
    existing = dict(existing or {})
    names = sorted(set(existing or V0_STUDIES) | set(add))
    out = {}
    for name in names:
        pins = existing.get(name, {}).get("pinned")
        if pins is None or repin:
            pins = registry_pins()
        out[name] = {"pinned": pins, **replay(name, pins)}
    return out


def dumps(golden: Mapping[str, Any]) -> str:
    """The file's text: compact JSON with sorted keys, as first captured."""
    return json.dumps(golden, sort_keys=True, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file on disk differs; write nothing")
    parser.add_argument("--add", nargs="+", default=[], metavar="STUDY",
                        help="also capture these files of studies/ (with today's registries)")
    parser.add_argument("--repin", action="store_true",
                        help="pin every study's 'all' to today's registries (changes the draws when they grew)")
    args = parser.parse_args(argv)
    for name in args.add:
        if not (STUDIES / name).is_file():
            parser.error(f"--add: no study file {STUDIES / name}")
    existing = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else None
    text = dumps(regenerate(existing, add=args.add, repin=args.repin))
    on_disk = GOLDEN.read_text() if GOLDEN.exists() else None
    if args.check:
        if text != on_disk:
            print(f"{GOLDEN.relative_to(ROOT)} differs from what the study files draw; "
                  f"run python scripts/regenerate_golden.py and review the diff", file=sys.stderr)
            return 1
        print(f"{GOLDEN.relative_to(ROOT)} is up to date")
        return 0
    if text != on_disk:
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN.relative_to(ROOT)}")
    else:
        print(f"{GOLDEN.relative_to(ROOT)} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
