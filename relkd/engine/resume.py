"""Long runs that resume: a teacher's training and a pretraining run save their whole
training state every N epochs (:class:`EpochCheckpoint`) beside the cache entry they are
building, under that entry's lock, and a later process that builds the same entry (the same
key) goes on from the last saved epoch instead of from the start. On the CPU the resumed
run's final weights equal an uninterrupted run's bit for bit: the batches of an epoch are
drawn from (seed, epoch), and the state saved is everything else the loop carries (weights,
optimizer, schedule, gradient scaler, the CPU's random generator, the loss sums, the
accuracies and curves so far, the seconds trained). A saved state names its run
(``ident``: the cache key, the device type and the precision), so a state saved on another
kind of device is not resumed; the builder removes it once the entry is stored.

``N`` is :data:`DEFAULT_EVERY` (10 epochs), ``$RELKD_CHECKPOINT_EVERY`` or the
``--checkpoint-every`` flag of ``relkd teacher train`` / ``relkd pretrain``; 0 turns it off."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["DEFAULT_EVERY", "EpochCheckpoint", "save_interval", "restore_fit"]

log = logging.getLogger(__name__)

#: Epochs between two saves of a long run's state, unless ``$RELKD_CHECKPOINT_EVERY`` says otherwise.
DEFAULT_EVERY = 10
FORMAT = 1


def save_interval(every: int | None = None) -> int:
    """``every`` when given, else ``$RELKD_CHECKPOINT_EVERY``, else :data:`DEFAULT_EVERY`."""
    if every is not None:
        value, source = every, "checkpoint_every"
    else:
        text = os.environ.get("RELKD_CHECKPOINT_EVERY", "").strip()
        if not text:
            return DEFAULT_EVERY
        try:
            value, source = int(text), "RELKD_CHECKPOINT_EVERY"
        except ValueError:
            raise ValueError(f"RELKD_CHECKPOINT_EVERY: expected a whole number of epochs >= 0 (0: never), "
                             f"got {text!r}") from None
    if value < 0:
        raise ValueError(f"{source}: expected a whole number of epochs >= 0 (0: never), got {value}")
    return value


@dataclass
class EpochCheckpoint:
    """Where a run saves its state every ``every`` epochs (``path``) and resumes from.
    ``ident`` (JSON-ready) names the run: a saved state for another run is not resumed."""

    path: Path
    every: int
    ident: Any = None

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether to save after ``epochs_done`` of ``epochs`` epochs (not after the last)."""
        return self.every > 0 and epochs_done < epochs and epochs_done % self.every == 0

    def save(self, epochs_done: int, state: dict[str, Any]) -> None:
        """Save ``state`` (tensors, numbers, lists and dicts of them) after ``epochs_done``
        epochs, atomically; a failed write is a warning (the run goes on)."""
        payload = {"format": FORMAT, "ident": self.ident, "epochs_done": epochs_done, **state,
                   "rng": torch.get_rng_state()}  # the CPU's generator (an accelerator's run is not bit-exact)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, tmp)
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("could not save the training state to %s (%s): an interruption would start over", self.path,
                        err)
            tmp.unlink(missing_ok=True)
            return
        log.info("saved the training state after epoch %d to %s", epochs_done, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run (with ``epochs_done``), or ``None`` when there is none
        or it is unreadable or another run's (then it is ignored, with a warning)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file: start over
            log.warning("ignoring the unreadable training state %s (%s): starting from epoch 1", self.path, err)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("ident") != self.ident:
            log.warning("ignoring the training state %s: it is another run's; starting from epoch 1", self.path)
            return None
        torch.set_rng_state(state["rng"])
        log.info("resuming from %s after epoch %d", self.path, state["epochs_done"])
        return state

    def clear(self) -> None:
        """Remove the saved state (the run finished)."""
        self.path.unlink(missing_ok=True)


def restore_fit(saved: dict[str, Any], model: torch.nn.Module, parts: torch.nn.Module, opt: torch.optim.Optimizer,
                sched: Any, scaler: Any, record: Any, curve: Any) -> tuple[int, list[float]]:
    """Put a saved state of :func:`relkd.engine.fit` (:meth:`EpochCheckpoint.load`) back into
    the loop's objects: the model, the objective's trainable ``parts``, the optimizer,
    schedule and scaler, the loss sums (``record``, a ``PartSums``) and the ``curve``.
    Returns the first epoch to train and the accuracies so far."""
    device = next(model.parameters()).device
    model.load_state_dict(saved["model"])
    parts.load_state_dict(saved["objective"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    record.sums = {k: v.to(device) for k, v in saved["sums"].items()}
    record.weighted = {k: v.to(device) for k, v in saved["weighted"].items()}
    record.steps, record.samples = saved["steps"], saved["samples"]
    curve.points = list(saved["curves"])
    return saved["epochs_done"], list(saved["history"])
