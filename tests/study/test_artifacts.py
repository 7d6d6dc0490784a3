"""A study's files as Optuna artifacts (issue 28, item 2): best.yaml, the plots, the report and
the study's documents are uploaded to an artifact store linked to the study, listed by Optuna's
own ``get_all_artifact_meta`` and downloaded byte for byte; uploading again replaces, never piles
up; the store is a folder beside the storage by default, elsewhere by the study file, none on a
database server; the dashboard's command line names it and optuna-dashboard serves the files.
And the last part of item 1: every user attribute relkd writes fits what optuna-dashboard shows
(1,024 characters of JSON), the documents kept whole as study system attributes, and a study
written before (documents in user attributes) still exports and reports."""
import copy
import itertools
import json
import shlex
import sqlite3
import sys
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import download_artifact, get_all_artifact_meta

from relkd.analysis import write_outputs
from relkd.analysis.report import write_report
from relkd.cli import main
from relkd.fields import ConfigError
from relkd.results.record import (ARTIFACTS_ATTR, CONFIRM_ATTR, DASHBOARD_ATTR_LIMIT, DOCUMENT_ATTRS, SETTING_ATTR,
                                  STUDY_ATTR, document_summary, set_study_document, study_document, trial_attrs)
from relkd.setting import setting_record
from relkd.study import load_relkd_study, load_study_spec, run_study, validate_study
from relkd.study.artifacts import (Artifacts, attach_artifacts, dashboard_command, list_artifacts, study_artifacts,
                                   upload_study_file, upload_trial_file)
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def tiny_doc(name="art", n_trials=2, **optuna_fields):
    doc = copy.deepcopy(TINY_SETTING)
    doc["name"] = name
    doc["budget"]["epochs"] = 1
    doc["search"] = {"tap": ["pool"], "terms": {"low": 1, "high": 1}}
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": ["kd"], "n_trials": n_trials, **optuna_fields}
    return doc


_downloads = itertools.count()


def stored(study, meta, tmp_path):
    """The bytes of an artifact, downloaded with Optuna's own function (into a new file)."""
    out = tmp_path / "downloads" / f"{next(_downloads)}-{meta.filename}"
    out.parent.mkdir(exist_ok=True)
    download_artifact(artifact_store=study_artifacts(study).store, file_path=str(out), artifact_id=meta.artifact_id)
    return out.read_bytes()


