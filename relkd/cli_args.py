"""What every ``relkd`` command shares on its command line: the parser, which reports a bad
argument in one line, the types of its flags, which name the flag and what it allows, and
``--json`` output that is always valid JSON."""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, NoReturn

__all__ = ["as_flags", "in_flags", "shows_flags", "FLAGS", "FLAG_PHRASES",
           "Parser", "integer", "positive_float", "seed_list", "seed_count_or_list",
           "device_flag", "storage_flag", "queue_storage_flag", "out_file", "out_folder", "MAX_SEED", "json_text",
           "print_json", "log_to_flag", "log_to_option", "checkpoint_every_option"]

#: The largest seed (NumPy's and torch's generators take 32-bit seeds).
MAX_SEED = 2**32 - 1


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: the command, the flag, what it
    allows, and where the usage is (``relkd train -h``), exit status 2. Sub-commands get
    the same class (``add_subparsers`` uses the parser's class)."""

    def error(self, message: str) -> NoReturn:
        # argparse writes "argument --seeds: MSG"; our types already open MSG with the flag
        message = re.sub(r"^argument (\S+): \1: ", r"\1: ", message)
        message = re.sub(r"^argument (\S+): ", r"\1: ", message)
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (usage: {self.prog} -h)\n")


def _integer(flag: str, text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise argparse.ArgumentTypeError(f"{flag}: expected an integer >= {minimum}{upper}, got {text!r}")
    return value


def integer(flag: str, minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An integer from ``minimum`` to ``maximum`` (``--epochs``, ``--top-k``, ``--seed``...)."""
    return lambda text: _integer(flag, text, minimum, maximum)


def population_flag(text: str) -> int | str:
    """``--population``: ``auto`` or a whole number of trials a worker trains together."""
    from .study.spec import MAX_POPULATION

    if text == "auto":
        return text
    try:
        return _integer("--population", text, 1, MAX_POPULATION)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--population: expected 'auto' or an integer >= 1 and <= {MAX_POPULATION}"
                                         f", got {text!r}") from None


def positive_float(flag: str) -> Callable[[str], float]:
    """A finite number > 0 (``--timeout`` seconds)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{flag}: expected a finite number > 0, got {text!r}")
        return value
    return parse


def _seeds(flag: str, text: str, example: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: expected {example}, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{flag}: expected {example}, got {text!r}")
    if any(not 0 <= s <= MAX_SEED for s in seeds):
        raise argparse.ArgumentTypeError(f"{flag}: expected seeds from 0 to {MAX_SEED}, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{flag}: expected each seed once, got {text!r}")
    return seeds


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2``: each seed once."""
    return _seeds("--seeds", text, "comma-separated integers like 0,1,2")


def seed_count_or_list(text: str) -> list[int]:
    """``--seeds 3`` means three seeds (0, 1, 2); ``--seeds 0,4,7`` lists them."""
    if "," not in text:
        try:
            count = int(text)
        except ValueError:
            count = None
        if count is None or not 1 <= count <= 1000:
            raise argparse.ArgumentTypeError(f"--seeds: expected a count from 1 to 1000 or a list like 0,4,7, "
                                             f"got {text!r}")
        return list(range(count))
    return _seeds("--seeds", text, "a count like 3 or a list like 0,1,2")


def device_flag(text: str) -> str:
    """``--device``: a device this machine has (:func:`relkd.setting.device_problem`)."""
    from .setting import device_problem

    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"--device: {problem}")
    return text


def _out(text: str, want_folder: bool) -> str:
    """``--out``: checked before anything runs, so that a result is never lost for want of a
    place to write it."""
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError(f"--out: expected a {'folder' if want_folder else 'file'} path, got ''")
    if want_folder and path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"--out: {text!r} is a file; expected a folder (new or existing)")
    if not want_folder and path.is_dir():
        raise argparse.ArgumentTypeError(f"--out: {text!r} is a folder; expected a file name, e.g. "
                                         f"{path / 'best.yaml'}")
    for parent in path.parents:  # a file where a folder of the path should be
        if parent.exists() and not parent.is_dir():
            raise argparse.ArgumentTypeError(f"--out: {str(parent)!r} is a file; expected a folder on the way to "
                                             f"{text!r}")
    return text


def out_folder(text: str) -> str:
    """``--out`` naming a folder that results go into."""
    return _out(text, want_folder=True)


def out_file(text: str) -> str:
    """``--out`` naming a file to write."""
    return _out(text, want_folder=False)


def storage_flag(text: str, flag: str = "--storage") -> str:
    """``--storage``: a non-empty URL or path (an empty one would silently mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{flag}: expected a storage URL such as sqlite:///runs/study.db, "
                                         "postgresql+psycopg://user@host/db or journal:PATH, got ''")
    return text


def queue_storage_flag(text: str) -> str:
    """``--queue-storage``: the storage of a run queue (:mod:`relkd.study.queue`), checked as
    :func:`storage_flag` checks ``--storage``."""
    return storage_flag(text, "--queue-storage")


def log_to_flag(text: str) -> str:
    """``--log-to``: ``tensorboard:DIR`` or ``mlflow:URI`` (:mod:`relkd.engine.tracking`)."""
    from .engine.tracking import parse_log_to

    try:
        parse_log_to(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def log_to_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-to`` (default ``$RELKD_LOG_TO``) to a command that trains."""
    parser.add_argument("--log-to", type=log_to_flag, default=os.environ.get("RELKD_LOG_TO") or None,
                        metavar="TRACKER",
                        help="log each run's parameters and per-epoch curves (loss parts, lr, val accuracy, "
                             "samples/s) to tensorboard:DIR or mlflow:URI (default: $RELKD_LOG_TO)")


def checkpoint_every_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--checkpoint-every N`` to a command that trains a teacher or a source checkpoint."""
    parser.add_argument("--checkpoint-every", type=integer("--checkpoint-every", 0), metavar="N",
                        help="save the training state every N epochs and resume an interrupted run from it "
                             "(default: $RELKD_CHECKPOINT_EVERY, else 10; 0: never)")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(document: Any) -> str:
    """``document`` as strict JSON: NaN and infinities (which ``json.dumps`` writes as bare
    ``NaN``/``Infinity``, not JSON) become ``null``."""
    return json.dumps(_finite(document), indent=2, allow_nan=False)


def print_json(document: Any) -> None:
    print(json_text(document))


#: The library's arguments that its errors open with (``top_k: expected ...``), and the flags
#: of the commands that give them.
FLAGS = {"top_k": "--top-k", "trial": "--trial", "seeds": "--seeds", "study_name": "--study-name",
         "evaluator": "--evaluator", "max_params": "--max-params", "max_macs": "--max-macs", "epochs": "--epochs",
         "storage": "--storage", "artifacts": "--artifacts", "files": "--file"}
#: How the library names an argument inside a message (advice), and the flag that gives it.
FLAG_PHRASES = {"the storage argument": "--storage", "StudySpec.renamed": "--study-name",
                "the max_params argument": "--max-params", "the max_macs argument": "--max-macs",
                "the trial argument": "--trial", "the trial and top_k arguments": "--trial and --top-k",
                "the artifacts argument": "--artifacts"}
_ARGUMENT = re.compile(r"^(" + "|".join(FLAGS) + r")(?=:)")
_PHRASE = re.compile("|".join(re.escape(phrase) for phrase in FLAG_PHRASES))


def as_flags(err: BaseException, flag: str | None = None) -> str:
    """The error's message as the command line says it: the arguments the library names
    (``top_k: expected an integer >= 1``, ``give the storage argument``) become the flags
    that give them (``--top-k: ...``, ``give --storage``); ``flag`` opens a message that
    names no argument. Errors of files (:class:`~relkd.fields.ConfigError`) name their
    fields and stay as they are."""
    from .fields import ConfigError

    text = str(err)
    if isinstance(err, ConfigError):
        return text
    if flag is not None and not _ARGUMENT.match(text):
        text = f"{flag}: {text}"
    text = _ARGUMENT.sub(lambda m: FLAGS[m.group(1)], text, count=1)
    return _PHRASE.sub(lambda m: FLAG_PHRASES[m.group(0)], text)


def in_flags(err: ValueError, flag: str | None = None) -> ValueError:
    """``err`` itself (same type), its message in flags (:func:`as_flags`)."""
    from .fields import ConfigError

    if not isinstance(err, ConfigError) and len(err.args) == 1 and isinstance(err.args[0], str):
        err.args = (as_flags(err, flag),)
    return err


def shows_flags(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` whose library errors (``ValueError``) name the command's flags, not the
    library's arguments; the error keeps its type, and ``relkd`` prints it as before."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ValueError as err:
            raise in_flags(err)
    return run
