"""Optuna samplers by name.

Each sampler's options are its Optuna constructor arguments, validated before any trial runs.
The study seed seeds every sampler; samplers that understand constraints (tpe, gp, nsga2) get
the study's constraints.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import optuna

# Imported here, once, by the main thread: studies build and run samplers in their own threads,
# and scipy's qmc module fails when two threads import it at once (circular import).
import scipy.stats.qmc  # noqa: F401
from pydantic import Field

from coordinator.optimizer._options import Component, Options, lookup, parse_options
from coordinator.spec import CategoricalDist, IntDist, ParamSpec
from molhpo.contract.errors import InvalidArgument

BaseSampler = optuna.samplers.BaseSampler
ConstraintsFunc = Callable[[optuna.trial.FrozenTrial], Sequence[float]]

# A grid larger than this is almost surely a mistake (and would never finish).
MAX_GRID_POINTS = 100_000


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may need besides its options."""

    seed: int = 0
    params: tuple[ParamSpec, ...] = ()
    constraints_func: ConstraintsFunc | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class RandomOptions(Options):
    """Random search has no options."""


class TPEOptions(Options):
    """Options of optuna.samplers.TPESampler."""

    n_startup_trials: int = Field(10, ge=0)
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = True
    # Constant liar keeps parallel workers from sampling the same point (Optuna >= 2.8).
    constant_liar: bool = True


class GPOptions(Options):
    """Options of optuna.samplers.GPSampler."""

    n_startup_trials: int = Field(10, ge=0)
    deterministic_objective: bool = False


class CmaEsOptions(Options):
    """Options of optuna.samplers.CmaEsSampler (Hansen 2016)."""

    n_startup_trials: int = Field(1, ge=0)
    sigma0: float | None = Field(None, gt=0)
    with_margin: bool = False
    lr_adapt: bool = False


class QMCOptions(Options):
    """Options of optuna.samplers.QMCSampler (quasi-Monte Carlo)."""

    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class GridOptions(Options):
    """Options of optuna.samplers.GridSampler.

    Integer, stepped-float and categorical parameters contribute all their values;
    continuous floats need ``n_points`` (spaced evenly, or geometrically on log scale).
    """

    n_points: int = Field(0, ge=0)


class NSGA2Options(Options):
    """Options of optuna.samplers.NSGAIISampler (Deb et al. 2002), for multi-objective studies."""

    population_size: int = Field(50, ge=2)
    mutation_prob: float | None = Field(None, ge=0.0, le=1.0)
    crossover_prob: float = Field(0.9, ge=0.0, le=1.0)
    swapping_prob: float = Field(0.5, ge=0.0, le=1.0)


def _random(opts: RandomOptions, ctx: SamplerContext) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=ctx.seed)


def _tpe(opts: TPEOptions, ctx: SamplerContext) -> BaseSampler:
    # Dynamic (conditional) spaces need group=True with multivariate TPE; both are flagged
    # experimental by Optuna but are its recommended set-up for such spaces.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=ctx.seed,
            n_startup_trials=opts.n_startup_trials,
            n_ei_candidates=opts.n_ei_candidates,
            multivariate=opts.multivariate,
            group=opts.multivariate,
            constant_liar=opts.constant_liar,
            constraints_func=ctx.constraints_func,
        )


def _gp(opts: GPOptions, ctx: SamplerContext) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(
            seed=ctx.seed,
            n_startup_trials=opts.n_startup_trials,
            deterministic_objective=opts.deterministic_objective,
            constraints_func=ctx.constraints_func,
        )


def _cmaes(opts: CmaEsOptions, ctx: SamplerContext) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.CmaEsSampler(
            seed=ctx.seed,
            n_startup_trials=opts.n_startup_trials,
            sigma0=opts.sigma0,
            with_margin=opts.with_margin,
            lr_adapt=opts.lr_adapt,
            warn_independent_sampling=False,
        )


def _qmc(opts: QMCOptions, ctx: SamplerContext) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type=opts.qmc_type,
            scramble=opts.scramble,
            seed=ctx.seed,
            warn_independent_sampling=False,
        )


