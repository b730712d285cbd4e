"""The catalogue: lookups, error messages and hyperparameter resolution."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from molhpo.contract import catalogue
from molhpo.contract.catalogue import (
    DATASETS,
    METRICS,
    MODELS,
    TRAINING_HYPERPARAMETERS,
    get_dataset,
    get_model,
    hyperparameters_for,
    is_active,
    resolve_params,
)
from molhpo.contract.errors import InvalidArgument


def test_catalogue_imports_neither_torch_nor_rdkit() -> None:
    code = (
        "import sys, molhpo.contract.catalogue; "
        "bad = [m for m in ('torch', 'rdkit', 'torch_geometric', 'optuna') if m in sys.modules]; "
        "sys.exit(f'catalogue imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_model_names_value_and_lists_choices() -> None:
    with pytest.raises(InvalidArgument) as err:
        get_model("gin2")
    assert "'gin2'" in str(err.value)
    assert "choose one of: attentivefp, cnn, egnn, gat, gcn, gin, mlp, schnet, synthetic" in str(
        err.value
    )


def test_unknown_dataset_names_value_and_lists_choices() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown dataset 'tox21'.*freesolv"):
        get_dataset("tox21")


def test_tables_are_consistent() -> None:
    assert set(MODELS) == {
        "attentivefp",
        "cnn",
        "egnn",
        "gat",
        "gcn",
        "gin",
        "mlp",
        "schnet",
        "synthetic",
    }
    assert set(DATASETS) == {"freesolv", "qm9", "solubility", "synthetic"}
    assert METRICS == {
        "rmse": "minimize",
        "mae": "minimize",
        "r2": "maximize",
        "mape": "minimize",
        "pearson": "maximize",
        "spearman": "maximize",
    }
    for name, family in MODELS.items():
        assert family.name == name
        names = [hp.name for hp in family.hyperparameters]
        assert len(names) == len(set(names)), f"duplicate hyperparameter in {name}"
        assert not set(names) & {hp.name for hp in TRAINING_HYPERPARAMETERS}
    for name, info in DATASETS.items():
        assert info.name == name
        assert info.task == "regression"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_defaults_are_valid(model: str) -> None:
    spec = hyperparameters_for(model)
    resolved = resolve_params(model, {})
    assert resolved == {name: hp.default for name, hp in spec.items()}
    # every default must pass its own validation
    assert resolve_params(model, resolved) == resolved
    for hp in spec.values():
        if hp.kind == "categorical":
            assert hp.choices is not None
            assert hp.default in hp.choices
        elif hp.kind in ("int", "float"):
            assert hp.low is not None and hp.high is not None
            assert hp.low <= float(hp.default) <= hp.high


def test_hyperparameters_for_includes_training_ones() -> None:
    spec = hyperparameters_for("gin")
    assert {"hidden_channels", "num_layers", "dropout", "pooling"} <= set(spec)
    assert {"lr", "weight_decay", "batch_size"} <= set(spec)
    assert spec["lr"].default == 1e-3
    assert spec["batch_size"].default == 32
    mlp = hyperparameters_for("mlp")
    assert {f"units_{i}" for i in range(1, 5)} <= set(mlp)
    assert mlp["units"].default == 128


def test_resolve_overlays_defaults_and_coerces() -> None:
    resolved = resolve_params(
        "mlp", {"units": 64.0, "dropout": 0, "lr": "0.01", "units_2": np.int64(32)}
    )
    assert resolved["units"] == 64 and type(resolved["units"]) is int
    assert resolved["dropout"] == 0.0 and type(resolved["dropout"]) is float
    assert resolved["lr"] == 0.01
    assert resolved["units_2"] == 32 and type(resolved["units_2"]) is int
    assert resolved["num_extra_layers"] == 1  # default kept
    assert resolve_params("gin", {"pooling": "mean"})["pooling"] == "mean"


def test_resolve_rejects_unknown_name_and_lists_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve_params("gin", {"hidden_channel": 32})
    message = str(err.value)
    assert "'hidden_channel'" in message
    assert "hidden_channels" in message and "num_layers" in message and "lr" in message


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"hidden_channels": "x"}, "must be a number"),
        ({"hidden_channels": 3.5}, "must be an integer"),
        ({"hidden_channels": True}, "must be a number"),
        ({"hidden_channels": 4}, "outside its valid range [8, 1024]"),
        ({"num_layers": 11}, "outside its valid range [1, 10]"),
        ({"dropout": 0.95}, "outside its valid range"),
        ({"lr": float("nan")}, "finite"),
        ({"lr": 0.0}, "outside its valid range"),
        ({"pooling": "sum"}, "choose one of: add, mean, max"),
        ({"batch_size": 0}, "outside its valid range [1, 4096]"),
    ],
)
def test_resolve_rejects_bad_values(params: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve_params("gin", params)
    message = str(err.value)
    assert fragment in message
    name = next(iter(params))
    assert f"'{name}'" in message


def test_bool_kind_coercion(monkeypatch: pytest.MonkeyPatch) -> None:
    flag = catalogue.Hyperparameter("flag", "bool", False, "a test flag")
    monkeypatch.setattr(catalogue, "TRAINING_HYPERPARAMETERS", (*TRAINING_HYPERPARAMETERS, flag))
    assert resolve_params("gin", {"flag": "true"})["flag"] is True
    assert resolve_params("gin", {"flag": 0})["flag"] is False
    with pytest.raises(InvalidArgument, match="must be a boolean"):
        resolve_params("gin", {"flag": "maybe"})


def test_conditional_parameters_are_marked() -> None:
    spec = hyperparameters_for("mlp")
    assert spec["units_3"].requires == ("num_extra_layers", 3)
    assert spec["units"].requires is None
    params = resolve_params("mlp", {"num_extra_layers": 2})
    assert is_active(spec["units_2"], params)
    assert not is_active(spec["units_3"], params)
    assert is_active(spec["lr"], params)
