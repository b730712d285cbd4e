"""Reading a study's data set before any trial runs: it exists, it parses, it is not mostly
rows RDKit rejects.

The check runs here, in the coordinator, with the very readers a trainer uses
(``molhpo.datasets``: RDKit and numpy, no tensors), not through a trainer RPC: a study is
validated when it starts, before any trainer may have joined, and the coordinator must refuse
exactly what a trainer would fail on. So the readers are shared code outside both services, and
the coordinator imports them, never the trainer package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.spec import DatasetSpec
from molhpo.contract import catalogue
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import DatasetRequest, load_table
from molhpo.datasets.qm9 import QM9_PROPERTIES, qm9_data_folder


@dataclass(frozen=True)
class DroppedRow:
    """A row of the data file that was not used: its line (CSV) or record (SD), its text, the
    cause ("unparsable_smiles", "missing_target", "non_numeric_target") and the cause in
    words."""

    row: int
    text: str
    cause: str
    detail: str


@dataclass(frozen=True)
class DatasetSummary:
    """What a data set holds: molecules kept, rows dropped by cause with the first of them."""

    name: str
    n_molecules: int
    n_invalid: int
    invalid_examples: tuple[str, ...]
    target_names: tuple[str, ...]
    invalid_counts: dict[str, int] = field(default_factory=dict)
    invalid_rows: tuple[DroppedRow, ...] = ()

    @classmethod
    def from_dict(cls, raw: object) -> DatasetSummary | None:
        """The summary kept in the store (``dataclasses.asdict`` of one); None when ``raw`` is
        not one (a study made by an older version keeps what it has)."""
        if not isinstance(raw, Mapping):
            return None
        try:
            rows = tuple(
                DroppedRow(int(r["row"]), str(r["text"]), str(r["cause"]), str(r["detail"]))
                for r in raw.get("invalid_rows", ())
            )
            return cls(
                name=str(raw["name"]),
                n_molecules=int(raw["n_molecules"]),
                n_invalid=int(raw["n_invalid"]),
                invalid_examples=tuple(raw["invalid_examples"]),
                target_names=tuple(raw["target_names"]),
                invalid_counts={str(k): int(v) for k, v in raw.get("invalid_counts", {}).items()},
                invalid_rows=rows,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def request_of(d: DatasetSpec) -> DatasetRequest:
    """The trainer-side request for a dataset spec."""
    return DatasetRequest(
        name=d.name,
        path=d.path,
        format=d.format,
        smiles_column=d.smiles_column,
        target_columns=d.target_columns,
        target=d.target,
        max_invalid_share=d.max_invalid_share,
    )


def summarize(d: DatasetSpec, roots: Sequence[Path]) -> DatasetSummary:
    """Read the data set and count its rows; InvalidArgument (naming ``dataset``) when it
    cannot be used."""
    if not d.path and d.name == catalogue.SYNTHETIC:
        return DatasetSummary(catalogue.SYNTHETIC, 0, 0, (), ("curve",))
    if not d.path and d.name == "qm9":
        # 130k molecules take ~40 s to read: check what can go wrong without reading them.
        if d.target and d.target not in QM9_PROPERTIES:
            raise InvalidArgument(
                f"dataset.target: unknown QM9 property {d.target!r}; choose one of: "
                f"{', '.join(sorted(QM9_PROPERTIES))}"
            )
        try:
            qm9_data_folder()
        except InvalidArgument as err:
            raise InvalidArgument(f"dataset: {err}") from None
        info = catalogue.get_dataset("qm9")
        return DatasetSummary("qm9", info.size, 0, (), (d.target or info.target,))
    try:
        table = load_table(request_of(d), roots)
    except InvalidArgument as err:
        raise InvalidArgument(f"dataset: {err}") from None
    return DatasetSummary(
        name=d.path or d.name,
        n_molecules=len(table),
        n_invalid=table.n_invalid,
        invalid_examples=tuple(table.invalid_examples),
        target_names=tuple(table.target_names),
        invalid_counts=dict(table.invalid_counts),
        invalid_rows=tuple(
            DroppedRow(r.row, r.text, r.cause, r.detail) for r in table.invalid_rows
        ),
    )