@pytest.mark.slow
def test_a_study_run_uploads_its_files_and_uploading_again_replaces_them(isolated, tmp_path, capsys):
    result = write_outputs(run_study(validate_study(tiny_doc()), progress=False))
    study, folder = result.study, isolated / "runs" / "art"
    assert study_artifacts(study).location == str(folder / "artifacts")  # the default: beside the SQLite file
    metas = {m.filename: m for m in get_all_artifact_meta(study)}
    pngs = sorted(p.name for p in result.plots if p.suffix == ".png")
    assert len(pngs) >= 4 and sorted(metas) == sorted(["best.yaml", "study.yaml", "setting.json", *pngs])
    assert stored(study, metas["best.yaml"], tmp_path) == (folder / "best.yaml").read_bytes()
    for png in pngs:
        assert stored(study, metas[png], tmp_path) == (folder / "plots" / png).read_bytes()
    assert json.loads(stored(study, metas["setting.json"], tmp_path)) == study_document(study, SETTING_ATTR)
    assert metas["study.yaml"].mimetype == "text/plain" and metas["history.png"].mimetype == "image/png"
    report = write_report(study, result.storage, tmp_path / "report.html")
    report_meta = next(m for m in get_all_artifact_meta(study) if m.filename == "report.html")
    assert stored(study, report_meta, tmp_path) == report.read_bytes()

    # again: one more trial, best.yaml and the plots written again; the same artifacts, new content
    again = write_outputs(run_study(validate_study(tiny_doc(n_trials=3)), progress=False))
    (folder / "best.yaml").write_text((folder / "best.yaml").read_text() + "# changed\n")
    upload_study_file(again.study, folder / "best.yaml")
    write_report(again.study, again.storage, tmp_path / "report.html")
    after = {m.filename: m for m in get_all_artifact_meta(again.study)}
    assert len(get_all_artifact_meta(again.study)) == len(metas) + 1  # + report.html, nothing twice
    assert {n: m.artifact_id for n, m in after.items() if n != "report.html"} == \
        {n: m.artifact_id for n, m in metas.items()}
    assert stored(again.study, after["best.yaml"], tmp_path).endswith(b"# changed\n")
    per_trial = [m.filename for t in again.study.trials for m in get_all_artifact_meta(t, storage=again.study._storage)]
    assert per_trial and set(per_trial) == {"curves.json"}  # each trained trial's curves (relkd.study.trial)
    assert len(list((folder / "artifacts").iterdir())) == len(after) + len(per_trial)

    # read back through the command line, by another process that only has the storage
    out = tmp_path / "back"
    assert main(["study", "artifacts", "--study-name", "art", "--download", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["store"] == str(folder / "artifacts") and len(listed["artifacts"]) == len(after) + len(per_trial)
    assert (out / "best.yaml").read_bytes() == (folder / "best.yaml").read_bytes()
    assert (out / "report.html").read_bytes() == report.read_bytes()
    assert main(["study", "artifacts", "--study-name", "art", "--download", str(out), "--file", "setting.json"]) == 0
    assert capsys.readouterr().out.count("downloaded ") == 1
    assert main(["study", "artifacts", "--study-name", "art", "--download", str(out), "--file", "nope.yaml"]) == 2
    assert "--file: study 'art' has no artifact nope.yaml; it has: best.yaml, " in capsys.readouterr().err


@pytest.mark.slow
def test_the_study_file_puts_the_artifacts_elsewhere_and_the_study_remembers_where(isolated, tmp_path):
    elsewhere = tmp_path / "shared" / "store"
    result = write_outputs(run_study(validate_study(tiny_doc(artifacts=str(elsewhere))), progress=False))
    assert result.study.user_attrs[ARTIFACTS_ATTR] == str(elsewhere)
    assert not (isolated / "runs" / "art" / "artifacts").exists()
    ids = {m.artifact_id for m in get_all_artifact_meta(result.study)}
    ids |= {m.artifact_id for t in result.study.trials  # each trained trial's curves.json
            for m in get_all_artifact_meta(t, storage=result.study._storage)}
    assert "best.yaml" in {m.filename for m in get_all_artifact_meta(result.study)}
    assert {p.name for p in elsewhere.iterdir()} == ids
    study, url = load_relkd_study("art")  # no flag: the study's record says where
    assert study_artifacts(study).location == str(elsewhere)
    assert dashboard_command(study, url) == shlex.join(["optuna-dashboard", url, "--artifact-dir", str(elsewhere)])
    off, _ = load_relkd_study("art", artifacts="none")
    assert study_artifacts(off) is None and upload_study_file(off, isolated / "runs" / "art" / "best.yaml") is None


@pytest.mark.parametrize("value, message", [
    ("gs://bucket", "gs:// is not a store relkd opens"),
    ("s3://bucket/runs", "s3://BUCKET with no folder in it"),
    ("s3://", "s3://BUCKET with no folder in it"),
    ("", "expected a folder, s3://BUCKET or none"),
    (3, "expected a folder, s3://BUCKET or none"),
])
def test_a_wrong_artifacts_field_names_the_field_and_what_is_allowed(value, message):
    with pytest.raises(ConfigError) as err:
        validate_study(tiny_doc(artifacts=value))
    assert any(e.startswith("optuna.artifacts: ") and message in e for e in err.value.errors), err.value.errors


def test_the_artifacts_field_is_kept_in_the_study_document_and_the_flag_overrides_it(tmp_path):
    assert "artifacts" not in validate_study(tiny_doc()).document["optuna"]  # older documents stay the same
    spec = validate_study(tiny_doc(artifacts="s3://bucket/"))
    assert spec.artifacts == "s3://bucket" and spec.document["optuna"]["artifacts"] == "s3://bucket"
    assert validate_study(tiny_doc(artifacts=False)).artifacts == "none"
    flagged = spec.with_artifacts(str(tmp_path))
    assert flagged.artifacts == str(tmp_path) and flagged.document["optuna"]["artifacts"] == str(tmp_path)
    with pytest.raises(ValueError, match=r"^--artifacts: expected a folder, s3://BUCKET or none; ftp:// is not"):
        spec.with_artifacts("ftp://host/x")


def test_a_bad_artifacts_flag_is_one_line_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "export", "--study-name", "x", "--out", str(tmp_path / "b.yaml"), "--artifacts", "s3://b/p"])
    assert exit_.value.code == 2
    assert "--artifacts: expected s3://BUCKET with no folder in it" in capsys.readouterr().err


