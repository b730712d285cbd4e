"""The layering, read from the source: who may import whom.

The coordinator and the trainer never import each other; both import the contract
(``molhpo/contract``), which imports neither service nor the ML stack; storage sits below both
services; the data-set readers (``molhpo/datasets``) are shared by both and never load torch.
Every import statement counts, including those inside functions (a lazy import is still a
dependency), relative ones, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    """Modules under ``folder`` must not import ``forbidden`` (nor anything inside them)."""

    folder: str
    forbidden: tuple[str, ...]
    why: str


ML_STACK = ("torch", "torch_geometric", "rdkit", "optuna")

RULES = (
    Rule(
        "coordinator",
        ("trainer",),
        "the coordinator runs without the trainer (and its torch); shared code belongs in "
        "molhpo/contract or molhpo/",
    ),
    Rule(
        "trainer",
        ("coordinator",),
        "the trainer never depends on the coordinator; shared code belongs in molhpo/contract "
        "or molhpo/",
    ),
    Rule(
        "molhpo/contract",
        ("coordinator", "trainer", *ML_STACK),
        "the contract is what both services agree on: it loads neither service nor the ML stack",
    ),
    Rule(
        "storage",
        ("coordinator", "trainer"),
        "storage sits below both services and knows neither",
    ),
    Rule(
        "molhpo/datasets",
        ("coordinator", "trainer", "torch", "torch_geometric", "optuna"),
        "the data-set readers are shared by both services and need RDKit and numpy only",
    ),
)


def module_name(path: Path) -> str:
    """``coordinator/optimizer/pruners.py`` -> ``coordinator.optimizer.pruners``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_import_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in ("import_module", "__import__")


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the source of ``module``.

    ``from a import b`` yields ``a`` (enough for a rule on ``a`` or on a package above it) and
    ``a.b`` (``b`` may be a submodule a rule names).
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            yield node.lineno, origin
            for alias in node.names:
                yield node.lineno, f"{origin}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and _is_import_call(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(rule: Rule) -> list[str]:
    folder = ROOT / rule.folder
    files = sorted(folder.rglob("*.py"))
    assert files, f"{rule.folder}/ holds no Python files: update the rule to the new layout"
    found = []
    for path in files:
        name = module_name(path)
        seen = set()
        for line, imported in imports_of(
            path.read_text(encoding="utf-8"), name, path.stem == "__init__"
        ):
            bad = next((p for p in rule.forbidden if is_within(imported, p)), None)
            if bad is not None and (line, bad) not in seen:
                seen.add((line, bad))
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize("rule", RULES, ids=[r.folder for r in RULES])
def test_no_module_crosses_a_boundary(rule: Rule) -> None:
    found = violations(rule)
    assert not found, (
        f"{rule.folder}/ must not import {', '.join(rule.forbidden)} ({rule.why}):\n  "
        + "\n  ".join(found)
    )


def test_every_kind_of_import_is_read() -> None:
    source = """
import trainer.worker
from trainer import catalogue
from . import sibling
from ..other import thing

def later():
    from torch import nn
    import importlib
    importlib.import_module("rdkit.Chem")
"""
    found = {name for _line, name in imports_of(source, "coordinator.optimizer.pruners")}
    assert {
        "trainer.worker",
        "trainer",
        "trainer.catalogue",
        "coordinator.optimizer",
        "coordinator.optimizer.sibling",
        "coordinator.other",
        "coordinator.other.thing",
        "torch",
        "rdkit.Chem",
    } <= found
    package = {n for _l, n in imports_of("from . import x", "molhpo.contract", is_package=True)}
    assert package == {"molhpo.contract", "molhpo.contract.x"}


def test_a_prefix_is_not_a_package() -> None:
    assert is_within("trainer.worker", "trainer")
    assert not is_within("trainer_tools", "trainer")
    assert not is_within("torch_geometric", "torch")
