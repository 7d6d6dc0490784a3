"""The README and docs/ hold what users read: they stay short (the README), complete (every
command, every shipped study file), true (every YAML block validates, every link resolves,
the registry tables are what the registries say) and reachable (every page linked)."""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import pytest

from relkd.cli import LISTED, build_parser
from relkd.config import validate_config
from relkd.fields import yaml_load
from relkd.registry import markdown_tables
from relkd.setting import validate_setting
from relkd.study.compare import validate_compare
from relkd.study.spec import validate_study

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: What a fragment (a block with some sections of a setting or study file only) is checked on top of.
BASE = {"name": "docs", "data": {"dataset": "fashion-mnist"}, "teacher": {"model": "cnn_small", "epochs": 1},
        "student": {"model": "cnn_tiny"}, "budget": {"epochs": 3}}


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """(line, text) of every fenced code block in ``language``."""
    out, lines = [], _text(page).splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            out.append((i + 1, "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return out


def _commands(parser: argparse.ArgumentParser, prefix: str = "relkd") -> list[str]:
    """Every command path the parser knows: ``relkd list``, ``relkd study run`` ..."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                inner = _commands(sub, f"{prefix} {name}")
                out += inner or [f"{prefix} {name}"]
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def validate_block(document: object) -> None:
    """Validate a documented YAML block by what it is: an objective config, a compare file, a
    whole setting or study file, or a fragment of one (checked on top of :data:`BASE`)."""
    assert isinstance(document, dict), "a documented YAML block is a mapping"
    if "relkd_config" in document:
        validate_config(document)
    elif "compare" in document:
        validate_compare(_merge(BASE, document))
    elif "search" in document or "optuna" in document:
        validate_study(_merge(BASE, document), check_taps=False)
    else:
        validate_setting(_merge(BASE, document))


def test_the_readme_is_short_and_opens_with_the_two_commands():
    lines = _text(README).splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; guides, reference and numbers go to docs/"
    opening = "\n".join(lines[:6])
    assert "bash scripts/demo.sh" in opening and "bash scripts/test.sh" in opening
    assert "bash scripts/test.sh" in _text(ROOT / ".ci" / "run"), "CI must run the README's test command"


def test_every_command_is_in_the_command_line_reference():
    text = _text(ROOT / "docs" / "cli.md")
    commands = _commands(build_parser())
    assert "relkd study run" in commands and "relkd list" in commands  # the walk finds nested commands
    missing = [c for c in commands if c not in text]
    assert not missing, f"commands docs/cli.md does not list: {missing}"


def test_every_shipped_study_file_is_documented():
    text = "\n".join(_text(p) for p in PAGES)
    files = sorted((ROOT / "studies").glob("*.yaml"))
    assert len(files) >= 10
    missing = [f.name for f in files if f.name not in text]
    assert not missing, f"files in studies/ that no page names: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_yaml_block_validates(page, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the examples are relative to the repository, as a user runs them
    for line, block in _blocks(page, "yaml"):
        try:
            validate_block(yaml_load(block))
        except Exception as err:  # noqa: BLE001 - the message names the page and the line
            pytest.fail(f"{page.name}:{line}: the YAML block does not validate: {err}")


@pytest.mark.parametrize("block", [
    "relkd_config: 1\nterms: [{tap: pool, affinity: {name: cosin}}]",
    "search: {affinity: [dot, nope]}",
    "data: {dataset: fashion-mnist, labelled: -3}",
    "compare: {methods: [sp], seeds: zero}",
])
def test_a_wrong_block_is_caught(block):
    with pytest.raises(Exception):
        validate_block(yaml_load(block))


def test_every_relative_link_resolves_and_every_page_is_reachable():
    linked = set()
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.name}: the link {target} points at nothing"
            linked.add(path)
    unreachable = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unreachable, f"docs pages no page links to: {unreachable}"


def test_the_registry_tables_are_what_the_registries_say():
    written = _text(ROOT / "docs" / "registries.md")
    assert written == markdown_tables(LISTED) + "\n", "run: relkd list --markdown > docs/registries.md"
    for kind, registry in LISTED.items():
        for name in registry:
            assert f"| `{name}` |" in written, (kind, name)


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_every_module_is_placed_in_the_architecture_page():
    """A reader finds the job of any module in docs/architecture.md: every module of relkd/ is
    named there, by its file name or (for the small packages described as one) its folder."""
    text = _text(ARCHITECTURE).split("## Where to add", 1)[0]
    missing = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "relkd").rglob("*.py"))
               if f.name != "__init__.py" and f"`{f.name}`" not in text and f"{f.name}`" not in text
               and f"`{f.parent.name}/`" not in text and f"relkd/{f.parent.name}/`" not in text]
    assert not missing, f"modules docs/architecture.md does not place: {missing}"


def test_every_word_of_the_glossary_points_at_code_that_exists():
    """The glossary ("Words: one per concept") names, for each concept, where it lives: every
    path exists, and a name given after a path (``relkd/terms.py: TERM_KINDS``) is defined in
    that file."""
    rows = [line for line in _section(_text(ARCHITECTURE), "Words").splitlines()
            if line.startswith("| **")]
    assert len(rows) >= 15
    for row in rows:
        word, _, where = (cell.strip() for cell in row.strip("|").split(" | "))
        places = re.findall(r"`([^`]+)`", where)
        assert places, f"{word}: no place named"
        folder = None
        for place in places:
            path, _, name = place.partition(": ")
            target = ROOT / path if path.startswith("relkd/") else folder / path if folder else None
            assert target is not None and target.exists(), f"{word}: {place} does not exist"
            folder = target.parent if target.is_file() else target
            if name:
                assert re.search(rf"^(class |def )?{re.escape(name)}\b", target.read_text(), re.M), \
                    f"{word}: {name} is not defined in {path}"
