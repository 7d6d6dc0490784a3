"""Turn a study into pictures, numbers and pages: ``choices`` (design-choice groups),
``importance`` (which choices matter), ``plots``, ``report`` (one HTML page) and
``compare`` (the method-comparison benchmark)."""
from .plots import write_study_plots

__all__ = ["write_study_plots"]
