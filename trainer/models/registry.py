"""Model registry: a builder per model family of ``molhpo.contract.catalogue.MODELS``.

``build_model`` resolves the hyperparameters against the catalogue (filling defaults, checking
ranges) and constructs the family's ``torch.nn.Module``. By featuriser, models take:

- rdkit_descriptors (mlp): ``forward(x [batch, in_features]) -> [batch]``;
- onehot_smiles (cnn): ``forward(x [batch, alphabet, max_len]) -> [batch]``;
- graph (gin, gcn, gat, attentivefp): ``forward(x, edge_index, edge_attr, batch, num_graphs)
  -> [num_graphs]`` (see ``trainer.featurize.GraphBatch``);
- conformers_3d (egnn, schnet): ``forward(z, pos, batch, num_graphs) -> [num_graphs]`` (see
  ``trainer.featurize.ConformerBatch``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from molhpo.contract.catalogue import param_float, param_int, resolve_params
from molhpo.contract.errors import InvalidArgument, InvalidConfigError
from trainer.models.cnn import SmilesCNN
from trainer.models.egnn import EGNN
from trainer.models.gin import GIN
from trainer.models.gnn import GAT, GCN, AttentiveFPRegressor
from trainer.models.mlp import MLP, layer_specs
from trainer.models.schnet import SchNet

Builder = Callable[[Mapping[str, object], int, int], nn.Module]


def _build_mlp(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return MLP(in_features, layer_specs(params))


def _build_gin(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return GIN(
        in_channels=in_features,
        hidden_channels=param_int(params, "hidden_channels"),
        num_layers=param_int(params, "num_layers"),
        dropout=param_float(params, "dropout"),
        pooling=str(params["pooling"]),
    )


def _build_cnn(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return SmilesCNN(
        alphabet_size=in_features,
        filters=param_int(params, "filters"),
        kernel_size=param_int(params, "kernel_size"),
        num_conv_layers=param_int(params, "num_conv_layers"),
        pooling=str(params["pooling"]),
        dense_units=param_int(params, "dense_units"),
        dropout=param_float(params, "dropout"),
    )


def _build_gcn(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return GCN(
        in_channels=in_features,
        hidden_channels=param_int(params, "hidden_channels"),
        num_layers=param_int(params, "num_layers"),
        dropout=param_float(params, "dropout"),
        pooling=str(params["pooling"]),
    )


def _build_gat(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return GAT(
        in_channels=in_features,
        hidden_channels=param_int(params, "hidden_channels"),
        num_layers=param_int(params, "num_layers"),
        heads=param_int(params, "heads"),
        dropout=param_float(params, "dropout"),
        pooling=str(params["pooling"]),
    )


def _build_attentivefp(
    params: Mapping[str, object], in_features: int, edge_features: int
) -> nn.Module:
    return AttentiveFPRegressor(
        in_channels=in_features,
        edge_channels=edge_features,
        hidden_channels=param_int(params, "hidden_channels"),
        num_layers=param_int(params, "num_layers"),
        num_timesteps=param_int(params, "num_timesteps"),
        dropout=param_float(params, "dropout"),
    )


def _build_egnn(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return EGNN(
        hidden_channels=param_int(params, "hidden_channels"),
        num_layers=param_int(params, "num_layers"),
        dropout=param_float(params, "dropout"),
        pooling=str(params["pooling"]),
        cutoff=param_float(params, "cutoff"),
    )


def _build_schnet(params: Mapping[str, object], in_features: int, edge_features: int) -> nn.Module:
    return SchNet(
        hidden_channels=param_int(params, "hidden_channels"),
        num_filters=param_int(params, "num_filters"),
        num_interactions=param_int(params, "num_interactions"),
        num_gaussians=param_int(params, "num_gaussians"),
        cutoff=param_float(params, "cutoff"),
        readout=str(params["readout"]),
    )


MODEL_BUILDERS: dict[str, Builder] = {
    "attentivefp": _build_attentivefp,
    "cnn": _build_cnn,
    "egnn": _build_egnn,
    "gat": _build_gat,
    "gcn": _build_gcn,
    "gin": _build_gin,
    "mlp": _build_mlp,
    "schnet": _build_schnet,
}
"""Builder per family name; the keys equal those of ``molhpo.contract.catalogue.MODELS``."""


def build_model(
    family: str, params: Mapping[str, object], in_features: int, edge_features: int
) -> nn.Module:
    """A freshly initialised model of ``family`` (uses torch's global RNG for the weights).

    ``params`` may be partial; defaults come from the catalogue. ``in_features`` is the width of
    the input (descriptors, or atom features for graph models); ``edge_features`` the width of
    bond features (ignored by families without edge features). Unknown families or bad
    hyperparameters raise InvalidArgument; a model that cannot be built raises
    InvalidConfigError.
    """
    builder = MODEL_BUILDERS.get(family)
    if builder is None:
        raise InvalidArgument(
            f"unknown model '{family}'; choose one of: {', '.join(sorted(MODEL_BUILDERS))}"
        )
    if in_features < 1:
        raise InvalidConfigError(
            f"model '{family}' needs at least one input feature, got in_features={in_features}"
        )
    resolved = resolve_params(family, params)
    try:
        return builder(resolved, in_features, edge_features)
    except (RuntimeError, MemoryError) as exc:  # e.g. allocation failure for huge layers
        raise InvalidConfigError(
            f"cannot build model '{family}' with {dict(params)}: {exc}; use smaller layers"
        ) from exc