def _grid_size(p: ParamSpec, n_points: int) -> int:
    """How many values a parameter contributes to the grid (before listing any)."""
    d = p.distribution
    if isinstance(d, CategoricalDist):
        return len(d.choices)
    if isinstance(d, IntDist):
        return n_points if (d.log and n_points) else (d.high - d.low) // d.step + 1
    if d.step:
        count = (d.high - d.low) / d.step
        return math.floor(count + 1e-9) + 1 if math.isfinite(count) else MAX_GRID_POINTS + 1
    if n_points:
        return n_points
    raise InvalidArgument(
        f"sampler.options.n_points: grid needs it for the continuous parameter {p.name!r} "
        "(or give that parameter a step)"
    )


def grid_values(params: tuple[ParamSpec, ...], n_points: int) -> dict[str, list[object]]:
    """The grid of every parameter; InvalidArgument when one cannot be gridded or the grid
    would be too large (checked before any list is built)."""
    total = 1
    for p in params:
        total *= max(_grid_size(p, n_points), 1)
        if total > MAX_GRID_POINTS:
            raise InvalidArgument(
                f"sampler: the grid has more than {MAX_GRID_POINTS} points; coarsen it "
                "(steps, fewer choices or a smaller n_points)"
            )
    grid: dict[str, list[object]] = {}
    for p in params:
        d = p.distribution
        values: list[object]
        if isinstance(d, CategoricalDist):
            values = list(d.choices)
        elif isinstance(d, IntDist):
            if d.log and n_points:
                pts = np.unique(np.round(np.geomspace(d.low, d.high, n_points)).astype(int))
                values = [int(v) for v in pts]
            else:
                values = list(range(d.low, d.high + 1, d.step))
        elif d.step:
            values = [d.low + i * d.step for i in range(_grid_size(p, n_points))]
        else:
            space = np.geomspace if d.log else np.linspace
            values = [float(v) for v in space(d.low, d.high, n_points)]
        grid[p.name] = values
    return grid


def _grid(opts: GridOptions, ctx: SamplerContext) -> BaseSampler:
    return optuna.samplers.GridSampler(
        grid_values(ctx.params, opts.n_points),  # type: ignore[arg-type]
        seed=ctx.seed,
    )


def _nsga2(opts: NSGA2Options, ctx: SamplerContext) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(
        population_size=opts.population_size,
        mutation_prob=opts.mutation_prob,
        crossover_prob=opts.crossover_prob,
        swapping_prob=opts.swapping_prob,
        seed=ctx.seed,
        constraints_func=ctx.constraints_func,
    )


SAMPLERS: dict[str, Component[BaseSampler]] = {
    "random": Component("random", "uniform random search", RandomOptions, _random),
    "tpe": Component(
        "tpe", "tree-structured Parzen estimator (Bergstra et al. 2011)", TPEOptions, _tpe
    ),
    # Optuna's GPSampler computes with torch, which the coordinator extra leaves out.
    "gp": Component(
        "gp", "Gaussian-process Bayesian optimisation", GPOptions, _gp, requires=("torch",)
    ),
    "cmaes": Component("cmaes", "CMA evolution strategy (Hansen 2016)", CmaEsOptions, _cmaes),
    "qmc": Component("qmc", "quasi-Monte Carlo (Sobol or Halton sequences)", QMCOptions, _qmc),
    "grid": Component("grid", "exhaustive grid over the search space", GridOptions, _grid),
    "nsga2": Component(
        "nsga2",
        "NSGA-II genetic algorithm, multi-objective (Deb et al. 2002)",
        NSGA2Options,
        _nsga2,
    ),
}


def validate_sampler(
    name: str, options: Mapping[str, object], params: tuple[ParamSpec, ...] = ()
) -> None:
    """Raise InvalidArgument for an unknown sampler, a bad option, or a space it cannot use."""
    comp = lookup("sampler", SAMPLERS, name)
    opts = parse_options("sampler", comp, options)
    if name == "grid" and params:
        grid_values(params, opts.n_points)  # type: ignore[attr-defined]


def build_sampler(
    name: str, options: Mapping[str, object], seed: int, ctx: SamplerContext | None = None
) -> BaseSampler:
    """A fresh sampler of that name with those options, seeded."""
    comp = lookup("sampler", SAMPLERS, name)
    context = SamplerContext(seed=seed) if ctx is None else ctx
    if context.seed != seed:
        context = SamplerContext(seed, context.params, context.constraints_func)
    return comp.build(parse_options("sampler", comp, options), context)
