"""Optuna pruners by name; resources are counted in epochs.

The maximum resource of Hyperband is always the study's ``budget.max_epochs``, so it is not an
option.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import optuna
from pydantic import Field

from coordinator.optimizer._options import Component, Options, lookup, parse_options
from molhpo.contract.errors import InvalidArgument

BasePruner = optuna.pruners.BasePruner


class HyperbandOptions(Options):
    """Options of optuna.pruners.HyperbandPruner (Li et al. 2018)."""

    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)


class SuccessiveHalvingOptions(Options):
    """Options of optuna.pruners.SuccessiveHalvingPruner (ASHA, Li et al. 2020)."""

    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)
    bootstrap_count: int = Field(0, ge=0)


class MedianOptions(Options):
    """Options of optuna.pruners.MedianPruner."""

    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)


class PercentileOptions(MedianOptions):
    """Options of optuna.pruners.PercentilePruner."""

    percentile: float = Field(25.0, ge=0.0, le=100.0)


class PatientOptions(Options):
    """Options of optuna.pruners.PatientPruner: prune only after ``patience`` epochs without
    improvement of at least ``min_delta``, and then only if the wrapped pruner agrees."""

    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    wrapped: str = "none"
    wrapped_options: dict[str, object] = Field(default_factory=dict)


class NoOptions(Options):
    """No pruning; no options."""


def _hyperband(o: HyperbandOptions, max_epochs: int) -> BasePruner:
    return optuna.pruners.HyperbandPruner(
        min_resource=o.min_resource,
        max_resource=max_epochs,
        reduction_factor=o.reduction_factor,
        bootstrap_count=o.bootstrap_count,
    )


def _asha(o: SuccessiveHalvingOptions, max_epochs: int) -> BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=o.min_resource,
        reduction_factor=o.reduction_factor,
        min_early_stopping_rate=o.min_early_stopping_rate,
        bootstrap_count=o.bootstrap_count,
    )


def _median(o: MedianOptions, max_epochs: int) -> BasePruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=o.n_startup_trials,
        n_warmup_steps=o.n_warmup_steps,
        interval_steps=o.interval_steps,
        n_min_trials=o.n_min_trials,
    )


def _percentile(o: PercentileOptions, max_epochs: int) -> BasePruner:
    return optuna.pruners.PercentilePruner(
        o.percentile,
        n_startup_trials=o.n_startup_trials,
        n_warmup_steps=o.n_warmup_steps,
        interval_steps=o.interval_steps,
        n_min_trials=o.n_min_trials,
    )


def _patient(o: PatientOptions, max_epochs: int) -> BasePruner:
    if o.wrapped == "patient":
        raise InvalidArgument("pruner.options.wrapped: a patient pruner cannot wrap another one")
    inner = None if o.wrapped == "none" else build_pruner(o.wrapped, o.wrapped_options, max_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(inner, patience=o.patience, min_delta=o.min_delta)


def _none(o: NoOptions, max_epochs: int) -> BasePruner:
    return optuna.pruners.NopPruner()


PRUNERS: dict[str, Component[BasePruner]] = {
    "hyperband": Component("hyperband", "Hyperband over epochs", HyperbandOptions, _hyperband),
    "asha": Component("asha", "asynchronous successive halving", SuccessiveHalvingOptions, _asha),
    "median": Component(
        "median", "prune below the median of earlier trials", MedianOptions, _median
    ),
    "percentile": Component(
        "percentile", "prune outside a percentile of earlier trials", PercentileOptions, _percentile
    ),
    "patient": Component(
        "patient",
        "prune after epochs without improvement (optionally wrapping a pruner)",
        PatientOptions,
        _patient,
    ),
    "none": Component("none", "no pruning: every trial trains to max_epochs", NoOptions, _none),
}


def validate_pruner(name: str, options: Mapping[str, object]) -> None:
    """Raise InvalidArgument for an unknown pruner or a bad option."""
    opts = parse_options("pruner", lookup("pruner", PRUNERS, name), options)
    if isinstance(opts, PatientOptions):
        if opts.wrapped == "patient":
            raise InvalidArgument(
                "pruner.options.wrapped: a patient pruner cannot wrap another one"
            )
        try:
            validate_pruner(opts.wrapped, opts.wrapped_options)
        except InvalidArgument as err:
            raise InvalidArgument(
                str(err).replace("pruner.", "pruner.options.wrapped_", 1)
            ) from None


def build_pruner(name: str, options: Mapping[str, object], max_epochs: int) -> BasePruner:
    """A fresh pruner of that name with those options."""
    comp = lookup("pruner", PRUNERS, name)
    return comp.build(parse_options("pruner", comp, options), max_epochs)
