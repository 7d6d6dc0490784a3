"""relkd.cli_compare: ``relkd compare``'s flags, and how it prints what the library returns."""
import argparse
import json

from relkd.cli_compare import add_compare_command, cmd_compare
from relkd.study import compare


def test_it_runs_the_compare_file_and_prints_markdown_or_json(monkeypatch, capsys, tmp_path):
    p = argparse.ArgumentParser()
    add_compare_command(p.add_subparsers())
    args = p.parse_args(["compare", "studies/compare_x.yaml", "--out", str(tmp_path / "out"), "--quiet"])
    assert args.func is cmd_compare and args.storage is None and not args.json
    ran = {}
    monkeypatch.setattr(compare, "load_compare", lambda path: f"spec of {path}")
    monkeypatch.setattr(compare, "run_compare",
                        lambda spec, **kw: ran.update(kw, spec=spec) or {"rows": [1], "files": ["a.csv", "a.md"]})
    monkeypatch.setattr(compare, "format_markdown", lambda table: "| method |\n")
    assert cmd_compare(args) == 0
    assert ran["spec"] == "spec of studies/compare_x.yaml" and ran["progress"] is False
    assert str(ran["out_dir"]) == str(tmp_path / "out")
    assert capsys.readouterr().out == "| method |\nfiles: a.csv, a.md\n"
    args.json = True
    assert cmd_compare(args) == 0 and json.loads(capsys.readouterr().out) == {"rows": [1], "files": ["a.csv", "a.md"]}
