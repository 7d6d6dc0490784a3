"""relkd.cli_ablate: ``relkd study ablate``'s flags, and how it prints what the library returns."""
import argparse
import json

import pytest

from relkd import study as study_package
from relkd.cli_ablate import add_ablate_command, cmd_study_ablate, seeds_flag
from relkd.study import ablate


def parser():
    p = argparse.ArgumentParser()
    add_ablate_command(p.add_subparsers())
    return p


def test_seeds_is_a_count_or_a_list():
    assert seeds_flag("3") == 3 and seeds_flag("0,4,7") == [0, 4, 7]
    with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
        seeds_flag("many")


def test_the_flags_and_their_defaults():
    args = parser().parse_args(["ablate", "--study-name", "s", "--seeds", "1,2", "--trial", "4"])
    assert (args.study_name, args.seeds, args.trial, args.epochs, args.json) == ("s", [1, 2], 4, None, False)
    assert args.func is cmd_study_ablate and parser().parse_args(["ablate", "--study-name", "s"]).seeds == 3


def test_it_prints_the_table_or_json_and_names_flags_in_errors(monkeypatch, capsys):
    monkeypatch.setattr(study_package, "load_relkd_study", lambda name, storage: (f"study {name}", None))
    asked = {}

    def fake_ablate(study, **kwargs):
        asked.update(kwargs, study=study)
        return {"rows": [], "files": ["ablation.json", "ablation.md"]}

    monkeypatch.setattr(ablate, "ablate_study", fake_ablate)
    monkeypatch.setattr(ablate, "format_ablation", lambda table: "| part | change |\n")
    args = parser().parse_args(["ablate", "--study-name", "s", "--seeds", "2", "--quiet"])
    assert cmd_study_ablate(args) == 0
    assert asked["study"] == "study s" and asked["seeds"] == 2 and asked["progress"] is False
    assert capsys.readouterr().out == ("| part | change |\nfiles: ablation.json, ablation.md (and the study's report: "
                                       "relkd study report)\n")
    args.json = True
    assert cmd_study_ablate(args) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["ablation.json", "ablation.md"]

    def refuse(study, **kwargs):
        raise ValueError("trial: no completed trial 9")

    monkeypatch.setattr(ablate, "ablate_study", refuse)
    with pytest.raises(ValueError, match="--trial: no completed trial 9"):
        cmd_study_ablate(args)
