"""Search efficiency: how fast each search strategy finds a composition that beats the known methods.

The same wall budget (``--budget`` seconds of search) is given to several strategies, each
with several sampler seeds, on the study file's setting:

- ``random``: Optuna's RandomSampler with the study's pruner (median unless the file names
  another); no ladder, refinement or re-runs;
- ``tpe``: Optuna's default TPE (multivariate, group and constant_liar off), same pruner;
- ``tpe_mv``: relkd's TPE defaults (multivariate, group, constant_liar), same pruner;
- ``gp``: Optuna's GPSampler (``sampler: gp`` in a study file), same pruner;
- ``relkd``: the study file's own strategy: its sampler, fidelity ladder and refinement.

Re-runs with more seeds (``optuna.rerun``) are off during the timed search for every
strategy, so all of them are measured on the same thing: single-seed search trials. The
anchors (the known methods) are trained ONCE, in a study of their own, and their completed
trials are copied into every strategy's study before its clock starts: the teacher is cached
and the anchors are shared, so the budget is spent on the search only, and the ladder, the
pruners, TPE and the refinement all see the same anchors. Search sees validation accuracy
only (a trial's value); the test split is not touched.

GPSampler models only the parameters that every completed trial has (Optuna's intersection
of their search spaces) and draws the others with RandomSampler. relkd's space is conditional
(``term1.*`` exists only with two terms, refinements have their own parameters) and anchors
outside the space have no parameters at all (on ``fmnist_quick`` none of the ten anchors lies
in the space), so there GPSampler may model nothing and search at random: the notes under the
table give, per seed, how many parameters it could model and how often it fell back.

For each strategy the table gives the median and the range (min-max) over seeds of: the best
searched validation accuracy at the end of the budget; the compositions trained (distinct
searched compositions among the trials that trained); the epochs they trained; the wall
seconds until the best-so-far first reached the best anchor's validation accuracy ("never"
when it did not); and the fraction of seeds whose best searched trial beat the best anchor.
A ratio line divides each strategy's median time-to-best-anchor by ``tpe``'s (the target is
relkd <= 0.5x tpe). A trial in flight when the budget ends still finishes (Optuna's timeout),
but only trials completed within the budget enter the summaries.

    .venv/bin/python benchmarks/search_efficiency.py [--study studies/fmnist_quick.yaml]
        [--strategies random,tpe,tpe_mv,gp,relkd] [--seeds 0,1,2] [--budget 240]
        [--out benchmarks/out/search_efficiency] [--threads 0]

Every study lives in ``<out>/search_efficiency.db`` (kept), named
``<study>-eff-<strategy>-s<seed>`` (``-2``, ``-3``, ... when an interrupted or differently
budgeted run already holds the name). Each finished run is appended to ``<out>/runs.jsonl``:
re-running the benchmark reuses the finished runs and only runs the missing ones. The table
goes to stdout and ``<out>/search_efficiency.md``, the numbers to ``search_efficiency.json``,
the plot (best-so-far validation accuracy against wall seconds, median over seeds, min-max
shaded, the best anchor dashed) to ``search_efficiency.png`` and ``.svg``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from relkd.study import load_study_spec, run_study  # noqa: E402
from relkd.study.opening import open_study  # noqa: E402
from relkd.results.record import is_counted  # noqa: E402

#: The sampler of each strategy; ``None``: the study file's own search (sampler, ladder, refinement).
STRATEGIES: dict[str, tuple[str, dict[str, Any]] | None] = {
    "random": ("random", {}),
    "tpe": ("tpe", {"multivariate": False, "group": False, "constant_liar": False}),  # Optuna's defaults
    "tpe_mv": ("tpe", {}),  # relkd's TPE_DEFAULTS: multivariate, group, constant_liar
    "gp": ("gp", {}),
    "relkd": None,
}
#: Study user attribute where the benchmark keeps a run's start, budget and whether it finished.
BENCH_ATTR = "relkd.search_efficiency"
REFERENCE = "tpe"  # the ratio line divides by this strategy's median time to the best anchor


# ---------------------------------------------------------------------------- pure pieces

def trajectory(study: optuna.Study, start: datetime.datetime) -> list[dict[str, Any]]:
    """Each searched trial that trained (counted, not an anchor), in completion order: seconds
    since ``start``, epochs trained so far by the search, and the best completed value so far
    (``None`` until a searched trial completes)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
              if is_counted(t) and "anchor" not in t.user_attrs and t.datetime_complete is not None]
    points, epochs, best = [], 0, None
    for t in sorted(trials, key=lambda t: (t.datetime_complete, t.number)):
        epochs += len(t.intermediate_values)
        if t.state == TrialState.COMPLETE and t.value is not None and (best is None or t.value > best):
            best = float(t.value)
        points.append({"trial": t.number, "seconds": (t.datetime_complete - start).total_seconds(),
                       "epochs": epochs, "best": best, "value": t.value, "state": t.state.name.lower(),
                       "config": json.dumps(t.user_attrs.get("objective_config"), sort_keys=True)})
    return points


