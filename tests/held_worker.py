"""``relkd`` as ``python -m relkd.cli`` runs it, for tests that must interrupt a trial in the
middle: with ``RELKD_TEST_HOLD_ANCHOR=<anchor>`` and ``RELKD_TEST_HOLD_FILE=<path>`` in the
environment, a trial of that anchor (one trial at a time, as the tests train) reports its first
epoch and then holds while the file exists. The test waits for that state (:func:`tiny.wait_for_held_trial`),
does what it tests (a kill, a signal, another worker's move) and removes the file to let the
trial go on. ``RELKD_TEST_HOLD_ANCHOR=searched`` holds the first searched trial instead (one that is no
anchor or re-run). So no test needs one trial to outlast another, which a busy machine can reverse.

Run as ``python tests/held_worker.py <relkd arguments>``; without the variables it is plain relkd.
Only this process is changed (relkd has no such hook): :meth:`TrialRunner.reporter` is wrapped."""
import os
import sys
import time
from pathlib import Path

HOLD_ANCHOR = "RELKD_TEST_HOLD_ANCHOR"
HOLD_FILE = "RELKD_TEST_HOLD_FILE"
#: The anchor name that holds a searched trial (no preset has it).
SEARCHED = "searched"
#: A test that never removes the file (it failed before) does not leave the worker held forever.
MAX_HOLD_S = 900.0


def hold_env(anchor: str, marker: Path) -> dict[str, str]:
    """The environment variables that hold ``anchor``'s trial while ``marker`` exists (created here)."""
    marker.touch()
    return {HOLD_ANCHOR: anchor, HOLD_FILE: str(marker)}


def _install() -> None:
    from relkd.study.trial import TrialRunner

    anchor, marker = os.environ.get(HOLD_ANCHOR), os.environ.get(HOLD_FILE)
    if not anchor or not marker:
        return
    reporter = TrialRunner.reporter

    def holding_reporter(draw):
        report = reporter(draw)

        def held(epoch, accuracy):
            stop = report(epoch, accuracy)  # the epoch is in the storage before the hold
            if (draw.anchor or SEARCHED) == anchor and not draw.rerun:
                deadline = time.monotonic() + MAX_HOLD_S
                while Path(marker).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return stop

        return held

    TrialRunner.reporter = staticmethod(holding_reporter)


if __name__ == "__main__":
    _install()
    from relkd.cli import main

    sys.exit(main(sys.argv[1:]))
