"""Study files: a setting plus ``search`` (the space) and ``optuna`` (how to search it).

::

    # ... a setting: name, seed, device, data, teacher, student, budget ...
    search:                      # see relkd.study.space; omitted fields take the defaults
      terms: {low: 0, high: 2}
    optuna:
      study_name: null           # default: the setting's name
      storage: null              # default: sqlite:///runs/<study>/optuna.db
      artifacts: null            # where best.yaml, plots and the report are kept for optuna-dashboard
                                 # (relkd.study.artifacts): a folder, s3://BUCKET or none; default: the
                                 # folder artifacts beside an SQLite or journal file, none on a server
      sampler: tpe               # tpe | random | gp | grid | bruteforce | nsga2 (two objectives), or {name: tpe, ...}
      pruner: median             # median | hyperband | successive_halving | none, or {name: ..., ...};
                                 # steps are epochs trained; median prunes from half the budget on
      seed: null                 # default: the setting's seed
      n_trials: null             # finished trials of the whole study over all workers (null: until
                                 # the timeout, the end of the grid, or Ctrl-C)
      timeout: null              # seconds per `relkd study run` / `worker` process, teacher training included
      anchors: default           # the known methods enqueued first: default | [] | [none, kd, sp+kd, ...]
      heartbeat_interval: 60     # seconds; RDB storages only; 0 turns heartbeats off
      ladder: null               # a fidelity ladder instead of the pruner (relkd.study.ladder):
                                 # {rungs: [1], reduction: 3, min_trials: 3, compare: searched}
      refine: null               # search around the best anchors too (relkd.study.refine):
                                 # {share: 0.5, anchors: 2, weight_decades: 1, extra_term: true}
      rerun: null                # re-run the leaders with more seeds at the end (relkd.study.seeds):
                                 # {top_k: 2, anchors: 1, seeds: 3}
      tune_anchors: null         # tune kd's and the best anchors' hyperparameters too (relkd.study.tuned_anchors):
                                 # {anchors: 2, trials: 4, weight_decades: 1.0}
      population: auto           # trials a worker trains together (relkd.study.population): a number,
                                 # or auto: the size measured best for this device (relkd.engine.calibrate)
      objectives: [val_accuracy] # or [val_accuracy, params | macs] with search.ratio: accuracy against
                                 # size, a multi-objective study (relkd.study.sizes)

:func:`load_study_spec` reads and validates a study file; every error names its field.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import optuna

from ..fields import ConfigError, FieldChecker, join_path, read_yaml_file
from ..registry import unknown_name_message
from ..presets import PRESETS
from ..setting import Setting, require_device_here, setting_or_errors
from .ladder import Ladder, validate_ladder
from .refine import Refinement, validate_refine
from .artifacts import artifacts_location, artifacts_problem
from .seeds import Rerun, validate_rerun
from .sizes import SizeSearch, validate_sizes
from .space import SearchSpace, validate_search
from .tuned_anchors import AnchorTuning, validate_tune_anchors

__all__ = ["StudySpec", "load_study_spec", "validate_study", "DEFAULT_ANCHORS", "SAMPLERS", "PRUNERS",
           "common_taps", "population_or_error", "MAX_POPULATION",
           "LABELLED_SINGLE_RUNS"]

DEFAULT_ANCHORS = ("none", "kd", "sp", "rkd", "pkt", "cc", "sp+kd", "rkd+kd", "pkt+kd", "cc+kd")

SAMPLERS: dict[str, type] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,  # the grid comes from the search space (SearchSpace.grid)
    "bruteforce": optuna.samplers.BruteForceSampler,  # every combination of the space's choices once
    "gp": optuna.samplers.GPSampler,  # Gaussian process; models the parameters every trial shares
    "nsga2": optuna.samplers.NSGAIISampler,  # NSGA-II, for multi-objective studies (relkd.study.sizes)
}
# relkd's TPE defaults: the space is conditional (term1.* exists only with two terms), and
# several workers share one study.
TPE_DEFAULTS = {"multivariate": True, "group": True, "constant_liar": True}

PRUNERS: dict[str, type] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "none": optuna.pruners.NopPruner,
}
MEDIAN_DEFAULTS = {"n_startup_trials": 5}

_OPTUNA_FIELDS = ("study_name", "storage", "artifacts", "sampler", "pruner", "seed", "n_trials", "timeout",
                  "anchors", "heartbeat_interval", "ladder", "refine", "rerun", "tune_anchors", "population",
                  "objectives")
#: The largest population a study may ask for.
MAX_POPULATION = 256


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    setting: Setting
    space: SearchSpace
    study_name: str
    storage: str | None = None
    sampler: tuple[str, dict[str, Any]] = ("tpe", {})
    pruner: tuple[str, dict[str, Any]] = ("median", {})
    seed: int = 0
    n_trials: int | None = None
    timeout: float | None = None
    anchors: tuple[str, ...] = DEFAULT_ANCHORS
    heartbeat_interval: int = 60
    ladder: Ladder | None = None  # replaces the pruner
    refine: Refinement | None = None
    rerun: Rerun | None = None
    tune_anchors: AnchorTuning | None = None  # the known methods' hyperparameters tuned (relkd.study.tuned_anchors)
    population: int | str = "auto"  # trials a worker trains together, or "auto" (measured per device)
    size: SizeSearch | None = None  # accuracy against size: a multi-objective study (relkd.study.sizes)
    artifacts: str | None = None  # the artifact store: a folder, s3://BUCKET or none; None: the default
    source: str | None = None
    document: dict[str, Any] = field(default_factory=dict)  # the canonical study file

    @property
    def multi_objective(self) -> bool:
        return self.size is not None

    def renamed(self, study_name: str) -> StudySpec:
        """The same study under another name (``--study-name``)."""
        if not isinstance(study_name, str) or not study_name or "/" in study_name or study_name in (".", ".."):
            raise ValueError(f"study_name: expected a name without '/', got {study_name!r}")
        document = copy.deepcopy(self.document)
        document["optuna"]["study_name"] = study_name
        return dataclasses.replace(self, study_name=study_name, document=document)

    def with_artifacts(self, location: str, field: str = "--artifacts") -> StudySpec:
        """The same study with its artifacts kept at ``location`` (``--artifacts``:
        :mod:`relkd.study.artifacts`); a wrong location is a ``ValueError`` naming ``field``."""
        location = artifacts_location(location, field)
        document = copy.deepcopy(self.document)
        document["optuna"]["artifacts"] = location
        return dataclasses.replace(self, artifacts=location, document=document)

    def make_sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        """The study file's sampler, seeded with its seed, or with ``seed`` when given (a
        process joining a study that exists: :func:`relkd.study.opening.joining_seed`)."""
        name, params = self.sampler
        kwargs = dict(TPE_DEFAULTS) if name == "tpe" else {}
        kwargs.update(params)
        kwargs.setdefault("seed", self.seed)
        if seed is not None:
            kwargs["seed"] = seed
        if name == "grid":
            kwargs["search_space"] = self.space.grid()
        with warnings.catch_warnings():  # TPE's multivariate/group options are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SAMPLERS[name](**kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.ladder is not None:
            return self.ladder.pruner()
        name, params = self.pruner
        kwargs = dict(MEDIAN_DEFAULTS) if name == "median" else {}
        if name == "median":
            # Steps are epochs trained (1, 2, ...) and pruning starts at step n_warmup_steps:
            # by default at half the budget (rounded up), since first-epoch accuracy ranks KD
            # runs badly. With a 1-epoch budget the pruner never stops a trial early.
            kwargs["n_warmup_steps"] = math.ceil(self.setting.budget.epochs / 2)
        if name == "hyperband":
            kwargs["max_resource"] = self.setting.budget.epochs
        kwargs.update(params)
        return PRUNERS[name](**kwargs)


def common_taps(setting: Setting) -> tuple[str, ...]:
    """The tap names both the student and the teacher have, in the student's order."""
    from ..models import create_model

    student = create_model(setting.student.model, **setting.student.params).tap_names
    teacher = set(create_model(setting.teacher.model, **setting.teacher.params).tap_names)
    return tuple(t for t in student if t in teacher)


