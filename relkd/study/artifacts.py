"""Files kept with a study where Optuna's tools show them: ``best.yaml``, the plots, the report
and the study's own documents (``study.yaml``, ``setting.json``) are uploaded with
:mod:`optuna.artifacts` to an artifact store linked to the study, and optuna-dashboard shows them
(``optuna-dashboard STORAGE --artifact-dir FOLDER``: :func:`dashboard_command`).

Where the store is, in this order: the ``--artifacts`` flag, the study file's
``optuna.artifacts``, what the study recorded when it was given one (the study attribute
``relkd.artifacts``), and by default the folder ``artifacts`` beside an SQLite or journal file
(``runs/<study>/artifacts`` for the default storage). A storage on a database server
(PostgreSQL, MySQL) or in memory has no store unless one is given (a line in the log says so).
A location is a folder (Optuna's ``FileSystemArtifactStore``; relative to where the command
runs, as a relative storage path is), ``s3://BUCKET`` (``Boto3ArtifactStore``, with boto3:
credentials and ``AWS_ENDPOINT_URL`` for S3-compatible servers as boto3 reads them) or
``none``.

Uploading a file again under the same name (the next ``relkd study run``, a report written
again) writes the new content into the artifact of that name, whose id stays: a study keeps
one artifact per file name, never a pile of copies. Metadata is Optuna's own (study or trial
system attributes ``artifacts:<id>``), so ``optuna.artifacts.get_all_artifact_meta`` and
``download_artifact`` read them too::

    from relkd.study.artifacts import upload_trial_file
    upload_trial_file(trial.study, trial, "curves.json")   # while the trial runs; no store: nothing
"""
from __future__ import annotations

import json
import logging
import shlex
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from ..files import atomic_write
from ..results.record import ARTIFACTS_ATTR, study_system_attrs
from .storage import redact, storage_file, tool_storage

__all__ = ["Artifacts", "NONE", "artifacts_problem", "artifacts_location", "attach_artifacts", "study_artifacts",
           "upload_study_file", "upload_trial_file", "upload_text", "list_artifacts", "download_artifacts",
           "dashboard_command"]

log = logging.getLogger(__name__)

#: The location that turns the store off.
NONE = "none"
#: Where optuna.artifacts keeps an artifact's metadata: system attributes with this prefix
#: (``optuna/artifacts/_upload.py``: ``ARTIFACTS_ATTR_PREFIX``), which optuna-dashboard reads.
_META_PREFIX = "artifacts:"
#: Types Python's ``mimetypes`` does not know, so that a browser shows them.
_MIMETYPES = {".yaml": "text/plain", ".yml": "text/plain", ".log": "text/plain", ".md": "text/markdown"}
_ALLOWED = "a folder, s3://BUCKET or none"


def artifacts_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as an artifact store's location, or ``None``."""
    if value is False:
        return None
    if not isinstance(value, str) or not value.strip():
        return f"expected {_ALLOWED} (false turns it off), got {value!r}"
    if "://" in value:
        scheme, rest = value.split("://", 1)
        if scheme.lower() != "s3":
            return f"expected {_ALLOWED}; {scheme}:// is not a store relkd opens, got {value!r}"
        if not rest.strip("/") or "/" in rest.strip("/"):
            return (f"expected s3://BUCKET with no folder in it (Optuna's Boto3ArtifactStore and optuna-dashboard "
                    f"keep artifacts at the bucket's top level), got {value!r}")
    return None


def artifacts_location(value: Any, field: str = "optuna.artifacts") -> str:
    """``value`` as a location (``none`` for ``false``); a wrong one is a ``ValueError`` naming ``field``."""
    problem = artifacts_problem(value)
    if problem is not None:
        raise ValueError(f"{field}: {problem}")
    if value is False or value.strip().lower() == NONE:
        return NONE
    if "://" in value:
        return "s3://" + value.split("://", 1)[1].strip("/")
    return value


