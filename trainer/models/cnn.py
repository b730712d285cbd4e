"""1D convolutional network on one-hot SMILES (Hirohara, Saito, Koda, Sato & Sakakibara,
"Convolutional neural network based on SMILES representation of compounds for detecting
chemical motif", BMC Bioinformatics 19:526, 2018).

As in the paper, convolutions slide along the SMILES with the alphabet as input channels, and a
global pooling over positions turns the feature maps into a fixed-size vector for a dense head.
Here padding positions are zeroed before every convolution (as the convolution's own zero
padding beyond the string) and excluded from the pooling, so a molecule's prediction does not
depend on the length of the longest SMILES of its data set.
"""

from __future__ import annotations

import torch
from torch import nn

from molhpo.contract.errors import InvalidConfigError
from trainer.models.mlp import SeededDropout


class SmilesCNN(nn.Module):
    """[Conv1d -> ReLU] x num_conv_layers, masked global max/mean pooling, then
    Linear -> ReLU -> Dropout -> Linear to one output."""

    def __init__(
        self,
        alphabet_size: int,
        filters: int,
        kernel_size: int,
        num_conv_layers: int,
        pooling: str,
        dense_units: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if pooling not in ("max", "mean"):
            raise InvalidConfigError(f"pooling is {pooling!r}; choose max or mean")
        self.pooling = pooling
        self.convs = nn.ModuleList()
        width = alphabet_size
        for _ in range(num_conv_layers):
            # "same" padding keeps one output column per SMILES position (odd and even kernels)
            self.convs.append(nn.Conv1d(width, filters, kernel_size, padding="same"))
            width = filters
        self.head = nn.Sequential(
            nn.Linear(filters, dense_units),
            nn.ReLU(),
            SeededDropout(dropout),
            nn.Linear(dense_units, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, alphabet, max_len] one-hot SMILES (row 0 = padding token) -> [batch]."""
        real = (1.0 - x[:, 0, :]).unsqueeze(1)  # [batch, 1, max_len]: 1 on real tokens
        maps = x * real  # padding columns become zeros, like the padding beyond the string
        for conv in self.convs:
            maps = torch.relu(conv(maps)) * real  # [batch, filters, max_len]
        if self.pooling == "max":
            pooled = maps.masked_fill(real == 0.0, float("-inf")).amax(dim=-1)
        else:
            pooled = (maps * real).sum(dim=-1) / real.sum(dim=-1).clamp(min=1.0)
        out: torch.Tensor = self.head(pooled).squeeze(-1)
        return out