def test_s3_without_boto3_is_a_one_line_error_naming_pip_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 fails, as where it is not installed
    with pytest.raises(ValueError) as err:
        Artifacts("s3://bucket", "optuna.artifacts").store
    assert str(err.value) == "optuna.artifacts: s3://bucket needs boto3, which is not installed: pip install boto3"
    from relkd.study import open_study

    with pytest.raises(ValueError, match="pip install boto3"):  # before the study is created
        open_study(validate_study(tiny_doc(artifacts="s3://bucket")), f"sqlite:///{tmp_path}/s.db")
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path}/s.db") == []


def test_a_database_server_has_no_store_unless_given_and_says_so(caplog):
    study = optuna.create_study()
    with caplog.at_level("WARNING", logger="relkd.study.artifacts"):
        assert attach_artifacts(study, "postgresql+psycopg://u:secret@host/db", writing=True) is None
    assert len(caplog.records) == 1 and "no artifact store" in caplog.text and "secret" not in caplog.text
    assert attach_artifacts(study, "sqlite:///:memory:") is None
    assert upload_trial_file(study, 0, __file__) is None  # no store: nothing, whatever the trial
    caplog.clear()
    assert attach_artifacts(study, "postgresql+psycopg://u@host/db", "none") is None and not caplog.records


