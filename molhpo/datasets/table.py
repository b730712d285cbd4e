"""The table every molecular data-set loader returns, and the builder that fills it.

Every loader (bundled files, user files, QM9) goes through :class:`TableBuilder`, so the rules
for unusable rows are the same everywhere: a row whose molecule RDKit cannot parse, or whose
target is missing or not a finite number, is dropped and counted by cause (``invalid_counts``),
and the first few of each cause are kept with their row numbers (``invalid_rows``).
:func:`check_invalid_share` turns "too many dropped rows" into a clear error instead of silently
training on a fraction of a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem

from molhpo.contract.errors import Internal, InvalidArgument

MAX_INVALID_EXAMPLES = 5
"""How many unusable rows a table keeps as examples for error reports."""

MAX_INVALID_ROWS = 20
"""How many dropped rows a table keeps with their row number and cause (all causes together)."""

UNPARSABLE_SMILES = "unparsable_smiles"
MISSING_TARGET = "missing_target"
NON_NUMERIC_TARGET = "non_numeric_target"
INVALID_CAUSES: tuple[str, ...] = (UNPARSABLE_SMILES, MISSING_TARGET, NON_NUMERIC_TARGET)
"""Why a row is dropped: RDKit cannot parse its molecule; a target cell is empty or NaN; a
target cell is text that is not a number, or an infinite one."""

CAUSE_WORDS: dict[str, str] = {
    UNPARSABLE_SMILES: "SMILES RDKit cannot parse",
    MISSING_TARGET: "missing target",
    NON_NUMERIC_TARGET: "non-numeric target",
}
"""Each cause in words, for messages and reports."""

MAX_INVALID_SHARE = 0.1
"""Default largest share of unusable rows :func:`check_invalid_share` accepts (10%)."""

GIVEN_SPLIT_LABELS: tuple[str, ...] = ("train", "valid", "test")
"""The labels ``MoleculeTable.given_split`` may hold."""


@dataclass(frozen=True)
class Conformer:
    """One 3D structure: atomic numbers ``z`` (int64 [atoms]) and positions ``pos``.

    ``pos`` is float64 [atoms, 3] in ångström, in the atom order of ``z`` (hydrogens included
    where the source has them, as in QM9). Both arrays are read-only.
    """

    z: np.ndarray
    pos: np.ndarray

    def __post_init__(self) -> None:
        if self.z.ndim != 1 or self.pos.shape != (len(self.z), 3):
            raise Internal(
                f"conformer has z of shape {self.z.shape} and pos of shape {self.pos.shape}; "
                "pos must be [atoms, 3] with one row per entry of z"
            )


@dataclass(frozen=True)
class InvalidRow:
    """A source row that was dropped: where it is, what it held and why.

    ``row`` is the 1-based line of a CSV file (the header is line 1) or the 1-based record of an
    SD file (0 when the loader does not know it); ``text`` is its SMILES as written, or
    "record N"; ``cause`` is one of :data:`INVALID_CAUSES`; ``detail`` says it in words, naming
    the column and the value.
    """

    row: int
    text: str
    cause: str
    detail: str


@dataclass(frozen=True)
class MoleculeTable:
    """Molecules of a data set with their regression target(s).

    ``targets`` has shape [n] (float64, read-only) and lines up with ``smiles``; for a
    multi-task table it is the first target. ``target_names`` names the targets (empty for
    tables built before names were kept). ``target_matrix`` is None for single-target tables
    and float64 [n, tasks] (read-only, column 0 equal to ``targets``) for multi-task ones; the
    training loop only uses ``targets`` for now, i.e. the first target.

    ``n_invalid`` counts source rows dropped because RDKit could not parse their molecule or a
    target was missing or not finite; ``invalid_counts`` splits it by cause (every cause of
    :data:`INVALID_CAUSES` present, zeros included), ``invalid_rows`` keeps the first dropped rows
    with row number and cause, and ``invalid_examples`` the first few texts (their SMILES, or
    "record N" for SD files) for short messages.

    ``given_split`` is None, or a read-only string array [n] of labels "train", "valid" or
    "test" when the source comes with its own split (e.g. the solubility set's train and test
    files); ``split_dataset(table, "given")`` uses it. ``conformers`` is None, or one
    :class:`Conformer` per row when the source has 3D coordinates (QM9).
    """

    name: str
    smiles: list[str]
    targets: np.ndarray
    units: str
    n_invalid: int = 0
    invalid_examples: tuple[str, ...] = field(default_factory=tuple)
    invalid_rows: tuple[InvalidRow, ...] = field(default_factory=tuple)
    invalid_counts: dict[str, int] = field(default_factory=dict)
    given_split: np.ndarray | None = None
    target_names: tuple[str, ...] = field(default_factory=tuple)
    target_matrix: np.ndarray | None = None
    conformers: tuple[Conformer, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.smiles)
        problems = []
        if self.targets.shape != (n,):
            problems.append(f"targets has shape {self.targets.shape}, expected ({n},)")
        if self.given_split is not None:
            if self.given_split.shape != (n,):
                problems.append(f"given_split has shape {self.given_split.shape}, expected ({n},)")
            elif not np.isin(self.given_split, GIVEN_SPLIT_LABELS).all():
                problems.append(f"given_split holds labels other than {GIVEN_SPLIT_LABELS}")
        if self.target_matrix is not None and (
            self.target_matrix.ndim != 2 or self.target_matrix.shape[0] != n
        ):
            problems.append(f"target_matrix has shape {self.target_matrix.shape}, expected (n, k)")
        if self.conformers is not None and len(self.conformers) != n:
            problems.append(f"{len(self.conformers)} conformers for {n} molecules")
        if problems:
            raise Internal(f"inconsistent MoleculeTable '{self.name}': {'; '.join(problems)}")

    def __len__(self) -> int:
        return len(self.smiles)

    @property
    def n_tasks(self) -> int:
        """How many targets each molecule has (1 unless ``target_matrix`` is set)."""
        return 1 if self.target_matrix is None else int(self.target_matrix.shape[1])


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _to_float(value: str | float | None) -> float:
    """``value`` as a float, NaN when it is missing or not a number (so the row is dropped)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def target_problem(name: str, value: str | float | None) -> tuple[str, str] | None:
    """Why target ``name`` with cell ``value`` makes its row unusable, as (cause, detail); None
    when it is a finite number. Empty cells and NaN are missing; text and infinities are not
    numbers."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING_TARGET, f"target '{name}' is empty"
    number = _to_float(value)
    if math.isnan(number):
        if isinstance(value, str) and value.strip().lower() in ("nan", "+nan", "-nan"):
            return MISSING_TARGET, f"target '{name}' is {value.strip()!r} (missing)"
        if not isinstance(value, str):
            return MISSING_TARGET, f"target '{name}' is NaN (missing)"
        return NON_NUMERIC_TARGET, f"target '{name}' is {value!r}, not a number"
    if not math.isfinite(number):
        return NON_NUMERIC_TARGET, f"target '{name}' is {value!r}, not a finite number"
    return None


class TableBuilder:
    """Collects rows one by one and builds a :class:`MoleculeTable` with the common rules.

    Loaders parse their source (CSV text, SD records, QM9 rows), call :meth:`add` per row and
    :meth:`build` once; RDKit log output should be silenced by the caller
    (``rdBase.BlockLogs``) while rows are added.
    """

    def __init__(self, name: str, units: str, target_names: Sequence[str]) -> None:
        if not target_names:
            raise Internal(f"table '{name}' needs at least one target name")
        self.name = name
        self.units = units
        self.target_names = tuple(target_names)
        self._smiles: list[str] = []
        self._values: list[list[float]] = []
        self._labels: list[str] = []
        self._conformers: list[Conformer] = []
        self._invalid: list[str] = []
        self._invalid_rows: list[InvalidRow] = []
        self._counts: dict[str, int] = dict.fromkeys(INVALID_CAUSES, 0)

    def add(
        self,
        source: str,
        mol: Chem.Mol | None,
        values: Sequence[str | float | None],
        *,
        smiles: str | None = None,
        label: str | None = None,
        conformer: Conformer | None = None,
        row: int = 0,
    ) -> bool:
        """Add one row; False (and counted as invalid) when it cannot be used.

        ``source`` is how the row is shown in ``invalid_examples`` (its SMILES text, or
        "record N"). ``mol`` is the RDKit molecule, None when parsing failed. ``values`` has one
        entry per target name (text or number; missing, non-numeric or non-finite values make
        the row invalid). ``smiles`` is kept as the row's SMILES; None means RDKit's canonical
        SMILES of ``mol``. ``label`` and ``conformer`` must be given for every row or none.
        ``row`` is where the row is in its file (CSV line or SD record), for reports.
        """
        if len(values) != len(self.target_names):
            raise Internal(
                f"row of table '{self.name}' has {len(values)} values for "
                f"{len(self.target_names)} targets"
            )
        problem: tuple[str, str] | None = None
        if mol is None:
            if source.startswith("record "):
                shown = f"the molecule of {source}"
            else:
                shown = repr(source) if source else "an empty SMILES cell"
            problem = (UNPARSABLE_SMILES, f"RDKit cannot parse {shown}")
        else:
            problem = next(
                (
                    p
                    for name, v in zip(self.target_names, values, strict=True)
                    if (p := target_problem(name, v)) is not None
                ),
                None,
            )
        if problem is not None:
            self._invalid.append(source)
            self._counts[problem[0]] += 1
            if len(self._invalid_rows) < MAX_INVALID_ROWS:
                self._invalid_rows.append(InvalidRow(row, source, *problem))
            return False
        numbers = [_to_float(v) for v in values]
        self._smiles.append(smiles if smiles is not None else Chem.MolToSmiles(mol))
        self._values.append(numbers)
        if label is not None:
            self._labels.append(label)
        if conformer is not None:
            self._conformers.append(conformer)
        return True

    def build(self) -> MoleculeTable:
        """The table of every valid row added so far."""
        n = len(self._smiles)
        matrix = np.asarray(self._values, dtype=np.float64).reshape(n, len(self.target_names))
        multi = len(self.target_names) > 1
        for what, items in (("labels", self._labels), ("conformers", self._conformers)):
            if items and len(items) != n:
                raise Internal(f"table '{self.name}': {what} given for some rows but not all")
        return MoleculeTable(
            name=self.name,
            smiles=list(self._smiles),
            targets=_read_only(matrix[:, 0].copy()),
            units=self.units,
            n_invalid=len(self._invalid),
            invalid_examples=tuple(self._invalid[:MAX_INVALID_EXAMPLES]),
            invalid_rows=tuple(self._invalid_rows),
            invalid_counts=dict(self._counts),
            given_split=_read_only(np.asarray(self._labels, dtype=str)) if self._labels else None,
            target_names=self.target_names,
            target_matrix=_read_only(matrix) if multi else None,
            conformers=tuple(self._conformers) if self._conformers else None,
        )


def check_invalid_share(table: MoleculeTable, max_share: float = MAX_INVALID_SHARE) -> None:
    """Raise InvalidArgument when more than ``max_share`` of the source rows were unusable.

    The share is ``n_invalid / (len(table) + n_invalid)``. A file where many SMILES do not parse
    usually has the wrong column, a broken export or an encoding problem; training on the rest
    would quietly answer a different question, so the caller is stopped with the count and a few
    examples.
    """
    if not (math.isfinite(max_share) and 0.0 <= max_share <= 1.0):
        raise InvalidArgument(f"max_share is {max_share}; it must be in [0, 1], e.g. 0.1 for 10%")
    total = len(table) + table.n_invalid
    if total == 0 or table.n_invalid / total <= max_share:
        return
    raise InvalidArgument(
        f"dataset '{table.name}': {table.n_invalid} of {total} rows "
        f"({table.n_invalid / total:.1%}) could not be used ({describe_invalid(table)}), more "
        f"than the allowed {max_share:.0%}; fix or remove those rows, or check that the right "
        "SMILES and target columns were chosen"
    )


def describe_invalid(table: MoleculeTable, per_cause: int = 3) -> str:
    """The dropped rows of ``table`` in words, cause by cause with counts and a few row
    numbers, e.g. "2 with SMILES RDKit cannot parse (line 4 'C1CC', line 9 'xyz'); 1 with a
    missing target (line 6: target 'dG' is empty)"."""
    parts = []
    for cause in INVALID_CAUSES:
        n = table.invalid_counts.get(cause, 0)
        if not n:
            continue
        rows = [r for r in table.invalid_rows if r.cause == cause][:per_cause]
        shown = "; ".join(f"{_where(r)}: {r.detail}" for r in rows)
        parts.append(f"{n} with {CAUSE_WORDS[cause]} ({shown}{', ...' if n > len(rows) else ''})")
    if not parts and table.n_invalid:
        parts.append(f"{table.n_invalid}, e.g. {', '.join(map(repr, table.invalid_examples))}")
    return "; ".join(parts)


def _where(r: InvalidRow) -> str:
    if r.text.startswith("record "):
        return r.text
    return f"line {r.row}" if r.row else "row"
