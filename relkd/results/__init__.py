"""The read side of studies, below both the study driver and analysis: what a study's trials
mean once they are stored.

- ``record``: every name relkd gives to Optuna study and trial attributes, and how trials are
  counted (writers and readers import the names from here, so none is spelled twice);
- ``ranking``: compositions ranked by their mean over seeds, and the verdict whether the search
  beat the known methods (with Welch's test from :mod:`relkd.stats`);
- ``pareto``: a study's objectives, the Pareto front of accuracy against student size, and the
  most accurate student within a size.

``relkd.study`` (which writes studies) and ``relkd.analysis`` (which draws them) both read
through these modules; this package imports neither.
"""
from .pareto import best_within, is_multi_objective, objective_names, pareto_front
from .ranking import Composition, compositions, search_verdict, verdict_line
from .record import StudyMismatchError, counted_trials, trial_counts

__all__ = ["StudyMismatchError", "counted_trials", "trial_counts", "Composition", "compositions", "search_verdict",
           "verdict_line", "is_multi_objective", "objective_names", "pareto_front", "best_within"]