def within(points: Sequence[dict[str, Any]], budget: float) -> list[dict[str, Any]]:
    """The points of a trajectory completed within the budget."""
    return [p for p in points if p["seconds"] <= budget]


def time_to_target(points: Sequence[dict[str, Any]], target: float | None) -> float | None:
    """Seconds until the best-so-far first reached ``target`` (>=), or ``None`` (never)."""
    if target is None:
        return None
    return next((p["seconds"] for p in points if p["best"] is not None and p["best"] >= target), None)


def best_at(points: Sequence[dict[str, Any]], seconds: float, axis: str = "seconds") -> float | None:
    """The best-so-far value at ``seconds`` (or at that many epochs trained, ``axis="epochs"``;
    ``None`` before the first completed trial)."""
    best = None
    for p in points:
        if p[axis] > seconds:
            break
        best = p["best"]
    return best


def run_summary(points: Sequence[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """What the table reports of one run (``points``: its trajectory within the budget)."""
    best = points[-1]["best"] if points else None
    return {"best": best, "trials": len(points), "compositions": len({p["config"] for p in points}),
            "epochs": points[-1]["epochs"] if points else 0, "time_to_anchor": time_to_target(points, target),
            "beat_anchor": None if target is None else (best is not None and best > target)}


def summarize(values: Iterable[float | None], missing: float) -> dict[str, Any]:
    """Median, min and max over seeds; a missing value (``None``) counts as ``missing``
    (``inf`` for a time never reached, ``-inf`` for no completed trial). Results that are
    infinite come back as ``None``."""
    values = list(values)
    filled = sorted(missing if v is None else float(v) for v in values)
    if not filled:
        return {"median": None, "min": None, "max": None, "n": 0, "missing": 0}

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    median = statistics.median(filled)  # with infinities: (x + inf) / 2 is inf, as it should be
    return {"median": finite(median), "min": finite(filled[0]), "max": finite(filled[-1]), "n": len(filled),
            "missing": sum(v is None for v in values)}


def run_key(record: dict[str, Any]) -> tuple[str, str, int, float]:
    return record["study"], record["strategy"], int(record["seed"]), float(record["budget"])


def load_runs(path: Path) -> dict[tuple[str, str, int, float], dict[str, Any]]:
    """The finished runs in ``runs.jsonl`` by (study, strategy, seed, budget); damaged lines are skipped."""
    done: dict[tuple[str, str, int, float], dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[run_key(record)] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            print(f"skipping a damaged line in {path}", file=sys.stderr)
    return done


def missing_runs(study: str, strategies: Sequence[str], seeds: Sequence[int], budget: float,
                 done: dict[tuple[str, str, int, float], dict[str, Any]]) -> list[tuple[str, int]]:
    """The (strategy, seed) runs not in ``done``, seed by seed (the strategies interleave, so a
    machine that slows down during the benchmark slows every strategy alike)."""
    return [(strategy, seed) for seed in seeds for strategy in strategies
            if (study, strategy, int(seed), float(budget)) not in done]


def append_run(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------- the runs

def strategy_spec(spec, strategy: str, seed: int, budget: float, name: str):
    """``spec`` as ``strategy`` searches it: sampler seed ``seed`` (the setting's training seed
    stays), no anchors (they are copied in), no re-runs, no n_trials, ``budget`` seconds."""
    sampler = STRATEGIES[strategy]
    s = spec if sampler is None else dataclasses.replace(spec, sampler=sampler, ladder=None, refine=None)
    s = dataclasses.replace(s, seed=int(seed), anchors=(), rerun=None, n_trials=None, timeout=float(budget))
    s = s.renamed(name)
    opt = s.document["optuna"]  # the study's recorded document says what this run did
    opt.update(sampler={"name": s.sampler[0], **s.sampler[1]}, seed=int(seed), n_trials=None,
               timeout=float(budget), anchors=[])
    for key in ("ladder", "refine", "rerun"):
        if getattr(s, key) is None:
            opt.pop(key, None)
    if s.ladder is None:
        opt["pruner"] = {"name": s.pruner[0], **s.pruner[1]}
    return s


class _Notes(logging.Handler):
    """Counts Optuna's warnings during a run (e.g. GPSampler's 'sampled independently', once
    per parameter and trial) and passes the others on to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "independently" in message:
            self.counts[f"{record.name}: parameters sampled independently (not by the model of the sampler)"] += 1
        else:
            self.counts[message[:300]] += 1
            print(f"optuna: {message}", file=sys.stderr)


@contextlib.contextmanager
def recorded_notes() -> Iterator[Counter]:
    """Optuna's log warnings and Python warnings during a run, counted by message."""
    handler = _Notes()
    logger = logging.getLogger("optuna")
    optuna.logging.disable_default_handler()
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.counts
            for w in caught:
                handler.counts[f"{w.category.__name__}: {str(w.message)[:300]}"] += 1
    finally:
        logger.removeHandler(handler)
        optuna.logging.enable_default_handler()


def train_anchors(spec, url: str) -> list[optuna.trial.FrozenTrial]:
    """Train the study's anchors once, in a study of their own (resumed when it exists), and
    return their completed trials."""
    if not spec.anchors:
        return []
    name = f"{spec.study_name}-eff-anchors"
    s = dataclasses.replace(spec, sampler=("random", {}), ladder=None, refine=None, rerun=None,
                            n_trials=len(spec.anchors), timeout=None).renamed(name)
    print(f"anchors: {', '.join(spec.anchors)} (study {name})", file=sys.stderr, flush=True)
    study = run_study(s, storage=url, progress=False).study
    anchors = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "anchor" in t.user_attrs]
    missing = set(spec.anchors) - {t.user_attrs["anchor"] for t in anchors}
    if missing:
        print(f"warning: anchors without a completed trial: {', '.join(sorted(missing))}", file=sys.stderr)
    return anchors


def best_anchor(anchors: Sequence[optuna.trial.FrozenTrial]) -> tuple[str, float] | None:
    if not anchors:
        return None
    best = max(anchors, key=lambda t: (t.value, -t.number))
    return best.user_attrs["anchor"], float(best.value)


def copy_anchors(study: optuna.Study, anchors: Sequence[optuna.trial.FrozenTrial], source: str) -> None:
    """Add the shared anchors' completed trials to ``study``, as they were trained."""
    for t in anchors:
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=t.value, params=t.params, distributions=t.distributions,
            intermediate_values=t.intermediate_values, user_attrs={**t.user_attrs, "copied_from": source}))


def study_info(url: str, name: str) -> dict[str, Any] | None:
    """The benchmark attribute of study ``name`` ({} for a study without it), or ``None`` when absent."""
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None
    return study.user_attrs.get(BENCH_ATTR) or {}


def choose_study(url: str, base: str, budget: float) -> tuple[str, bool]:
    """The study name for a run and whether it already holds the finished run: ``base`` or
    ``base-2``, ``base-3``, ... skipping studies left by an interrupted run or another budget."""
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        info = study_info(url, name)
        if info is None:
            return name, False
        if info.get("finished") and float(info.get("budget", -1)) == float(budget):
            return name, True
    raise RuntimeError(f"no free study name after {base}-999")


def run_record(study: optuna.Study, spec_name: str, strategy: str, seed: int,
               anchor: tuple[str, float] | None) -> dict[str, Any]:
    """The runs.jsonl record of a finished run, from its study."""
    info = study.user_attrs[BENCH_ATTR]
    start = datetime.datetime.fromisoformat(info["start"])
    points = trajectory(study, start)
    kept = within(points, info["budget"])
    return {"study": spec_name, "strategy": strategy, "seed": int(seed), "budget": float(info["budget"]),
            "study_name": study.study_name, "start": info["start"], "seconds": info.get("seconds"),
            "stopped_because": info.get("stopped_because"), "error": info.get("error"),
            "best_anchor": anchor[1] if anchor else None, **run_summary(kept, anchor[1] if anchor else None),
            "trials_after_budget": len(points) - len(kept),
            "relative_params": info.get("relative_params"), "notes": info.get("notes"),
            "trajectory": [{k: p[k] for k in ("trial", "seconds", "epochs", "best", "value", "state")} for p in points],
            "configs": [p["config"] for p in points]}


def run_strategy(spec, strategy: str, seed: int, budget: float, url: str, name: str,
                 anchors: Sequence[optuna.trial.FrozenTrial]) -> optuna.Study:
    """One timed search: a fresh study with the shared anchors copied in, then ``budget``
    seconds of ``strategy``; its start, end and notes are kept in the study."""
    s = strategy_spec(spec, strategy, seed, budget, name)
    with recorded_notes() as notes:
        study, _, created = open_study(s, url)
        if not created:
            raise RuntimeError(f"study {name} exists already")
        copy_anchors(study, anchors, f"{spec.study_name}-eff-anchors")
        start = datetime.datetime.now()
        info = {"strategy": strategy, "seed": int(seed), "budget": float(budget), "start": start.isoformat(),
                "finished": False}
        study.set_user_attr(BENCH_ATTR, info)
        result = run_study(s, storage=url, n_trials=None, timeout=float(budget), progress=False)
        # parameters the sampler's own model could draw (Optuna's intersection of the completed
        # trials' spaces; GPSampler models only these, the rest it samples independently)
        relative = optuna.search_space.IntersectionSearchSpace().calculate(result.study)
    info.update(finished=True, seconds=result.seconds, stopped_because=result.stopped_because, error=result.error,
                relative_params=sorted(relative), notes=dict(notes))
    result.study.set_user_attr(BENCH_ATTR, info)
    return result.study


def collect_runs(spec, strategies: Sequence[str], seeds: Sequence[int], budget: float, out: Path) -> tuple[
        list[dict[str, Any]], tuple[str, float] | None]:
    """Every (strategy, seed) run, reused from runs.jsonl or the storage, or run now."""
    url = f"sqlite:///{(out / 'search_efficiency.db').resolve().as_posix()}"
    log_path = out / "runs.jsonl"
    done = load_runs(log_path)
    anchors = train_anchors(spec, url)
    anchor = best_anchor(anchors)
    todo = missing_runs(spec.study_name, strategies, seeds, budget, done)
    print(f"{len(strategies) * len(seeds) - len(todo)} runs found in {log_path}, {len(todo)} to go; best anchor: "
          f"{anchor[0] + f' {100 * anchor[1]:.2f}%' if anchor else 'none'}", file=sys.stderr, flush=True)
    for i, (strategy, seed) in enumerate(todo):
        name, finished = choose_study(url, f"{spec.study_name}-eff-{strategy}-s{seed}", budget)
        if finished:  # run to the end earlier, but its line did not reach runs.jsonl
            study = optuna.load_study(study_name=name, storage=url)
            record = run_record(study, spec.study_name, strategy, seed, anchor)
        else:
            print(f"[{i + 1}/{len(todo)}] {strategy} seed {seed}: {budget:g} s of search (study {name})",
                  file=sys.stderr, flush=True)
            study = run_strategy(spec, strategy, seed, budget, url, name, anchors)
            record = run_record(study, spec.study_name, strategy, seed, anchor)
        append_run(log_path, record)
        done[run_key(record)] = record
        best = "none" if record["best"] is None else f"{100 * record['best']:.2f}%"
        print(f"    {record['trials']} trials, {record['epochs']} epochs, best {best}"
              + (f"; notes: {record['notes']}" if record["notes"] else ""), file=sys.stderr, flush=True)
    runs = [done[(spec.study_name, strategy, int(seed), float(budget))] for strategy in strategies for seed in seeds]
    return runs, anchor


# ---------------------------------------------------------------------------- the report

def strategy_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over the seeds of one strategy's runs."""
    beat = [r["beat_anchor"] for r in runs if r["beat_anchor"] is not None]
    return {"seeds": [r["seed"] for r in runs],
            "best": summarize((r["best"] for r in runs), -math.inf),
            "compositions": summarize((r["compositions"] for r in runs), -math.inf),
            "trials": summarize((r["trials"] for r in runs), -math.inf),
            "epochs": summarize((r["epochs"] for r in runs), -math.inf),
            "time_to_anchor": summarize((r["time_to_anchor"] for r in runs), math.inf),
            "beat_anchor": sum(beat) / len(beat) if beat else None,
            # parameters the sampler's joint model could use per seed (GPSampler: the rest is random)
            "relative_params": [len(r.get("relative_params") or []) for r in runs],
            "notes": dict(sum((Counter(r.get("notes") or {}) for r in runs), Counter()))}


def ratios(summary: dict[str, dict[str, Any]], reference: str = REFERENCE) -> dict[str, float | None]:
    """Each strategy's median time to the best anchor over ``reference``'s (``None``: undefined)."""
    base = summary.get(reference, {}).get("time_to_anchor", {}).get("median")
    out = {}
    for name, s in summary.items():
        t = s["time_to_anchor"]["median"]
        out[name] = t / base if t is not None and base else None
    return out


def _span(s: dict[str, Any], fmt, none: str) -> str:
    show = lambda v: none if v is None else fmt(v)  # noqa: E731
    if s["min"] == s["max"]:
        return show(s["median"])
    return f"{show(s['median'])} ({show(s['min'])}–{show(s['max'])})"


def ratio_line(summary: dict[str, dict[str, Any]], reference: str = REFERENCE, budget: float | None = None) -> str:
    """The ratio line under the table. When ``reference``'s median run never reached the best
    anchor, its time is only known to exceed ``budget``: each ratio is then an upper bound."""
    if reference not in summary:
        return f"time to the best anchor relative to {reference}: {reference} was not run"
    if summary[reference]["time_to_anchor"]["median"] is None:
        line = (f"time to the best anchor relative to {reference}: undefined, {reference}'s median run never "
                f"reached the best anchor within the budget")
        bounds = [f"{name} < {t / budget:.2f}× ({t:.0f} s)" for name, s in summary.items()
                  if budget and (t := s["time_to_anchor"]["median"]) is not None]
        if bounds:
            line += (f" ({budget:g} s), so its time exceeds {budget:g} s and the ratios are upper bounds "
                     f"(target: relkd ≤ 0.5×): " + ", ".join(bounds))
        return line
    parts = []
    for name, r in ratios(summary, reference).items():
        parts.append(f"{name} {r:.2f}×" if r is not None else f"{name} never reached it (median run)")
    return f"median time to the best anchor relative to {reference} (target: relkd ≤ 0.5×): " + ", ".join(parts)


def note_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """What the samplers warned about, and how many parameters GPSampler could model."""
    lines = []
    for name, s in summary.items():
        if STRATEGIES.get(name) == ("gp", {}):
            counts = ", ".join(map(str, s["relative_params"]))
            lines.append(f"- {name}: parameters in every completed trial's space (the ones GPSampler models; it "
                         f"draws the others with RandomSampler): {counts} per seed")
        for message, count in s["notes"].items():
            lines.append(f"- {name}: {message} ({count} times over {len(s['seeds'])} seeds)")
    return lines


def markdown(spec_name: str, budget: float, seeds: Sequence[int], anchor: tuple[str, float] | None,
             summary: dict[str, dict[str, Any]]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    num = lambda v: f"{v:g}"  # noqa: E731
    sec = lambda v: f"{v:.0f}"  # noqa: E731
    target = f"{anchor[0]} {pct(anchor[1])}%" if anchor else "no anchors"
    lines = [f"Search efficiency on {spec_name}: {budget:g} s of search per run, sampler seeds "
             f"{', '.join(map(str, seeds))}; best anchor (validation accuracy): {target}. Median (min–max) over "
             f"seeds; only trials completed within the budget.", "",
             "| strategy | best searched val acc (%) | compositions trained | epochs trained | "
             "s to reach the best anchor | seeds beating the best anchor |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        beat = "n/a" if s["beat_anchor"] is None else f"{s['beat_anchor']:.0%}"
        lines.append(f"| {name} | {_span(s['best'], pct, 'none')} | {_span(s['compositions'], num, '0')} | "
                     f"{_span(s['epochs'], num, '0')} | {_span(s['time_to_anchor'], sec, 'never')} | {beat} |")
    lines += ["", ratio_line(summary, budget=budget)]
    notes = note_lines(summary)
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def curve(runs: Sequence[dict[str, Any]], grid: Sequence[float], axis: str = "seconds") -> tuple[list, list, list]:
    """Median, min and max over runs of the best-so-far at each grid time or epoch count (NaN
    where undefined: a run without a completed trial yet counts as the worst)."""
    med, low, high = [], [], []
    for t in grid:
        s = summarize((best_at(within(r["trajectory"], r["budget"]), t, axis) for r in runs), -math.inf)
        med.append(math.nan if s["median"] is None else s["median"])
        low.append(math.nan if s["min"] is None else s["min"])
        high.append(math.nan if s["max"] is None else s["max"])
    return med, low, high


def plot(runs: Sequence[dict[str, Any]], strategies: Sequence[str], budget: float, anchor, spec_name: str,
         out: Path) -> list[Path]:
    from relkd.figures import pyplot, save_figure

    plt = pyplot()
    most_epochs = max((p["epochs"] for r in runs for p in within(r["trajectory"], r["budget"])), default=1)
    axes_grids = {"seconds": [budget * i / 240 for i in range(241)], "epochs": list(range(most_epochs + 1))}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (axis, grid) in zip(axes, axes_grids.items()):
        for name in strategies:
            med, low, high = curve([r for r in runs if r["strategy"] == name], grid, axis)
            (line,) = ax.plot(grid, [100 * v for v in med], label=name, drawstyle="steps-post")
            ax.fill_between(grid, [100 * v for v in low], [100 * v for v in high], step="post", alpha=0.15,
                            color=line.get_color())
        if anchor:
            ax.axhline(100 * anchor[1], color="black", linestyle="--", linewidth=1,
                       label=f"best anchor ({anchor[0]})")
        ax.set_xlabel("wall seconds of search" if axis == "seconds" else "epochs trained by the search")
    axes[0].set_ylabel("best validation accuracy so far (%)")
    fig.suptitle(f"{spec_name}: search efficiency (median over sampler seeds, min–max shaded)")
    axes[1].legend(fontsize=7)
    return save_figure(fig, out, "search_efficiency")


def report(runs: Sequence[dict[str, Any]], strategies: Sequence[str], seeds: Sequence[int], budget: float,
           anchor: tuple[str, float] | None, spec_name: str, out: Path) -> str:
    summary = {name: strategy_summary([r for r in runs if r["strategy"] == name]) for name in strategies}
    text = markdown(spec_name, budget, seeds, anchor, summary)
    (out / "search_efficiency.md").write_text(text)
    table = {"study": spec_name, "budget": budget, "seeds": list(seeds), "strategies": list(strategies),
             "best_anchor": {"name": anchor[0], "value": anchor[1]} if anchor else None, "summary": summary,
             "ratio_to": REFERENCE, "ratios": ratios(summary), "ratio_line": ratio_line(summary, budget=budget),
             "runs": [{k: v for k, v in r.items() if k != "configs"} for r in runs]}
    (out / "search_efficiency.json").write_text(json.dumps(table, indent=2))
    plot(runs, strategies, budget, anchor, spec_name, out)
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "fmnist_quick.yaml"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1,2", help="sampler seeds (the setting's training seed stays)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of search per run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search_efficiency"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown or not args.strategies:
        parser.error(f"--strategies: expected some of {', '.join(STRATEGIES)}, got {', '.join(unknown) or 'none'}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.budget <= 0:
        parser.error("--budget: expected seconds > 0")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study_spec(args.study)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from relkd.engine import get_teacher

    get_teacher(spec.setting, progress=True)  # trained once and cached: no run's clock includes it
    start = time.perf_counter()
    runs, anchor = collect_runs(spec, args.strategies, args.seeds, args.budget, out)
    text = report(runs, args.strategies, args.seeds, args.budget, anchor, spec.study_name, out)
    print(text)
    print(f"files: {out / 'search_efficiency.md'}, {out / 'search_efficiency.json'}, "
          f"{out / 'search_efficiency.png'} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
