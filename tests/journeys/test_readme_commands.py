"""Journey tier check: every `molhpo` command the README documents (in code blocks and inline
code, and through the `make` targets it documents) was run by a journey of this session, with
every flag the README writes with it.

The journeys record each `molhpo` command they run (``journeys_support.COMMANDS``); this test
runs after them (its file name sorts last in the folder, and it checks that it did) and compares
the two at the level of the command path ("study start", "list models", "up", ...) and of the
flags documented with each path.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from journeys_support import COMMANDS, REPO, Ran

from molhpo.cli import build_parser

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Documented:
    """A command path, the flags written with it (optional ones too) and where the README
    documents it."""

    path: str
    flags: frozenset[str]
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
    """The words of a documented command line: no comment, optional ``[...]`` parts as if
    given, a ``<placeholder>`` as one word."""
    command = re.split(r"\s#", command, maxsplit=1)[0]
    command = re.sub(r"\[([^\]]*)\]", r" \1 ", command)
    command = re.sub(r"<[^>]*>", "PLACEHOLDER", command)
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _flags(words: list[str]) -> frozenset[str]:
    return frozenset(w.split("=", 1)[0] for w in words if w.startswith("--"))


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
            found += [Documented(p, _flags(words), f"{kind}: {text}") for p in paths]
        elif text.startswith("make "):
            make_targets |= {w for w in _words(text)[1:] if "=" not in w}
    for target in sorted(make_targets):
        recipe = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n?)*)", makefile, re.M)
        assert recipe, f"README documents `make {target}`, which the Makefile lacks"
        for line in recipe.group(1).splitlines():
            m = _MOLHPO.search(line.strip())
            if m:
                words = _words(m.group(1))
                found += [
                    Documented(p, _flags(words), f"make {target}: {line.strip()}")
                    for p in command_paths(words)
                ]
    return found


def not_run(documented: list[Documented], commands: list[Ran]) -> list[str]:
    """The documented command paths no command ran, then the documented flags no command of
    that path used; commands that failed do not count."""
    ran: dict[str, set[str]] = {}  # command path -> the flags it was run with
    for c in commands:
        if c.returncode in (0, None):  # ended well, or a service/background command
            for path in command_paths(list(c.args)):
                ran.setdefault(path, set()).update(_flags(list(c.args)))
    missing = sorted({f"never run: {d.path}  ({d.where})" for d in documented if d.path not in ran})
    unused = sorted(
        {
            f"flag never used: {d.path} {flag}  ({d.where})"
            for d in documented
            if d.path in ran
            for flag in d.flags
            if flag not in ran[d.path]
        }
    )
    return missing + unused


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
    found = [(d.path, sorted(d.flags)) for d in documented_commands(text, makefile)]
    assert found == [
        ("study stop", ["--cancel"]),
        ("list models", []),
        ("list datasets", []),
        ("predict", ["--top-k"]),
        ("up", ["--slots", "--trainers"]),
        ("demo", ["--study"]),
    ]


def test_a_command_or_flag_no_journey_ran_is_named() -> None:
    readme = "```\nmolhpo study stop NAME [--cancel]\nmolhpo race start race.yaml --watch\n```\n"
    documented = documented_commands(readme, "")
    ran = [
        Ran(("study", "stop", "x"), "t", 0),
        Ran(("study", "stop", "x", "--cancel"), "t", 2),  # failed: does not count
        Ran(("race", "show", "r"), "t", 0),
    ]
    assert [p.split("  (")[0] for p in not_run(documented, ran)] == [
        "never run: race start",
        "flag never used: study stop --cancel",
    ]
    ran += [Ran(("study", "stop", "x", "--cancel"), "t", 0), Ran(("race", "start", "f"), "t", 0)]
    assert [p.split("  (")[0] for p in not_run(documented, ran)] == [
        "flag never used: race start --watch"
    ]


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
    problems = not_run(documented, COMMANDS)
    ran = sorted({" ".join(c.args[:2]) for c in COMMANDS})
    assert not problems, "\n  ".join(["README commands no journey ran:", *problems, f"ran: {ran}"])
