"""No two trainer modules import each other, directly or around a loop, read from the source.

Every import statement counts, including those inside functions: a lazy import hides a cycle
from the interpreter but not from a reader. Importing ``a.b.c`` runs the packages ``a`` and
``a.b`` first, so those count as imported too, except the packages the importing module lies
in (they are already being imported when it runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = "trainer"


def module_name(path: Path, root: Path) -> str:
    """``trainer/training/loop.py`` -> ``trainer.training.loop``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def ancestors(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules among ``known`` that ``module`` (the source at ``path``) imports."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            named.add(origin)
            named.update(f"{origin}.{alias.name}" for alias in node.names)
    out: set[str] = set()
    for name in named & known:
        out.add(name)
        out.update(p for p in ancestors(name) if p in known)
    return out - {module, *ancestors(module)}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` under ``root`` -> the modules of ``package`` it imports."""
    paths = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    known = set(paths)
    return {m: imported_modules(p, m, known) for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = _pop_component(stack, on_stack, v)
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    """Pop Tarjan's stack down to ``root``: the strongly connected component ``root`` heads."""
    component = []
    while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == root:
            return component


def test_no_trainer_modules_import_each_other() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert "trainer.predict" in graph and "trainer.checkpoint" in graph
    found = cycles(graph)
    assert not found, "trainer modules that import each other (around a loop):\n  " + "\n  ".join(
        " <-> ".join(c) for c in found
    )


def test_predictions_and_training_share_the_checkpoint_module_not_each_other() -> None:
    graph = import_graph(ROOT, PACKAGE)
    training = {m for m in graph if m.startswith("trainer.training")}
    assert not graph["trainer.predict"] & training
    assert not any("trainer.predict" in graph[m] for m in training)
    assert "trainer.checkpoint" in graph["trainer.predict"]
    assert not graph["trainer.checkpoint"] & (training | {"trainer.predict"})


def test_a_lazy_import_closes_a_loop(tmp_path: Path) -> None:
    pkg = tmp_path / "trainer"
    (pkg / "training").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "training" / "__init__.py").write_text("from trainer.training.loop import train\n")
    (pkg / "training" / "loop.py").write_text("from trainer.predict import inputs\n")
    (pkg / "predict.py").write_text("def build():\n    from .training.loop import lock\n")
    (pkg / "alone.py").write_text("import trainer.training.loop\n")
    graph = import_graph(tmp_path, "trainer")
    assert graph["trainer.alone"] == {"trainer.training", "trainer.training.loop"}
    assert cycles(graph) == [["trainer.predict", "trainer.training", "trainer.training.loop"]]
