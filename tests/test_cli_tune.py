"""relkd.cli_tune: ``relkd tune`` prints the tuning curve with the tuned and written rates marked."""
import argparse
import json

from relkd import adapt, tuning
from relkd.cli_tune import add_tune_command, cmd_tune
from relkd.setting_tune import default_tune
from relkd.tuning import Tuning
from tiny import TINY_SETTING

RESULT = Tuning(key="k", baseline=0.05, lr=0.1, seeds=[0, 1],
                curves={"none": {"0.05": [0.5, 0.6], "0.1": [0.7, 0.8]}, "kd": {"0.05": [0.5, 0.5], "0.1": [0.9, 0.7]}})


def run(monkeypatch, tmp_path, *flags):
    from relkd.fields import yaml_dump

    setting_file = tmp_path / "setting.yaml"
    setting_file.write_text(yaml_dump(TINY_SETTING))
    seen = {}
    monkeypatch.setattr(adapt, "resolve_student", lambda setting, progress: setting)
    monkeypatch.setattr(tuning, "tune_recipe", lambda setting, progress: seen.update(setting=setting) or RESULT)
    p = argparse.ArgumentParser()
    add_tune_command(p.add_subparsers())
    args = p.parse_args(["tune", "--setting", str(setting_file), "--quiet", *flags])
    assert args.func is cmd_tune and cmd_tune(args) == 0
    return seen["setting"]


def test_a_setting_without_tune_gets_the_default_grid(monkeypatch, tmp_path, capsys):
    setting = run(monkeypatch, tmp_path)
    assert setting.tune == default_tune(TINY_SETTING["budget"]["lr"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "validation accuracy against budget.lr (2 seeds each; mean ± std):"
    assert lines[2].endswith("(as written)") and lines[2].split()[0] == "0.05"
    assert lines[3].endswith("<- tuned") and "75.00% ±  7.07" in lines[3]
    assert lines[4] == tuning.headroom_line(RESULT)


def test_json_has_the_record_and_the_headroom(monkeypatch, tmp_path, capsys):
    run(monkeypatch, tmp_path, "--json")
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.1 and printed["curves"] == RESULT.curves
    assert printed["headroom"] == json.loads(json.dumps(RESULT.headroom()))
