"""Experiment trackers: one tracker run per trained student (a study's trial, a compare's or
confirm's run, a seed of ``relkd train``), with its parameters (the objective config, flattened,
and what the caller adds) and its per-epoch curves (:mod:`relkd.engine.curves`), one point per
epoch per scalar.

``--log-to`` on the commands that train takes ``tensorboard:DIR`` (event files under
``DIR/<experiment>/<run>``; needs the ``tensorboard`` package, ``pip install 'relkd[tensorboard]'``)
or ``mlflow:URI`` (a tracking server such as ``http://host:5000``, or a ``sqlite:///`` or
``file:`` store; needs ``pip install 'relkd[mlflow]'``). The experiment is the study's (or the
compare's, the setting's) name.

Example::

    tracker = open_tracker("tensorboard:runs/tb", "fmnist_quick")
    tracker.log_run("trial-12", params={"objective": config}, curves=result.curves,
                    summary={"val_accuracy": result.val_accuracy})
"""
from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .curves import scalars

__all__ = ["TRACKERS", "Tracker", "open_tracker", "parse_log_to", "flat_params"]

log = logging.getLogger(__name__)

#: Tracker kinds and the extra that installs each one's package.
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def parse_log_to(text: str) -> tuple[str, str]:
    """``(kind, target)`` of a ``--log-to`` value such as ``tensorboard:runs/tb`` or
    ``mlflow:http://localhost:5000``."""
    kind, sep, target = text.partition(":")
    if not sep or kind not in TRACKERS or not target:
        raise ValueError(f"--log-to (or RELKD_LOG_TO): {text!r} is not one of tensorboard:DIR, mlflow:URI "
                         f"(e.g. tensorboard:runs/tb, mlflow:http://localhost:5000)")
    return kind, target


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``params`` flattened to ``a.b.c`` keys with scalar values (lists by position, ``None``
    as ``"none"``), as trackers take parameters."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out.update(flat_params({str(i): v for i, v in enumerate(value)}, f"{name}."))
        elif value is None:
            out[name] = "none"
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class Tracker:
    """Where runs are logged: :meth:`log_run` once per trained student."""

    def __init__(self, kind: str, target: str, experiment: str):
        self.kind, self.target, self.experiment = kind, target, experiment
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard (checked in open_tracker)

            self._writer_class = SummaryWriter
        else:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=target)
            self._experiment_id: str | None = None

    def __repr__(self) -> str:
        return f"{self.kind}:{self.target}"

    def log_run(self, name: str, *, params: Mapping[str, Any], curves: Sequence[Mapping[str, Any]] | None,
                summary: Mapping[str, float | None] | None = None) -> None:
        """Log one run ``name``: ``params`` (nested; flattened), each curve point's scalars at
        its epoch, and ``summary`` (final metrics such as ``test_accuracy``; ``None`` values
        are left out). A tracker that fails logs a warning: a run is never lost to its tracker."""
        flat = flat_params(params)
        final = {k: float(v) for k, v in (summary or {}).items() if v is not None}
        try:
            if self.kind == "tensorboard":
                self._tensorboard(name, params, flat, curves or [], final)
            else:
                self._mlflow(name, flat, curves or [], final)
        except Exception as err:  # the run's result is already stored; the tracker is a copy
            log.warning("could not log run %s to %s: %s", name, self, err)

    def _tensorboard(self, name: str, params: Mapping[str, Any], flat: Mapping[str, Any],
                     curves: Sequence[Mapping[str, Any]], final: Mapping[str, float]) -> None:
        folder = Path(self.target) / self.experiment / name
        with self._writer_class(log_dir=str(folder)) as writer:
            for point in curves:
                for tag, value in scalars(point).items():
                    writer.add_scalar(tag, value, point["epoch"])
            writer.add_text("params", "```\n" + json.dumps(params, indent=2, default=str) + "\n```", 0)
            # hparams under their own tags, so each curve keeps one point per epoch
            writer.add_hparams(dict(flat), {f"final/{k}": v for k, v in final.items()} or {"final/none": 0.0},
                               run_name=".")

    def _mlflow(self, name: str, flat: Mapping[str, Any], curves: Sequence[Mapping[str, Any]],
                final: Mapping[str, float]) -> None:
        from mlflow.entities import Metric, Param

        client = self._client
        if self._experiment_id is None:
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = client.create_experiment(self.experiment)
                except Exception:  # another worker made it at that moment
                    self._experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
            else:
                self._experiment_id = found.experiment_id
        run = client.create_run(self._experiment_id, run_name=name)
        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, point["epoch"]) for point in curves for tag, value in scalars(point).items()]
        metrics += [Metric(f"final/{k}", v, now, 0) for k, v in final.items()]
        params = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for start in range(0, len(params), 100):  # log_batch takes at most 100 parameters, 1,000 metrics
            client.log_batch(run.info.run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
        client.set_terminated(run.info.run_id)


def open_tracker(log_to: str | None, experiment: str) -> Tracker | None:
    """The tracker of a ``--log-to`` value (``None``: none), for runs of ``experiment``.
    A tracker whose package is missing is one error naming the extra that installs it."""
    if not log_to:
        return None
    kind, target = parse_log_to(log_to)
    module = "tensorboard" if kind == "tensorboard" else "mlflow"
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"--log-to {kind}: the {module} package is not installed; "
                         f"pip install 'relkd[{TRACKERS[kind]}]'")
    tracker = Tracker(kind, target, experiment)
    log.info("logging each run to %s (experiment %s)", tracker, experiment)
    return tracker