@dataclass(frozen=True)
class Artifacts:
    """An artifact store: its ``location`` (a folder or ``s3://BUCKET``) and the ``field`` that
    gave it (named by errors)."""

    location: str
    field: str = "optuna.artifacts"

    @property
    def bucket(self) -> str | None:
        return self.location[len("s3://"):] if self.location.startswith("s3://") else None

    @cached_property
    def store(self) -> Any:
        """The Optuna artifact store (opened on first use; a missing boto3 is a one-line error)."""
        if self.bucket is None:
            return FileSystemArtifactStore(Path(self.location))
        try:
            import boto3  # noqa: F401 - Optuna's Boto3ArtifactStore needs it
        except ImportError:
            raise ValueError(f"{self.field}: {self.location} needs boto3, which is not installed: "
                             f"pip install boto3") from None
        return Boto3ArtifactStore(self.bucket)

    def dashboard_config(self) -> str | None:
        """The TOML optuna-dashboard reads an S3 store from (``--from-config``); ``None`` for a folder."""
        return None if self.bucket is None else f'[artifact_store.boto3]\nbucket_name = "{self.bucket}"\n'

    def put(self, study: optuna.Study, trial: FrozenTrial | None, path: Path, name: str) -> str | None:
        """Upload ``path`` as ``name`` to the study (or ``trial``); its artifact id, or ``None``
        when the store failed (logged; the local file is there)."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"name: expected a file name without folders, got {name!r}")
        storage = study._storage
        attrs = study_system_attrs(study) if trial is None else storage.get_trial_system_attrs(trial._trial_id)
        existing = next((m["artifact_id"] for m in _metas(attrs) if m["filename"] == name), None)
        if existing is None and trial is not None:
            state = storage.get_trial(trial._trial_id).state
            if state.is_finished():
                raise ValueError(f"trial: trial {trial.number} is {state.name.lower()}; a new file is uploaded "
                                 f"to a trial while it runs (one it has can be replaced)")
        try:
            if self.bucket is None:
                Path(self.location).mkdir(parents=True, exist_ok=True)
            if existing is not None:
                with open(path, "rb") as f:
                    self.store.write(existing, f)
                return existing
            with tempfile.TemporaryDirectory() as folder:
                source = path
                if path.name != name:  # Optuna names the artifact after the file
                    source = Path(folder) / name
                    shutil.copyfile(path, source)
                return upload_artifact(
                    artifact_store=self.store, file_path=str(source), study_or_trial=trial or study,
                    storage=storage, mimetype=_MIMETYPES.get(Path(name).suffix.lower()))
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - a store that fails leaves the file where it was written
            log.warning("could not upload %s to the artifact store %s: %s: %s", path, self.location,
                        type(err).__name__, err)
            return None


_ATTACHED: "weakref.WeakKeyDictionary[optuna.Study, Artifacts | None]" = weakref.WeakKeyDictionary()


def attach_artifacts(study: optuna.Study, url: str, location: str | None = None, *,
                     field: str = "--artifacts", writing: bool = False) -> Artifacts | None:
    """Find the study's artifact store (``location`` given by ``field``; else the study's
    recorded ``relkd.artifacts``; else the folder ``artifacts`` beside a storage file) and link
    it to this ``study`` object for :func:`upload_study_file` and the others; returns it, or
    ``None`` where the study has none. A storage that is no file, with no store given, is one
    line in the log (a warning when ``writing``: the process runs trials; ``none`` silences it)."""
    recorded = study.user_attrs.get(ARTIFACTS_ATTR)
    if location is not None:
        chosen = Artifacts(artifacts_location(location, field), field)
    elif recorded:
        chosen = Artifacts(artifacts_location(recorded, f"the study attribute {ARTIFACTS_ATTR}"),
                           f"the study attribute {ARTIFACTS_ATTR}")
    else:
        file = storage_file(url)
        if file is None and url.startswith("sqlite"):  # SQLite in memory: nothing outlives the process anyway
            chosen = None
        elif file is None:  # a database server (PostgreSQL, MySQL)
            log.log(logging.WARNING if writing else logging.INFO,
                    "study %s: no artifact store (storage %s is not a file); give optuna.artifacts or --artifacts (a "
                    "folder every worker reaches, s3://BUCKET, or none) to keep best.yaml, the plots and the report "
                    "with the study", study.study_name, redact(url))
            chosen = None
        else:
            chosen = Artifacts(str(file.parent / "artifacts"), "the default beside the storage")
    if chosen is not None and chosen.location == NONE:
        chosen = None
    _ATTACHED[study] = chosen
    return chosen


def study_artifacts(study: optuna.Study) -> Artifacts | None:
    """The store :func:`attach_artifacts` linked to this study object (``relkd study run``,
    ``open_study`` and ``load_relkd_study`` link one), else the one the study recorded, else ``None``."""
    if study in _ATTACHED:
        return _ATTACHED[study]
    recorded = study.user_attrs.get(ARTIFACTS_ATTR)
    if not recorded or recorded == NONE:
        return None
    return Artifacts(artifacts_location(recorded, f"the study attribute {ARTIFACTS_ATTR}"),
                     f"the study attribute {ARTIFACTS_ATTR}")


def upload_study_file(study: optuna.Study, path: str | Path, name: str | None = None) -> str | None:
    """Upload the file ``path`` to the study's artifact store as ``name`` (default: its file
    name), replacing the content of the study's artifact of that name; returns its artifact id,
    or ``None`` (and does nothing) where the study has no store."""
    artifacts = study_artifacts(study)
    if artifacts is None:
        return None
    path = Path(path)
    return artifacts.put(study, None, path, name or path.name)


def upload_trial_file(study: optuna.Study, trial: optuna.Trial | FrozenTrial | int, path: str | Path,
                      name: str | None = None) -> str | None:
    """Upload the file ``path`` to ``trial`` of ``study`` (a running ``optuna.Trial``, a
    ``FrozenTrial`` or a trial number) as ``name`` (default: its file name); optuna-dashboard
    shows it on the trial. A new file needs the trial still running; one of the trial's files
    can be replaced later. Returns the artifact id, or ``None`` (and does nothing) where the
    study has no store."""
    artifacts = study_artifacts(study)
    if artifacts is None:
        return None
    if isinstance(trial, int) and not isinstance(trial, bool):
        try:
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial)
        except KeyError:
            raise ValueError(f"trial: study {study.study_name!r} has no trial {trial}") from None
        frozen = study._storage.get_trial(trial_id)
    elif isinstance(trial, optuna.Trial):
        frozen = study._storage.get_trial(trial._trial_id)
    elif isinstance(trial, FrozenTrial):
        frozen = trial
    else:
        raise ValueError(f"trial: expected an optuna.Trial, a FrozenTrial or a trial number, got {trial!r}")
    path = Path(path)
    return artifacts.put(study, frozen, path, name or path.name)


def upload_text(study: optuna.Study, name: str, text: str,
                trial: optuna.Trial | FrozenTrial | int | None = None) -> str | None:
    """``text`` (UTF-8) uploaded as the file ``name``: to the study (:func:`upload_study_file`:
    its ``study.yaml``) or to ``trial`` (:func:`upload_trial_file`: a trial's ``curves.json``)."""
    if study_artifacts(study) is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8")
        return upload_study_file(study, path, name) if trial is None else upload_trial_file(study, trial, path, name)


def _metas(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifact metadata among system attributes, in key order; deleted ones (optuna-dashboard
    writes ``null`` in place of a deleted artifact's) and unreadable ones left out."""
    metas = []
    for key in sorted(k for k in attrs if k.startswith(_META_PREFIX)):
        try:
            meta = json.loads(attrs[key])
        except (TypeError, ValueError):
            continue
        if isinstance(meta, dict) and {"artifact_id", "filename"} <= set(meta):
            metas.append(meta)
    return metas


def list_artifacts(study: optuna.Study) -> list[dict[str, Any]]:
    """Every artifact of the study and of its trials: ``trial`` (``None`` for the study's own),
    ``filename``, ``artifact_id``, ``mimetype``; the study's first, then by trial and file name
    (a name uploaded twice at once: the one relkd keeps up to date first)."""
    rows = [{"trial": None, **m} for m in _metas(study_system_attrs(study))]
    for t in study.get_trials(deepcopy=False):
        rows += [{"trial": t.number, **m} for m in _metas(t.system_attrs)]
    rows.sort(key=lambda r: (r["trial"] is not None, r["trial"] or 0, r["filename"]))  # stable: keeps the first first
    return [{k: r.get(k) for k in ("trial", "filename", "artifact_id", "mimetype")} for r in rows]


def download_artifacts(study: optuna.Study, folder: str | Path, files: list[str] | None = None) -> list[Path]:
    """Download the study's artifacts into ``folder`` (a trial's into ``folder/trial_<number>``),
    replacing files of the same names; only those named ``files`` when given. Returns the paths."""
    artifacts = study_artifacts(study)
    if artifacts is None:
        raise ValueError(f"artifacts: study {study.study_name!r} has no artifact store here; give its location "
                         f"with the artifacts argument ({_ALLOWED})")
    rows = list_artifacts(study)
    if files:
        missing = sorted(set(files) - {r["filename"] for r in rows})
        if missing:
            raise ValueError(f"files: study {study.study_name!r} has no artifact {', '.join(missing)}; it has: "
                             f"{', '.join(sorted({r['filename'] for r in rows})) or 'none'}")
        rows = [r for r in rows if r["filename"] in files]
    paths: list[Path] = []
    seen = set()
    for r in rows:
        target = Path(folder) / (r["filename"] if r["trial"] is None else f"trial_{r['trial']}/{r['filename']}")
        if target in seen:  # a name uploaded twice at once by two processes: the first is the one kept up to date
            log.warning("artifact %s of study %s is there twice; downloaded the first", target.name, study.study_name)
            continue
        seen.add(target)
        try:
            with artifacts.store.open_reader(r["artifact_id"]) as reader:
                atomic_write(target, lambda tmp: tmp.write_bytes(reader.read()))
        except ArtifactNotFound:
            raise ValueError(f"artifacts: {r['filename']} (artifact {r['artifact_id']}) is not in the store "
                             f"{artifacts.location}; give the study's store with the artifacts argument") from None
        paths.append(target)
    return paths


def dashboard_command(study: optuna.Study, url: str) -> str:
    """The command line that opens the study in optuna-dashboard, with its artifact store: the
    folder as ``--artifact-dir``; an S3 store through ``--from-config dashboard.toml``
    (:meth:`Artifacts.dashboard_config` is that file)."""
    argv = ["optuna-dashboard", tool_storage(url)]
    artifacts = study_artifacts(study)
    if artifacts is not None:
        argv += ["--artifact-dir", artifacts.location] if artifacts.bucket is None else \
            ["--from-config", "dashboard.toml"]
    return shlex.join(argv)
