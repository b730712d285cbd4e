"""Data sets from the user's own files: molecules (CSV or SD file) and plain numeric tables.

Trainers read such files from folders the operator allowed (``roots``); every path is resolved,
symlinks included, and refused unless it lies inside one of them, so a request cannot make a
trainer read ``../../etc/passwd``. CSV files are read with the standard library (no pandas), SD
files with RDKit's SDMolSupplier. Unusable rows are dropped and counted as for the bundled sets;
call :func:`~molhpo.datasets.table.check_invalid_share` to refuse files with too many of them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets.builtin import add_sdf_text
from molhpo.datasets.table import MoleculeTable, TableBuilder

USER_FORMATS: tuple[str, ...] = ("csv", "sdf")
"""File formats :func:`load_user_file` reads (chosen from the suffix unless given)."""


def resolve_confined(path: str | Path, roots: Sequence[Path]) -> Path:
    """``path`` resolved (symlinks followed), refused unless inside one of ``roots``.

    A relative path is taken relative to the first root. The check comes before any existence
    check, so nothing is revealed about files outside the roots. Missing files and folders raise
    InvalidArgument naming the path.
    """
    if not roots:
        raise InvalidArgument(
            "no data folders are allowed (roots is empty); configure at least one folder the "
            "trainer may read user files from"
        )
    resolved_roots = [Path(root).resolve() for root in roots]
    if "\x00" in str(path) or len(str(path)) > 4096:
        raise InvalidArgument("data file path holds a NUL byte or is too long; give a plain path")
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = resolved_roots[0] / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, ValueError, RuntimeError) as err:
        raise InvalidArgument(f"data file path cannot be resolved: {err}") from None
    if not any(resolved.is_relative_to(root) for root in resolved_roots):
        raise InvalidArgument(
            f"path '{path}' resolves to '{resolved}', outside the allowed data folders "
            f"({', '.join(str(r) for r in resolved_roots)}); put the file inside one of them"
        )
    try:
        exists, is_file = resolved.exists(), resolved.is_file()
    except (OSError, ValueError) as err:
        raise InvalidArgument(f"data file path cannot be used: {err}") from None
    if not exists:
        raise InvalidArgument(f"data file '{path}' does not exist (looked for '{resolved}')")
    if not is_file:
        raise InvalidArgument(f"data file '{path}' is not a regular file ('{resolved}')")
    return resolved


def user_table_name(path: Path) -> str:
    """The table name of user file ``path``: "file:" and its resolved path.

    Unique per file, so it never collides with a bundled data set's name (the featurizer cache
    is keyed by table name). A file changed on disk keeps its name: restart the trainer or
    copy it under a new name after changing it.
    """
    return f"file:{path}"


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and each row's line number (1-based, the header is line 1) of a CSV file
    (UTF-8, BOM allowed); rows padded/cut to the header, blank rows skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append(row)
                    # line_num counts physical lines read so far; a quoted cell may span several
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            f"CSV file '{path}' is not UTF-8 text ({err.reason}); save it as UTF-8"
        ) from None
    except csv.Error as err:
        raise InvalidArgument(f"CSV file '{path}' cannot be parsed: {err}; fix the file") from None
    if not header:
        raise InvalidArgument(f"CSV file '{path}' is empty; it needs a header row and data rows")
    header = [name.strip() for name in header]
    width = len(header)
    return header, [(row + [""] * width)[:width] for row in rows], lines


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _column_index(path: Path, header: list[str], name: str, what: str) -> int:
    if name not in header:
        raise InvalidArgument(
            f"{what} '{name}' is not a column of '{path.name}'; its columns are: "
            f"{', '.join(header)}"
        )
    return header.index(name)


def _numeric_columns(header: list[str], rows: list[list[str]], skip: set[str]) -> list[str]:
    """Columns (other than ``skip``) whose non-empty cells all parse as numbers."""
    found = []
    for j, name in enumerate(header):
        cells = [row[j].strip() for row in rows if row[j].strip()]
        if name not in skip and cells and all(_is_number(c) for c in cells):
            found.append(name)
    return found


def _load_csv(
    path: Path, smiles_column: str, target_columns: Sequence[str] | None
) -> MoleculeTable:
    header, rows, lines = _read_csv(path)
    s = _column_index(path, header, smiles_column, "SMILES column")
    if target_columns is None:
        targets = _numeric_columns(header, rows, {smiles_column})
        if not targets:
            raise InvalidArgument(
                f"CSV file '{path.name}' has no numeric column besides '{smiles_column}' to use "
                f"as a target (columns: {', '.join(header)}); add one or name it in target_columns"
            )
    else:
        targets = list(target_columns)
    indices = [_column_index(path, header, name, "target column") for name in targets]
    builder = TableBuilder(user_table_name(path), "", targets)
    with rdBase.BlockLogs():
        for line, row in zip(lines, rows, strict=True):
            smi = row[s].strip()
            mol = Chem.MolFromSmiles(smi) if smi else None
            builder.add(smi, mol, [row[j].strip() or None for j in indices], smiles=smi, row=line)
    return builder.build()


def _load_sdf(path: Path, target_columns: Sequence[str] | None) -> MoleculeTable:
    if not target_columns:
        with rdBase.BlockLogs():
            first = next((m for m in Chem.SDMolSupplier(str(path)) if m is not None), None)
        props = ", ".join(first.GetPropNames()) if first is not None else "none found"
        raise InvalidArgument(
            f"SD file '{path.name}' needs target_columns naming the SD properties to predict; "
            f"its first molecule has: {props}"
        )
    builder = TableBuilder(user_table_name(path), "", list(target_columns))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            f"SD file '{path}' is not UTF-8 text ({err.reason}); save it as UTF-8"
        ) from None
    add_sdf_text(builder, text)
    return builder.build()


def load_user_file(
    path: str | Path,
    *,
    roots: Sequence[Path],
    format: str | None = None,
    smiles_column: str = "smiles",
    target_columns: Sequence[str] | None = None,
) -> MoleculeTable:
    """A MoleculeTable from the user's CSV or SD file ``path`` (confined to ``roots``).

    ``format`` is "csv" or "sdf"; None takes it from the suffix (.csv, .sdf). CSV: SMILES from
    ``smiles_column`` (kept as written), targets from ``target_columns`` (None: every numeric
    column except the SMILES column, in file order). SD files: SMILES are RDKit's canonical
    SMILES of each record and ``target_columns`` (required) name SD properties;
    ``smiles_column`` is not used. The table is named by :func:`user_table_name` and has no
    units.

    With one target, ``targets`` holds it and ``target_matrix`` is None; with several,
    ``target_matrix`` is [n, tasks] in ``target_names`` order and ``targets`` is its first
    column (the training loop uses only that first target for now). Rows with an unparsable
    SMILES or a missing/non-numeric target are dropped and counted in ``n_invalid``.
    """
    resolved = resolve_confined(path, roots)
    kind = format if format is not None else resolved.suffix.lower().lstrip(".")
    if kind not in USER_FORMATS:
        raise InvalidArgument(
            f"unknown data file format '{kind}' for '{path}'; choose one of: "
            f"{', '.join(USER_FORMATS)} (pass format= or use a .csv or .sdf suffix)"
        )
    if target_columns is not None and len(target_columns) == 0:
        raise InvalidArgument("target_columns is empty; name at least one, or pass None")
    if kind == "csv":
        return _load_csv(resolved, smiles_column, target_columns)
    return _load_sdf(resolved, target_columns)


@dataclass(frozen=True)
class TabularTable:
    """A plain numeric table: ``features`` float64 [n, f], ``targets`` float64 [n].

    ``feature_names`` names the columns of ``features``; ``n_invalid`` counts rows dropped
    because a value was empty or not finite ("nan", "inf"). Arrays are read-only.
    """

    name: str
    features: np.ndarray
    targets: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    n_invalid: int = 0

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def load_tabular_csv(
    path: str | Path,
    target_column: str,
    feature_columns: Sequence[str] | None = None,
    *,
    roots: Sequence[Path],
) -> TabularTable:
    """A :class:`TabularTable` from a CSV of numbers without molecules (confined to ``roots``).

    ``feature_columns`` None means every column except ``target_column``. A cell with text that
    is not a number raises InvalidArgument naming its row and column (usually a wrong column
    choice); rows with empty, "nan" or infinite values are dropped and counted.
    """
    resolved = resolve_confined(path, roots)
    header, rows, lines = _read_csv(resolved)
    t = _column_index(resolved, header, target_column, "target column")
    names = (
        [n for n in header if n != target_column]
        if feature_columns is None
        else list(feature_columns)
    )
    if not names:
        raise InvalidArgument(
            f"CSV file '{resolved.name}' has no feature columns besides '{target_column}'; "
            "add some or name them in feature_columns"
        )
    indices = [_column_index(resolved, header, n, "feature column") for n in names]
    features: list[list[float]] = []
    targets: list[float] = []
    n_invalid = 0
    for line, row in zip(lines, rows, strict=True):
        values: list[float] = []
        for j in [*indices, t]:
            cell = row[j].strip()
            if not cell:
                values.append(math.nan)
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise InvalidArgument(
                    f"column '{header[j]}' of '{resolved.name}' has {cell!r} in row {line}, "
                    "not a number; fix the cell or leave the column out of feature_columns"
                ) from None
        if not all(math.isfinite(v) for v in values):
            n_invalid += 1
            continue
        features.append(values[:-1])
        targets.append(values[-1])
    feature_array = np.asarray(features, dtype=np.float64).reshape(len(targets), len(names))
    target_array = np.asarray(targets, dtype=np.float64)
    feature_array.flags.writeable = False
    target_array.flags.writeable = False
    return TabularTable(
        name=user_table_name(resolved),
        features=feature_array,
        targets=target_array,
        feature_names=tuple(names),
        target_name=target_column,
        n_invalid=n_invalid,
    )
