"""Turn a study into pictures and numbers: plots (``plots``)."""
from .plots import write_study_plots

__all__ = ["write_study_plots"]
