import json

import pytest

import relkd
from relkd.cli import main
from relkd.fields import yaml_load


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_registry_with_params(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in relkd.list_affinities() + relkd.list_normalisations() + relkd.list_losses() + relkd.list_presets():
        assert name in out
    assert "gamma=0.4 (search 0.05..2 log)" in out  # rbf_taylor's parameter with its search range
    code, out, _ = run(capsys, "list", "losses", "--properties")
    assert "requires=distribution" in out and "cosine01" not in out


def test_show_config_prints_loadable_yaml(capsys):
    code, out, _ = run(capsys, "show-config", "pkt+kd")
    assert code == 0
    assert relkd.validate_config(yaml_load(out)) == relkd.preset("pkt+kd")


def test_check_evaluates_parts(capsys, tmp_path):
    code, out, _ = run(capsys, "check", "rkd", "--json")
    parts = json.loads(out[out.index("{"):])
    assert code == 0 and parts["total"] > 0 and parts["grad_norm"] > 0
    assert parts["total"] == pytest.approx(parts["ce.weighted"] + parts["rkd_d.weighted"] + parts["rkd_a.weighted"])
    path = relkd.save_config(relkd.preset("cc"), tmp_path / "cc.yaml")
    code, out, _ = run(capsys, "check", str(path))
    assert code == 0 and "cc" in out and "total" in out


def test_bad_input_gives_a_clear_error_not_a_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "show-config", "rdk")
    assert code == 2 and "did you mean 'rkd'?" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("terms:\n  - tap: pool\n    affinity: cosin\n")
    code, _, err = run(capsys, "validate", str(bad))
    assert code == 2 and "terms[0].affinity.name: unknown affinity 'cosin'; did you mean 'cosine'?" in err
    code, _, err = run(capsys, "check", "nothing-here")
    assert code == 2 and "neither a config file nor a preset" in err


@pytest.mark.parametrize("failure", ["storage", "disk", "bug"])
def test_a_failing_machine_or_database_is_one_line_a_bug_a_traceback(monkeypatch, capsys, failure):
    """Failures of the storage or the disk end in one redacted `relkd: error:` line (exit
    status 1; -vv logs the traceback); a bug in relkd keeps its traceback."""
    import errno

    import optuna
    import sqlalchemy.exc

    import relkd.cli_study as cli_study

    def broken(args):
        if failure == "storage":
            try:
                raise sqlalchemy.exc.OperationalError(
                    "UPDATE trials ...", {}, Exception("database is locked; url postgresql://u:s3cr3t@h/db"))
            except sqlalchemy.exc.OperationalError as err:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err
        if failure == "disk":
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/optuna.db")
        raise TypeError("a bug")

    monkeypatch.setattr(cli_study, "cmd_study_status", broken)
    if failure == "bug":
        with pytest.raises(TypeError):
            main(["study", "status", "--study-name", "x"])
        return
    assert main(["study", "status", "--study-name", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("relkd: error: ") and "-vv" in err
    if failure == "storage":
        assert "StorageInternalError" in err and "database is locked" in err
        assert "s3cr3t" not in err and "u:***@h" in err
    else:
        assert "No space left on device" in err and "/runs/x/optuna.db" in err
