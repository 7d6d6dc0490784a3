"""Run many ``relkd`` command lines in one process, as the CLI fuzz needs them (starting
Python and torch once per case would take minutes): each case goes through
``relkd.cli.main`` exactly as the ``relkd`` script calls it, with stdout and stderr
captured, and the files under the watched folders listed before and after.

    python tests/cli_driver.py CASES.json RESULTS.json

CASES.json: ``{"watch": [folders], "cases": [{"argv": [...], "cwd": folder}, ...]}``.
RESULTS.json: for each case its exit status, stdout, stderr, whether an exception escaped
``main`` (what would print a traceback) and the paths created under the watched folders.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path


def snapshot(folders: list[str]) -> set[str]:
    found = set()
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            found.update(os.path.join(root, name) for name in dirs + files)
    return found


def run_case(main, argv: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse, -h and --version
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:  # what the relkd script would show as a traceback
            code, escaped = 1, traceback.format_exc()
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": escaped}


def main() -> None:
    import logging

    from relkd.cli import main as relkd_main

    spec = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for case in spec["cases"]:
        os.chdir(case["cwd"])
        logging.getLogger().handlers.clear()  # relkd's main configures logging once per process
        before = snapshot(spec["watch"])
        result = run_case(relkd_main, case["argv"])
        result["created"] = sorted(snapshot(spec["watch"]) - before)
        results.append(result)
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
