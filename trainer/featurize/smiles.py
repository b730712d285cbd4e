"""One-hot SMILES matrices for the convolutional network.

A SMILES string is split into tokens with the regular expression of Schwaller et al.
("Molecular Transformer", ACS Cent. Sci. 2019): bracket atoms such as ``[NH3+]`` are one token,
two-letter organic-subset atoms (``Cl``, ``Br``) are one token, ring-closure digits are tokens
and two-digit ring closures ``%nn`` are one token. The alphabet and the matrix length are those
of the data set being featurised, so nothing has to be fixed in advance; shorter SMILES are
padded with ``PAD_TOKEN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from molhpo.contract.errors import InvalidArgument

PAD_TOKEN = "<pad>"
"""Fills the positions after a SMILES' last token; always index 0 of an alphabet."""

SMILES_TOKEN_PATTERN = re.compile(
    r"(\[[^\]]+\]|Br|Cl|%\d{2}|[BCNOPSFI]|[bcnops]|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|\d)"
)
"""One SMILES token per match (Schwaller et al. 2019)."""


def tokenize(smiles: str) -> list[str]:
    """The tokens of ``smiles``; their concatenation is ``smiles`` again.

    Raises InvalidArgument when a character belongs to no token (e.g. a lone ``]``), naming it,
    so a matrix never silently loses part of a molecule.
    """
    tokens = SMILES_TOKEN_PATTERN.findall(smiles)
    if "".join(tokens) != smiles:
        covered = 0
        for token in tokens:
            position = smiles.index(token, covered)
            if position != covered:
                break
            covered += len(token)
        raise InvalidArgument(
            f"SMILES {smiles!r} has a character no token covers at position {covered} "
            f"({smiles[covered : covered + 1]!r}); fix or drop that SMILES"
        )
    return tokens


@dataclass(frozen=True)
class SmilesFeatures:
    """Tokenised SMILES of a data set.

    ``alphabet`` lists the tokens (``PAD_TOKEN`` first); ``tokens`` [n, max_len] (int64) holds
    each molecule's token indices, padded with 0. The one-hot matrices [n, alphabet, max_len]
    are built from it on demand (``one_hot``): stored densely they would take
    n * alphabet * max_len floats, several GB for QM9-sized sets.
    """

    alphabet: tuple[str, ...]
    tokens: torch.Tensor

    @property
    def num_features(self) -> int:
        """Rows of a one-hot matrix: the alphabet size (padding included)."""
        return len(self.alphabet)

    @property
    def max_len(self) -> int:
        return int(self.tokens.shape[1])

    def one_hot(self, rows: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """One-hot matrices of molecules ``rows`` (all when None): float32 [len(rows),
        alphabet, max_len], on the device of ``tokens``; column j is the j-th token."""
        if rows is None:
            tokens = self.tokens
        else:
            tokens = self.tokens[rows if isinstance(rows, torch.Tensor) else torch.as_tensor(rows)]
        return F.one_hot(tokens, len(self.alphabet)).transpose(1, 2).float()

    def to(self, device: torch.device | str) -> SmilesFeatures:
        """The same features with ``tokens`` on ``device``."""
        return SmilesFeatures(alphabet=self.alphabet, tokens=self.tokens.to(device))

    def decode(self, matrix: torch.Tensor) -> str:
        """The SMILES of one one-hot matrix [alphabet, max_len] (padding dropped)."""
        indices = matrix.argmax(dim=0).tolist()
        return "".join(self.alphabet[i] for i in indices if i != 0)


def compute_onehot_smiles(smiles: list[str]) -> SmilesFeatures:
    """Tokens of every SMILES, with the alphabet (sorted, after ``PAD_TOKEN``) and the length
    (the longest token count) taken from these SMILES."""
    tokenized = [tokenize(smi) for smi in smiles]
    alphabet = (PAD_TOKEN, *sorted({t for tokens in tokenized for t in tokens}))
    index = {token: i for i, token in enumerate(alphabet)}
    max_len = max((len(tokens) for tokens in tokenized), default=1)
    matrix = np.zeros((len(smiles), max(max_len, 1)), dtype=np.int64)
    for row, tokens in enumerate(tokenized):
        matrix[row, : len(tokens)] = [index[t] for t in tokens]
    return SmilesFeatures(alphabet=alphabet, tokens=torch.from_numpy(matrix))
