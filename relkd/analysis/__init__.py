"""Turn a study into pictures, numbers and pages: ``choices`` (design-choice groups),
``importance`` (which choices matter), ``plots`` (``recipe_plot``: the tuned learning rate),
``report`` (one HTML page) and ``outputs`` (best.yaml and the plots after ``relkd study run``).
The numbers they read (ranking, verdict, Pareto front) live one floor below, in
:mod:`relkd.results`."""
from ..results.pareto import best_within, is_multi_objective, objective_names, pareto_front
from .plots import write_study_plots
from .outputs import write_outputs
from . import recipe_plot  # noqa: F401,E402 (registers the plot "recipe")

__all__ = ["write_study_plots", "write_outputs", "is_multi_objective", "objective_names", "pareto_front", "best_within"]
