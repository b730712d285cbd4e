"""Journey tier check: every `molhpo` command the README documents (in code blocks and inline
code, and through the `make` targets it documents) was run by a journey of this session.

The journeys record each `molhpo` command they run (``journeys_support.COMMANDS``); this test
runs after them (its file name sorts last in the folder, and it checks that it did) and compares
the two at the level of the command path: "study start", "list models", "up", ...
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from journeys_support import COMMANDS, REPO

from molhpo.cli import build_parser

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Documented:
    """A command path and where the README documents it."""

    path: str
    where: str


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _positional_choices(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if (
            not action.option_strings
            and action.choices
            and not isinstance(action, argparse._SubParsersAction)
        ):
            return [str(c) for c in action.choices]
    return []


def command_paths(tokens: list[str]) -> list[str]:
    """The command paths of the words after ``molhpo``: "study show" for ``study show NAME
    --trials``; a positional with fixed choices joins the path, alternatives written with ``|``
    each give one ("list models | datasets" gives "list models" and "list datasets"). Empty when
    the first word is no subcommand of the CLI."""
    parser = build_parser()
    path: list[str] = []
    rest = list(tokens)
    while rest and (subs := _subparsers(parser)):
        if rest[0] not in subs:
            return [] if not path else [" ".join(path)]
        path.append(rest.pop(0))
        parser = subs[path[-1]]
    choices = _positional_choices(parser)
    if not choices:
        return [" ".join(path)]
    picked = []
    for word in rest:
        if word in choices:
            picked.append(word)
        elif word != "|":
            break
    return [" ".join([*path, c]) for c in picked] or [" ".join(path)]


def _words(command: str) -> list[str]:
    """The words of a documented command line: no comment, no optional ``[...]`` parts, no
    ``<placeholder>``."""
    command = re.split(r"\s#", command, maxsplit=1)[0]
    command = re.sub(r"\[[^\]]*\]", " ", command)
    command = re.sub(r"<[^>]*>", "PLACEHOLDER", command)
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


_MOLHPO = re.compile(r"(?:^|(?<=[\s/]))molhpo\s+(.+)$")


def documented_commands(readme: str, makefile: str) -> list[Documented]:
    """Every ``molhpo`` command of the README, and those the ``make`` targets it names run."""
    found: list[Documented] = []
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme, flags=re.S | re.M)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", readme, flags=re.S | re.M)
    snippets = [(ln, "code block") for b in blocks for ln in b.splitlines()]
    snippets += [(s, "inline code") for s in re.findall(r"`([^`\n]+)`", prose)]
    make_targets: set[str] = set()
    for raw, kind in snippets:
        text = raw.strip()
        m = _MOLHPO.search(text)
        if m:
            words = _words(m.group(1))
            paths = command_paths(words)
            assert paths, f"README ({kind}) documents `{text}`, which the molhpo CLI lacks"
            found += [Documented(p, f"{kind}: {text}") for p in paths]
        elif text.startswith("make "):
            make_targets |= {w for w in _words(text)[1:] if "=" not in w}
    for target in sorted(make_targets):
        recipe = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n?)*)", makefile, re.M)
        assert recipe, f"README documents `make {target}`, which the Makefile lacks"
        for line in recipe.group(1).splitlines():
            m = _MOLHPO.search(line.strip())
            if m:
                found += [
                    Documented(p, f"make {target}: {line.strip()}")
                    for p in command_paths(_words(m.group(1)))
                ]
    return found


def test_the_readme_parser_reads_command_paths() -> None:
    text = """
```sh
molhpo study stop freesolv-gin [--cancel]
molhpo list models | datasets   # two of them
.venv/bin/molhpo predict <printed name> CCO [--top-k 3]
pip install molhpo[qm9]
```
Run `molhpo up --trainers 1 --slots 64`; `molhpo.v1.StudyService` is the API; `make demo`.
"""
    makefile = "demo: x\n\t$(VENV)/bin/molhpo demo --study examples/freesolv_gin.yaml\n"
    paths = [d.path for d in documented_commands(text, makefile)]
    assert paths == ["study stop", "list models", "list datasets", "predict", "up", "demo"]


def test_every_command_the_readme_documents_was_run_by_a_journey(
    request: pytest.FixtureRequest,
) -> None:
    items = request.session.items
    me = items.index(request.node)
    journeys = [i for i in items if i.path.parent == HERE and i.path != Path(__file__)]
    modules = {p.name for p in HERE.glob("test_*.py")} - {Path(__file__).name}
    if {i.path.name for i in journeys} != modules:
        pytest.skip("only part of the journey tier runs in this session: run tests/journeys")
    assert all(items.index(i) < me for i in journeys), "the README check must run last"

    documented = documented_commands(
        (REPO / "README.md").read_text(), (REPO / "Makefile").read_text()
    )
    assert documented, "no molhpo command found in README.md"
    ran: dict[str, list[str]] = {}
    for c in COMMANDS:
        if c.returncode in (0, None):  # ended well, or a service/background command
            for path in command_paths(list(c.args)):
                ran.setdefault(path, []).append(c.test)
    missing = sorted({f"{d.path}  ({d.where})" for d in documented if d.path not in ran})
    assert not missing, (
        "README commands no journey ran:\n  "
        + "\n  ".join(missing)
        + "\nran: "
        + ", ".join(sorted(ran))
    )