def _component(c: FieldChecker, value: Any, path: str, table: dict[str, type],
               defaults: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """``name`` or ``{name, **kwargs}`` naming an Optuna sampler or pruner class."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        c.error(path, f"expected a name or a mapping with 'name'; allowed names: {', '.join(table)}; got {value!r}")
        return None
    name = value["name"]
    if name not in table:
        c.error(join_path(path, "name"), f"expected one of {', '.join(table)}, got {name!r}")
        return None
    params = {k: copy.deepcopy(v) for k, v in value.items() if k != "name"}
    signature = inspect.signature(table[name])
    # functions and samplers cannot come from a YAML file
    allowed = [p for p, v in signature.parameters.items() if p not in ("self", "seed", "max_resource", "search_space")
               and not any(word in str(v.annotation) for word in ("Callable", "Sampler"))]
    bad = False
    for key in params:
        if key == "seed":
            c.error(join_path(path, key), f"set the seed with optuna.seed (default: the setting's seed); allowed "
                                          f"here: {', '.join(allowed) or 'none'}")
            bad = True
        elif key == "search_space":
            c.error(join_path(path, key), f"the grid comes from the search section; allowed here: "
                                          f"{', '.join(allowed) or 'none'}")
            bad = True
        elif key not in allowed:
            c.error(join_path(path, key), f"not a parameter of {table[name].__name__}; allowed: "
                                          f"{', '.join(allowed) or 'none'}")
            bad = True
    if bad:
        return None
    try:  # let Optuna check the values themselves
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if name != "grid":
                table[name](**{**defaults.get(name, {}), **params})
    except (TypeError, ValueError) as err:
        accepted = ", ".join(f"{k}={v.default!r}" for k, v in inspect.signature(table[name]).parameters.items()
                             if v.default is not inspect.Parameter.empty)
        c.error(path, f"{table[name].__name__} rejects these parameters ({err}); expected values like its "
                      f"defaults: {accepted}")
        return None
    return name, params


#: Why a study with ``data.labelled`` trains one trial at a time (the study file and the worker's flag).
LABELLED_SINGLE_RUNS = ("a study with data.labelled trains one trial at a time (CE alone trains on the labelled "
                        "samples only, another loader than its population's); expected 1 or auto")


def population_or_error(value: Any, field: str, error: Callable[[str, str], None]) -> int | str:
    """``auto`` or a population size in [1, :data:`MAX_POPULATION`]; else ``error(field,
    message)`` is called and ``"auto"`` returned."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_POPULATION):
        return value
    error(field, f"expected 'auto' or a whole number from 1 to {MAX_POPULATION} (trials a worker trains "
                 f"together), got {value!r}")
    return "auto"


def validate_study(document: Any, source: str | os.PathLike | None = None, *, check_taps: bool = True) -> StudySpec:
    """Check a study mapping and return a :class:`StudySpec`, or raise
    :class:`~relkd.config.ConfigError` listing every problem with its field path."""
    c = FieldChecker()
    setting = setting_or_errors(document, c, source)
    taps = common_taps(setting) if check_taps and setting is not None else None
    space = None
    search = document.get("search") if isinstance(document, Mapping) else None
    ratio = None
    if isinstance(search, Mapping) and "ratio" in search:  # the student's size (relkd.study.sizes)
        search = {k: v for k, v in search.items() if k != "ratio"}
        ratio = document["search"]["ratio"]
    try:
        space = validate_search(search, taps)
    except ConfigError as err:
        c.errors.extend(err.errors)

    opt = document.get("optuna") or {}
    spec_kwargs: dict[str, Any] = {}
    if c.mapping(opt, "optuna", _OPTUNA_FIELDS):
        name = opt.get("study_name") or (setting.name if setting else "study")
        if not isinstance(name, str) or "/" in name or name in (".", ".."):
            c.error("optuna.study_name", f"expected a name without '/', got {name!r}")
        storage = opt.get("storage")
        if storage is not None and (not isinstance(storage, str) or not storage):
            c.error("optuna.storage", f"expected a storage URL such as sqlite:///runs/x.db, got {storage!r}")
        artifacts = opt.get("artifacts")
        if artifacts is not None and artifacts_problem(artifacts) is not None:
            c.error("optuna.artifacts", artifacts_problem(artifacts))
            artifacts = None
        sampler = _component(c, opt.get("sampler", "tpe"), "optuna.sampler", SAMPLERS, {"tpe": TPE_DEFAULTS})
        pruner = _component(c, opt.get("pruner", "median"), "optuna.pruner", PRUNERS, {"median": MEDIAN_DEFAULTS})
        seed = c.integer(opt["seed"], "optuna.seed") if opt.get("seed") is not None else \
            (setting.seed if setting else 0)
        n_trials = c.optional(opt.get("n_trials"), lambda v: c.integer(v, "optuna.n_trials", minimum=1))
        timeout = c.optional(opt.get("timeout"), lambda v: c.number(v, "optuna.timeout", strict=True))
        heartbeat = c.integer(opt.get("heartbeat_interval", 60), "optuna.heartbeat_interval")
        anchors = opt.get("anchors", "default")
        if anchors == "default":
            anchors = DEFAULT_ANCHORS
        elif anchors is None:
            anchors = ()
        if not isinstance(anchors, (list, tuple)) or not all(isinstance(a, str) for a in anchors):
            c.error("optuna.anchors", f"expected 'default' or a list of preset names ({', '.join(PRESETS.list())})"
                                      f", got {anchors!r}")
            anchors = ()
        for i, anchor in enumerate(anchors):
            if anchor not in PRESETS:
                c.error(f"optuna.anchors[{i}]", unknown_name_message("preset", anchor, PRESETS.list()))
        ladder = c.optional(opt.get("ladder"), lambda v: validate_ladder(
            c, v, "optuna.ladder", setting.budget.epochs if setting else None))
        if opt.get("ladder") is not None and "pruner" in opt:
            c.error("optuna.ladder", "a ladder replaces the pruner: give optuna.ladder or optuna.pruner, not both")
        refine = c.optional(opt.get("refine"), lambda v: validate_refine(c, v, "optuna.refine"))
        rerun = c.optional(opt.get("rerun"), lambda v: validate_rerun(c, v, "optuna.rerun"))
        tune_anchors = c.optional(opt.get("tune_anchors"), lambda v: validate_tune_anchors(c, v, "optuna.tune_anchors"))
        if tune_anchors is not None and not anchors:
            c.error("optuna.tune_anchors", "the study has no anchors to tune; list at least one in optuna.anchors (kd "
                                           "is always tuned when it is one) or remove optuna.tune_anchors")
        if setting is not None and setting.tune is not None and anchors and "none" not in anchors:
            anchors = ("none", *anchors)  # CE alone at the tuned rate: the baseline every verdict states first
        population = population_or_error(opt.get("population", "auto"), "optuna.population", c.error)
        if setting is not None and setting.data.labelled is not None and population not in ("auto", 1):
            c.error("optuna.population", LABELLED_SINGLE_RUNS)
        size = validate_sizes(c, ratio, opt, setting)
        if size is not None:
            pruner = ("none", {})
        spec_kwargs = dict(size=size, study_name=name, storage=storage,
                           artifacts=None if artifacts is None else artifacts_location(artifacts),
                           sampler=sampler, pruner=pruner, seed=seed,
                           n_trials=n_trials, timeout=timeout, anchors=tuple(dict.fromkeys(anchors)),
                           heartbeat_interval=heartbeat, ladder=ladder, refine=refine, rerun=rerun,
                           tune_anchors=tune_anchors, population=population)
    if not c.errors and spec_kwargs["sampler"][0] in ("grid", "bruteforce"):
        sampler_name = spec_kwargs["sampler"][0]
        try:
            space.grid(tree=sampler_name == "bruteforce")
        except ConfigError as err:
            c.errors.extend(f"{e} (optuna.sampler: {sampler_name} enumerates the space)" for e in err.errors)
        if refine is not None:
            c.error("optuna.refine", f"the {sampler_name} sampler enumerates the search space, and refinement "
                                     f"draws continuous values around the anchors; remove optuna.refine or "
                                     f"choose one of the samplers tpe, random or gp")
    if c.errors:
        raise ConfigError(c.errors, source)
    canonical = setting.to_dict()
    canonical["search"] = space.describe()
    if spec_kwargs["size"] is not None:  # written only when set, so older study documents stay the same
        canonical["search"]["ratio"] = spec_kwargs["size"].describe()
    canonical["optuna"] = {
        "study_name": spec_kwargs["study_name"], "storage": spec_kwargs["storage"],
        "sampler": {"name": spec_kwargs["sampler"][0], **spec_kwargs["sampler"][1]},
        "pruner": {"name": spec_kwargs["pruner"][0], **spec_kwargs["pruner"][1]},
        "seed": spec_kwargs["seed"], "n_trials": spec_kwargs["n_trials"], "timeout": spec_kwargs["timeout"],
        "anchors": list(spec_kwargs["anchors"]), "heartbeat_interval": spec_kwargs["heartbeat_interval"],
    }
    for key in ("ladder", "refine", "rerun", "tune_anchors"):  # written only when set: older documents stay the same
        if spec_kwargs[key] is not None:
            canonical["optuna"][key] = spec_kwargs[key].describe()
    if spec_kwargs["population"] != "auto":
        canonical["optuna"]["population"] = spec_kwargs["population"]
    if spec_kwargs["artifacts"] is not None:  # written only when set: older documents stay the same
        canonical["optuna"]["artifacts"] = spec_kwargs["artifacts"]
    if spec_kwargs["size"] is not None:
        canonical["optuna"]["objectives"] = spec_kwargs["size"].objectives
    if spec_kwargs["ladder"] is not None:  # the ladder is the pruner
        del canonical["optuna"]["pruner"]
    return StudySpec(setting=setting, space=space, source=str(source) if source else None, document=canonical,
                     **spec_kwargs)


def load_study_spec(path: str | os.PathLike) -> StudySpec:
    """Read a study file (YAML, safe loading) and validate it."""
    spec = validate_study(read_yaml_file(path), path)
    require_device_here(spec.setting, path)
    return spec