def test_a_trial_file_is_uploaded_to_its_trial_and_replaced_by_name(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    attach_artifacts(study, f"sqlite:///{tmp_path}/s.db")
    curves = tmp_path / "curves.json"
    trial = study.ask()
    curves.write_text('{"epoch": [1]}')
    first = upload_trial_file(study, trial, curves)
    study.tell(trial, 0.5)
    curves.write_text('{"epoch": [1, 2]}')
    assert upload_trial_file(study, 0, curves) == first  # finished: an existing file can be replaced
    frozen = study.trials[0]
    metas = get_all_artifact_meta(frozen, storage=study._storage)
    assert [(m.filename, m.artifact_id) for m in metas] == [("curves.json", first)]
    assert (tmp_path / "artifacts" / first).read_text() == '{"epoch": [1, 2]}'
    assert list_artifacts(study) == [{"trial": 0, "filename": "curves.json", "artifact_id": first,
                                      "mimetype": "application/json"}]
    with pytest.raises(ValueError, match=r"^trial: trial 0 is complete; a new file is uploaded to a trial while"):
        upload_trial_file(study, frozen, curves, "other.json")
    with pytest.raises(ValueError, match=r"^trial: study '.*' has no trial 7"):
        upload_trial_file(study, 7, curves)
    with pytest.raises(ValueError, match=r"^name: expected a file name without folders"):
        upload_study_file(study, curves, "sub/curves.json")


def test_an_artifact_deleted_in_optuna_dashboard_is_left_out(tmp_path):
    """optuna-dashboard deletes an artifact by writing null in place of its metadata."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    attach_artifacts(study, f"sqlite:///{tmp_path}/s.db")
    (tmp_path / "a.txt").write_text("a")
    gone = upload_study_file(study, tmp_path / "a.txt")
    study._storage.set_study_system_attr(study._study_id, f"artifacts:{gone}", json.dumps(None))
    assert list_artifacts(study) == []
    assert upload_study_file(study, tmp_path / "a.txt") != gone  # uploaded anew


@pytest.mark.slow
@pytest.mark.needs("optuna-dashboard")
def test_optuna_dashboard_takes_the_printed_command_line_and_serves_the_files(isolated, tmp_path, monkeypatch):
    import optuna_dashboard._cli as dashboard_cli
    from wsgiref.util import setup_testing_defaults

    result = write_outputs(run_study(validate_study(tiny_doc()), progress=False))
    argv = shlex.split(dashboard_command(result.study, result.storage))
    assert argv[0] == "optuna-dashboard" and "--artifact-dir" in argv
    opened = {}

    class Opened(Exception):
        pass

    def create_app(storage, *, artifact_store=None, **kwargs):
        app = real_create_app(storage, artifact_store=artifact_store)
        opened.update(storage=storage, store=artifact_store, app=app)
        raise Opened

    real_create_app = dashboard_cli.create_app
    monkeypatch.setattr(dashboard_cli, "create_app", create_app)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Opened):
        dashboard_cli.main()  # its own argument parsing, storage and artifact store; stopped before serving
    assert isinstance(opened["store"], optuna.artifacts.FileSystemArtifactStore)
    meta = next(m for m in get_all_artifact_meta(result.study) if m.filename == "best.yaml")
    environ = {"PATH_INFO": f"/artifacts/{result.study._study_id}/{meta.artifact_id}", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(opened["app"](environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"] and body == (isolated / "runs" / "art" / "best.yaml").read_bytes()


# ------------------------------------------------------------------- attributes optuna-dashboard shows whole


def within_limit(attrs, where):
    """Every attribute as Optuna's storages write it (JSON), within what optuna-dashboard shows."""
    for key, value in attrs.items():
        assert len(json.dumps(value)) <= DASHBOARD_ATTR_LIMIT, f"{where} {key}: {len(json.dumps(value))} characters"


@pytest.mark.slow
def test_every_user_attribute_of_a_study_and_its_trials_fits_what_the_dashboard_shows(isolated):
    doc = tiny_doc(n_trials=3)
    doc["tune"] = {"lr": [0.05, 0.2], "seeds": 2, "extend": 0}  # the recipe too
    doc["optuna"]["rerun"] = {"top_k": 1, "anchors": 1, "seeds": 2}
    result = run_study(validate_study(doc), progress=False)
    study = result.study
    within_limit(study.user_attrs, "study")
    for t in study.trials:
        within_limit(t.user_attrs, f"trial {t.number}")
    # the long ones are whole where relkd reads them, and summarised where the dashboard shows them
    assert len(json.dumps(study_document(study, STUDY_ATTR))) > DASHBOARD_ATTR_LIMIT
    assert study_document(study, SETTING_ATTR) == setting_record(validate_study(doc).setting)
    assert study.user_attrs[SETTING_ATTR] == {"dataset": "synthetic", "teacher": "cnn_tiny", "student": "cnn_tiny",
                                              "epochs": 1, "lr": 0.05, "seed": 0,
                                              "full": "study system attribute relkd.setting; artifact setting.json"}
    assert study_document(study, "relkd.recipe")["curves"] and "curves" not in study.user_attrs["relkd.recipe"]


@pytest.mark.parametrize("name", ["fmnist_quick", "fmnist_mixed", "adapt_pareto_fmnist", "imagefolder_pretrained"])
def test_the_shipped_studies_documents_are_summarised_within_the_limit(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_study_spec(ROOT / "studies" / f"{name}.yaml")
    document, setting = spec.document, setting_record(spec.setting)  # as stored: no password to redact
    assert len(json.dumps(document)) > DASHBOARD_ATTR_LIMIT  # why: the study file does not fit
    summary = document_summary(STUDY_ATTR, document)
    assert len(json.dumps(summary)) <= DASHBOARD_ATTR_LIMIT and summary["search"] == document["search"]
    assert summary["study_name"] == name and summary["full"].endswith("artifact study.yaml")
    assert len(json.dumps(document_summary(SETTING_ATTR, setting))) <= DASHBOARD_ATTR_LIMIT


def test_a_document_too_long_even_as_a_summary_gives_up_its_longest_fields():
    rows = [{"label": f"search trial {i}", "test_mean": 0.5 + i / 1000} for i in range(100)]
    summary = document_summary(CONFIRM_ATTR, {"epochs": 6, "seeds": [0, 1, 2], "best_preset": "sp+kd", "rows": rows})
    assert len(json.dumps(summary)) <= DASHBOARD_ATTR_LIMIT
    assert summary["test_mean"] == "..." and summary["epochs"] == 6 and summary["best_preset"] == "sp+kd"
    with pytest.raises(ValueError, match=r"^name: expected one of relkd.study, "):
        set_study_document(optuna.create_study(), "relkd.best", {})
    assert set(DOCUMENT_ATTRS) >= {STUDY_ATTR, SETTING_ATTR, CONFIRM_ATTR}


def test_long_trial_attributes_are_cut_or_rounded_to_fit():
    error = "RuntimeError: " + "x" * 5000
    attrs = trial_attrs(error=error, val_history=[0.123456789] * 100, invalid_combination=["a rule " * 20] * 40)
    within_limit(attrs, "trial")
    assert attrs["error"].startswith("RuntimeError: xxx") and attrs["error"].endswith("[cut: 5014 characters]")
    assert attrs["val_history"] == [0.1235] * 100  # rounded; 100 epochs fit
    assert attrs["invalid_combination"][-1] == "... 40 in all"
    assert trial_attrs(val_history=[0.123456789] * 400)["val_history"] is None  # the intermediate values have it
    short = {"error": "ValueError: x", "val_history": [0.123456789, 0.5]}
    assert trial_attrs(**short) == short  # what fits is kept as it is


def old_study(tmp_path):
    """The study database made before documents moved to system attributes (tests/data/study_v0.sql)."""
    db = tmp_path / "v0.db"
    con = sqlite3.connect(db)
    con.executescript((DATA / "study_v0.sql").read_text())
    con.close()
    return f"sqlite:///{db}"


@pytest.mark.slow
def test_a_study_with_its_documents_in_user_attributes_still_exports_and_reports(isolated, tmp_path, capsys):
    url = old_study(tmp_path)
    study, _ = load_relkd_study("house_v0", url)
    setting = study.user_attrs[SETTING_ATTR]
    assert "relkd.setting" not in study._storage.get_study_system_attrs(study._study_id)  # made before
    assert study_document(study, SETTING_ATTR) == setting and setting["student"]["model"]
    out = tmp_path / "best.yaml"
    assert main(["study", "export", "--study-name", "house_v0", "--storage", url, "--out", str(out)]) == 0
    assert main(["study", "report", "--study-name", "house_v0", "--storage", url, "--out",
                 str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert f"<td>{setting['data']['dataset']}</td>" in page
    # the old study gets artifacts too: beside its database
    capsys.readouterr()
    assert main(["study", "artifacts", "--study-name", "house_v0", "--storage", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["store"] == str(tmp_path / "artifacts")
    assert {a["filename"] for a in listed["artifacts"]} >= {"best.yaml", "report.html"}
    assert (tmp_path / "artifacts" / next(a["artifact_id"] for a in listed["artifacts"]
                                          if a["filename"] == "best.yaml")).read_bytes() == out.read_bytes()
