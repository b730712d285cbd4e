"""No function is longer than a screen: every function and method of the source, read with ast.

A function past ``MAX_LINES`` lines (from its ``def`` to its last line, docstring and nested
functions included) does several things; split it where its steps are. Generated stubs
(``*_pb2*.py``) are left out.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("molhpo", "coordinator", "trainer", "storage", "bench", "examples")
MAX_LINES = 80


@dataclass(frozen=True)
class LongFunction:
    path: str
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path}: {self.name} ({self.lines} lines)"


def long_functions(root: Path, folders: tuple[str, ...], max_lines: int) -> list[LongFunction]:
    """Every function under ``root/folders`` longer than ``max_lines`` lines, by file and line.

    A method is named ``Class.method``, a nested function ``outer.inner``.
    """
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for name, node in _functions(tree, ""):
                assert node.end_lineno is not None  # set by ast.parse
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(LongFunction(str(path.relative_to(root)), name, lines))
    return found


def _functions(
    node: ast.AST, prefix: str
) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """The functions inside ``node`` (at any depth) with their dotted names."""
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((prefix + child.name, child))
            out.extend(_functions(child, f"{prefix}{child.name}."))
        elif isinstance(child, ast.ClassDef):
            out.extend(_functions(child, f"{prefix}{child.name}."))
        else:
            out.extend(_functions(child, prefix))
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    found = long_functions(ROOT, FOLDERS, MAX_LINES)
    assert not found, f"functions longer than {MAX_LINES} lines; split them:\n  " + "\n  ".join(
        map(str, found)
    )


def test_a_long_method_is_found_by_class_file_and_length(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(
        f"class C:\n    def short(self) -> None:\n        pass\n\n"
        f"    def long(self) -> None:\n{body}\n"
    )
    (tmp_path / "pkg" / "svc_pb2.py").write_text(f"def generated() -> None:\n{body}\n{body}\n")
    found = long_functions(tmp_path, ("pkg",), 80)
    assert [str(f) for f in found] == [f"{Path('pkg/mod.py')}: C.long (81 lines)"]
