"""What each role installs (pyproject.toml) covers what its code imports; torch stays out of
the base install and the coordinator's extra, and only constraints.txt pins its version.

The roles: the command line and client (the base install), ``molhpo[coordinator]``,
``molhpo[trainer]``, and ``molhpo up`` (both services and the redis-server wheel). Every import
statement of a role's files counts, those inside functions too.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"molhpo", "coordinator", "trainer", "storage"}
# Modules of optional extras that the dev install leaves out, so no installed metadata names
# their distribution.
NOT_INSTALLED_HERE = {"pynvml": "nvidia-ml-py"}

CLIENT = [
    *(p for p in (ROOT / "molhpo").glob("*.py") if p.name not in {"local.py", "demo.py"}),
    ROOT / "molhpo" / "contract",
]
ROLES: dict[str, tuple[list[Path], tuple[str, ...]]] = {
    "client": (CLIENT, ()),
    "coordinator": (
        [
            ROOT / "coordinator",
            ROOT / "molhpo" / "datasets",
            *(p for p in (ROOT / "storage").glob("*.py") if p.name != "artifacts.py"),
        ],
        ("coordinator",),
    ),
    "trainer": (
        [
            ROOT / "trainer",
            ROOT / "molhpo" / "datasets",
            *(ROOT / "storage" / f for f in ("artifacts.py", "decisions.py", "keys.py")),
            ROOT / "storage" / "redis_conn.py",
        ],
        ("trainer", "gpu"),
    ),
    "molhpo up": (
        [ROOT / "molhpo" / "local.py", ROOT / "molhpo" / "demo.py"],
        ("coordinator", "trainer", "redis-server"),
    ),
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])


def requirements(extras: tuple[str, ...]) -> set[str]:
    """The distributions the base install and ``extras`` name, self-references expanded."""
    names: set[str] = set()
    todo = [
        *PROJECT["dependencies"],
        *(r for e in extras for r in PROJECT["optional-dependencies"][e]),
    ]
    while todo:
        req = todo.pop()
        name = _requirement_name(req)
        if name == "molhpo":
            inner = re.search(r"\[([^]]*)\]", req)
            for e in inner.group(1).split(",") if inner else ():
                todo += PROJECT["optional-dependencies"][e.strip()]
        else:
            names.add(name)
    return names


def third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Top-level modules outside the standard library and this project that ``paths`` import,
    each with the first place ("file:line")."""
    found: dict[str, str] = {}
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for m in modules:
                top = m.split(".")[0]
                if top in OWN or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.setdefault(top, f"{f.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_import_of_a_role_is_installed_by_its_extras(role: str) -> None:
    paths, extras = ROLES[role]
    installed = requirements(extras)
    providers = packages_distributions()
    problems = []
    for module, where in sorted(third_party_imports(paths).items()):
        dists = {_normal(d) for d in providers.get(module, [])}
        dists |= {NOT_INSTALLED_HERE[module]} if module in NOT_INSTALLED_HERE else set()
        if not dists & installed:
            problems.append(f"{where}: imports {module} ({', '.join(sorted(dists)) or '?'})")
    install = "molhpo" + (f"[{','.join(extras)}]" if extras else "")
    assert not problems, f"{install} does not install:\n  " + "\n  ".join(problems)


def test_the_base_install_and_the_coordinator_extra_leave_torch_out() -> None:
    ml = {"torch", "torch-geometric", "rdkit", "optuna", "numpy"}
    assert not requirements(()) & ml
    assert not requirements(("coordinator",)) & {"torch", "torch-geometric"}
    assert {"torch", "torch-geometric"} <= requirements(("trainer",))


def test_torch_is_a_range_in_the_metadata_and_a_pin_in_the_constraints() -> None:
    every = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        every += extra
    torch = [r for r in every if _requirement_name(r) == "torch"]
    assert torch and not any("==" in r for r in torch), torch
    pins = [
        ln.split("#")[0].strip()
        for ln in (ROOT / "constraints.txt").read_text().splitlines()
        if ln.split("#")[0].strip()
    ]
    assert any(re.fullmatch(r"torch==\d+\.\d+\.\d+", p) for p in pins), pins


def test_make_installs_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [
        ln for ln in makefile.splitlines() if "$(PIP) install" in ln and "--upgrade pip" not in ln
    ]
    assert installs and all("-c constraints.txt" in ln for ln in installs), installs
