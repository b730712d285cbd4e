"""One reference to a data set, as a study names it, and the loader behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from molhpo.datasets.builtin import load_dataset
from molhpo.datasets.qm9 import load_qm9
from molhpo.datasets.table import MAX_INVALID_SHARE, MoleculeTable, check_invalid_share
from molhpo.datasets.user import load_user_file


@dataclass(frozen=True)
class DatasetRequest:
    """A bundled data set by ``name``, or a user file by ``path``.

    ``target`` picks a QM9 property (default homo); ``format``, ``smiles_column`` and
    ``target_columns`` describe a user file (see :func:`load_user_file`). A table with more
    than ``max_invalid_share`` unparsable rows is refused.
    """

    name: str = ""
    path: str = ""
    format: str = ""
    smiles_column: str = "smiles"
    target_columns: tuple[str, ...] = ()
    target: str = ""
    max_invalid_share: float = MAX_INVALID_SHARE
    subset: int = 0
    """QM9 only: read this many molecules (seeded by ``subset_seed``) instead of all 130k."""
    subset_seed: int = 0

    @property
    def label(self) -> str:
        """How messages name the data set."""
        return self.path or self.name


def load_table(request: DatasetRequest, roots: Sequence[Path] = ()) -> MoleculeTable:
    """The table a request names, checked for its share of unparsable rows.

    User files must lie under one of ``roots`` (InvalidArgument otherwise).
    """
    if request.path:
        table = load_user_file(
            request.path,
            roots=roots,
            format=request.format or None,
            smiles_column=request.smiles_column or "smiles",
            target_columns=request.target_columns or None,
        )
    elif request.name == "qm9" and (request.target or request.subset):
        table = load_qm9(request.target or "homo", request.subset, request.subset_seed)
    else:
        table = load_dataset(request.name)
    check_invalid_share(table, request.max_invalid_share)
    return table
