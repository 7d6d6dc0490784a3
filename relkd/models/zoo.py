"""The registry every model family registers its factories into (read through relkd.models)."""
from __future__ import annotations

from relkd.registry import Registry

__all__ = ["MODELS"]

#: Registry of model factories. Entries take ``num_classes``, ``in_channels`` and their
#: declared parameters and return a :class:`~relkd.models.taps.TappedModel`; use
#: :func:`relkd.models.create_model`.
MODELS = Registry("model", bind=False)
