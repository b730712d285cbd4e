"""The study specification as the coordinator's core sees it, and the rules it must keep.

Built from a ``StartStudyRequest`` by :mod:`coordinator.convert`; the core never sees protos.
Every rule names the field, the value and the fix, so ValidateStudy/StartStudy can answer
INVALID_ARGUMENT with a message a user can act on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from molhpo.contract import catalogue
from molhpo.contract.enums import Direction
from molhpo.contract.errors import InvalidArgument

Value = int | float | str | bool

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
# Mirrors molhpo.datasets.SPLIT_KINDS (the coordinator does not import RDKit for it).
SPLITS = ("given", "random", "scaffold")
MAX_PARALLELISM = 1024
MAX_TRIALS = 1_000_000
MAX_EPOCHS = 100_000
# The trainers' interval between resume states when a study sets none (checkpoint_every 0).
DEFAULT_CHECKPOINT_EVERY = 5


@dataclass(frozen=True)
class IntDist:
    """Integers low..high (inclusive), every ``step``, optionally on a log scale."""

    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class FloatDist:
    """Reals low..high, continuous when ``step`` is None, optionally on a log scale."""

    low: float
    high: float
    step: float | None = None
    log: bool = False


@dataclass(frozen=True)
class CategoricalDist:
    """One of ``choices``."""

    choices: tuple[Value, ...]


Distribution = IntDist | FloatDist | CategoricalDist


@dataclass(frozen=True)
class Condition:
    """A parameter is active only when ``parent`` took one of ``values``."""

    parent: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One tuned hyperparameter."""

    name: str
    distribution: Distribution
    condition: Condition | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Which data set and how it is split."""

    name: str
    split: str = "random"
    split_seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    path: str = ""
    format: str = ""
    smiles_column: str = "smiles"
    target_columns: tuple[str, ...] = ()
    target: str = ""
    max_invalid_share: float = 0.1
    max_molecules: int = 0


@dataclass(frozen=True)
class ComponentSpec:
    """A sampler or pruner by name, with its options."""

    name: str
    options: Mapping[str, object] = field(default_factory=dict)


TRIAL_METRICS: dict[str, Direction] = {
    "n_parameters": Direction.MINIMIZE,
    "train_seconds": Direction.MINIMIZE,
}
"""Metrics of a whole trial (not per epoch) usable as extra objectives and in constraints."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective: a metric and its direction."""

    metric: str
    direction: str  # a Direction: "minimize" | "maximize"


@dataclass(frozen=True)
class ConstraintSpec:
    """A trial is feasible when ``metric <= max``."""

    metric: str
    max: float


@dataclass(frozen=True)
class StudySpec:
    """Everything a study needs, with defaults filled in."""

    name: str
    dataset: DatasetSpec
    model: str
    params: tuple[ParamSpec, ...]
    fixed_params: Mapping[str, object]
    metric: str
    direction: str  # a Direction: "minimize" | "maximize"
    sampler: ComponentSpec
    pruner: ComponentSpec
    n_trials: int
    max_epochs: int
    timeout_seconds: float = 0.0
    parallelism: int = 1
    seed: int = 0
    description: str = ""
    extra_objectives: tuple[ObjectiveSpec, ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()
    enqueue_default: bool = True
    enqueued: tuple[Mapping[str, object], ...] = ()
    keep_checkpoints: int = 1
    return_test_predictions: bool = False
    request_id: str = ""
    checkpoint_every: int = 0
    """Trainers save the state a re-dispatched trial resumes from every this many epochs
    (0: every DEFAULT_CHECKPOINT_EVERY)."""

    @property
    def objectives(self) -> tuple[ObjectiveSpec, ...]:
        """Every objective, the primary (validation) one first."""
        return (ObjectiveSpec(self.metric, self.direction), *self.extra_objectives)

    @property
    def multi_objective(self) -> bool:
        """Whether the study has more than one objective."""
        return bool(self.extra_objectives)


def validate(spec: StudySpec) -> None:
    """Check every rule a study must keep; raise InvalidArgument naming the first broken one.

    Sampler and pruner options are checked by their registries (coordinator.optimizer).
    """
    _validate_name(spec.name)
    _validate_dataset(spec.dataset)
    _validate_model(spec)
    known = catalogue.hyperparameters_for(spec.model)
    _validate_search_space(spec.params, known, spec.model)
    _validate_fixed_params(spec)
    _validate_objective(spec)
    _validate_objectives_and_constraints(spec)
    _validate_enqueued(spec, known)
    _validate_budget(spec)
    _validate_run_options(spec)


def _validate_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name: is empty; give the study a name such as 'freesolv-gin-1'")
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"name: {name!r} is not allowed; use 1-128 letters, digits, '-', '_' or '.'"
        )


def _validate_model(spec: StudySpec) -> None:
    if not spec.model:
        raise InvalidArgument(
            f"model: is empty; choose one of: {', '.join(sorted(catalogue.MODELS))}"
        )
    try:
        catalogue.get_model(spec.model)
    except InvalidArgument as err:
        raise InvalidArgument(f"model: {err}") from None
    try:
        catalogue.check_pairing(spec.model, "" if spec.dataset.path else spec.dataset.name)
    except InvalidArgument as err:
        raise InvalidArgument(f"model: {err}") from None


def _validate_fixed_params(spec: StudySpec) -> None:
    tuned = {p.name for p in spec.params}
    for name in spec.fixed_params:
        if name in tuned:
            raise InvalidArgument(
                f"fixed_params.{name}: is also in search_space; tune it or fix it, not both"
            )
    try:
        catalogue.resolve_params(spec.model, spec.fixed_params)
    except InvalidArgument as err:
        raise InvalidArgument(f"fixed_params: {err}") from None


def _validate_objective(spec: StudySpec) -> None:
    if spec.metric not in catalogue.METRICS:
        raise InvalidArgument(
            f"objective.metric: unknown metric {spec.metric!r}; "
            f"choose one of: {', '.join(sorted(catalogue.METRICS))}"
        )
    if spec.direction not in tuple(Direction):
        raise InvalidArgument(
            f"objective.direction: {spec.direction!r} is not a direction; use minimize or maximize"
        )


def _validate_budget(spec: StudySpec) -> None:
    if not 0 < spec.n_trials <= MAX_TRIALS:
        raise InvalidArgument(f"budget.n_trials: is {spec.n_trials}, but must be 1..{MAX_TRIALS}")
    if not 0 < spec.max_epochs <= MAX_EPOCHS:
        raise InvalidArgument(
            f"budget.max_epochs: is {spec.max_epochs}, but must be 1..{MAX_EPOCHS}"
        )
    if not 0 <= spec.checkpoint_every <= spec.max_epochs:
        raise InvalidArgument(
            f"budget.checkpoint_every: is {spec.checkpoint_every}, but must be 0..max_epochs "
            f"(0..{spec.max_epochs}); save the resume state every 1..{spec.max_epochs} epochs, "
            f"or give 0 for every {DEFAULT_CHECKPOINT_EVERY}"
        )
    if not (math.isfinite(spec.timeout_seconds) and spec.timeout_seconds >= 0):
        raise InvalidArgument(
            f"budget.timeout_seconds: is {spec.timeout_seconds}, but must be >= 0 (0: no limit)"
        )


def _validate_run_options(spec: StudySpec) -> None:
    if not 1 <= spec.keep_checkpoints <= 100:
        raise InvalidArgument(
            f"keep_checkpoints: is {spec.keep_checkpoints}, but must be 1..100 (0 means 1)"
        )
    if not 0 <= spec.seed < 2**32:
        raise InvalidArgument(f"seed: is {spec.seed}, but must be 0..{2**32 - 1}")
    if not 0 < spec.parallelism <= MAX_PARALLELISM:
        raise InvalidArgument(
            f"parallelism: is {spec.parallelism}, but must be 1..{MAX_PARALLELISM}"
        )


def _validate_objectives_and_constraints(spec: StudySpec) -> None:
    valid = {**catalogue.METRICS, **TRIAL_METRICS}
    seen = {spec.metric}
    for i, o in enumerate(spec.extra_objectives, start=1):
        where = f"objectives[{i}]"
        if o.metric not in valid:
            raise InvalidArgument(
                f"{where}.metric: unknown metric {o.metric!r}; choose one of: "
                f"{', '.join(sorted(valid))}"
            )
        if o.metric in seen:
            raise InvalidArgument(f"{where}.metric: {o.metric!r} is already an objective")
        if o.direction not in tuple(Direction):
            raise InvalidArgument(
                f"{where}.direction: {o.direction!r} is not a direction; use minimize or maximize"
            )
        seen.add(o.metric)
    if spec.multi_objective and spec.pruner.name != "none":
        raise InvalidArgument(
            f"pruner.name: {spec.pruner.name!r} cannot prune a multi-objective study "
            "(pruners rank one value); use pruner 'none'"
        )
    for i, c in enumerate(spec.constraints):
        where = f"constraints[{i}]"
        if c.metric not in valid:
            raise InvalidArgument(
                f"{where}.metric: unknown metric {c.metric!r}; choose one of: "
                f"{', '.join(sorted(valid))}"
            )
        if not math.isfinite(c.max):
            raise InvalidArgument(f"{where}.max: is {c.max}, but must be a finite number")


def _validate_enqueued(spec: StudySpec, known: Mapping[str, catalogue.Hyperparameter]) -> None:
    tuned = {p.name for p in spec.params}
    for i, trial in enumerate(spec.enqueued):
        for name in trial:
            if name not in tuned:
                raise InvalidArgument(
                    f"enqueued_trials[{i}].{name}: is not in search_space; enqueue values of "
                    "tuned hyperparameters (fixed ones go in fixed_params)"
                )
        try:
            catalogue.resolve_params(spec.model, trial)
        except InvalidArgument as err:
            raise InvalidArgument(f"enqueued_trials[{i}]: {err}") from None


def default_trial(spec: StudySpec) -> dict[str, Value]:
    """The model family's default configuration, clipped into the searched ranges.

    Enqueued as trial 0: the "no HPO" baseline. A default outside a searched range (e.g.
    weight_decay 0 under a log range) is moved to the nearest bound, so every sampler can
    use the trial; a default not among categorical choices takes the first choice.
    """
    known = catalogue.hyperparameters_for(spec.model)
    out: dict[str, Value] = {}
    for p in spec.params:
        default = known[p.name].default
        d = p.distribution
        if isinstance(d, CategoricalDist):
            out[p.name] = next(
                (c for c in d.choices if type(c) is type(default) and c == default), d.choices[0]
            )
        elif isinstance(d, IntDist) and isinstance(default, int | float):
            iv = min(max(int(default), d.low), d.high)
            out[p.name] = d.low + (iv - d.low) // d.step * d.step
        elif isinstance(d, FloatDist) and isinstance(default, int | float):
            fv = min(max(float(default), d.low), d.high)
            if d.step:
                fv = min(d.low + round((fv - d.low) / d.step) * d.step, d.high)
            out[p.name] = fv
    return out


def _validate_dataset(dataset: DatasetSpec) -> None:
    if dataset.path:
        if dataset.format not in ("", "csv", "sdf"):
            raise InvalidArgument(
                f"dataset.format: {dataset.format!r} is not a file format; use csv or sdf"
            )
    elif not dataset.name:
        raise InvalidArgument(
            "dataset.name: is empty; choose one of: " + ", ".join(sorted(catalogue.DATASETS))
        )
    else:
        try:
            catalogue.get_dataset(dataset.name)
        except InvalidArgument as err:
            raise InvalidArgument(f"dataset.name: {err}") from None
    if not (math.isfinite(dataset.max_invalid_share) and 0 <= dataset.max_invalid_share <= 1):
        raise InvalidArgument(
            f"dataset.max_invalid_share: is {dataset.max_invalid_share}, but must be in [0, 1]"
        )
    if dataset.max_molecules < 0:
        raise InvalidArgument(
            f"dataset.max_molecules: is {dataset.max_molecules}, but must be >= 0 (0: all)"
        )
    if dataset.split not in SPLITS:
        raise InvalidArgument(
            f"dataset.split: unknown split {dataset.split!r}; choose one of: {', '.join(SPLITS)}"
        )
    for label, frac in (
        ("valid_fraction", dataset.valid_fraction),
        ("test_fraction", dataset.test_fraction),
    ):
        if not (math.isfinite(frac) and 0 < frac < 0.5):
            raise InvalidArgument(f"dataset.{label}: is {frac}, but must be in (0, 0.5)")


def _validate_search_space(
    params: tuple[ParamSpec, ...], known: Mapping[str, catalogue.Hyperparameter], model: str
) -> None:
    if not params:
        raise InvalidArgument(
            "search_space: is empty; tune at least one hyperparameter of "
            f"{model!r}: {', '.join(sorted(known))}"
        )
    seen: dict[str, ParamSpec] = {}
    for i, p in enumerate(params):
        where = f"search_space.params[{i}]"
        if not p.name:
            raise InvalidArgument(f"{where}.name: is empty")
        if p.name in seen:
            raise InvalidArgument(f"{where}.name: {p.name!r} appears twice")
        if p.name not in known:
            raise InvalidArgument(
                f"{where}.name: unknown hyperparameter {p.name!r} for model {model!r}; "
                f"choose one of: {', '.join(sorted(known))}"
            )
        _validate_distribution(f"{where} ({p.name})", p.distribution, known[p.name], model)
        _validate_condition(where, p, seen)
        seen[p.name] = p


def _validate_condition(where: str, p: ParamSpec, seen: Mapping[str, ParamSpec]) -> None:
    """A condition names a parameter listed before ``p`` and values that parent can take."""
    if p.condition is None:
        return
    parent = seen.get(p.condition.parent)
    if parent is None:
        raise InvalidArgument(
            f"{where}.condition.parent: {p.condition.parent!r} is not a parameter "
            "listed before this one; list the parent first"
        )
    if not p.condition.values:
        raise InvalidArgument(f"{where}.condition.values: is empty; give at least one")
    for v in p.condition.values:
        if not _can_take(parent.distribution, v):
            raise InvalidArgument(
                f"{where}.condition.values: {v!r} is not a value "
                f"{p.condition.parent!r} can take, so {p.name!r} would never be sampled"
            )


def _validate_distribution(
    where: str, dist: Distribution, hp: catalogue.Hyperparameter, model: str
) -> None:
    if isinstance(dist, IntDist):
        _validate_int_range(where, dist, hp)
    elif isinstance(dist, FloatDist):
        _validate_float_range(where, dist, hp)
    else:
        _validate_choices(where, dist, hp, model)


def _validate_int_range(where: str, dist: IntDist, hp: catalogue.Hyperparameter) -> None:
    if hp.kind != "int":
        raise InvalidArgument(f"{where}: is an int range, but the hyperparameter is {hp.kind}")
    if dist.low > dist.high:
        raise InvalidArgument(
            f"{where}: low ({dist.low}) > high ({dist.high}); low must be <= high"
        )
    if dist.log and dist.low < 1:
        raise InvalidArgument(f"{where}: log scale needs low >= 1 (got {dist.low})")
    if dist.step < 1:
        raise InvalidArgument(f"{where}: step is {dist.step}, but must be >= 1")
    if dist.log and dist.step != 1:
        raise InvalidArgument(f"{where}: step cannot be used with log scale")
    _check_range(where, float(dist.low), float(dist.high), hp)


def _validate_float_range(where: str, dist: FloatDist, hp: catalogue.Hyperparameter) -> None:
    if hp.kind not in ("float",):
        raise InvalidArgument(f"{where}: is a float range, but the hyperparameter is {hp.kind}")
    if not (math.isfinite(dist.low) and math.isfinite(dist.high)):
        raise InvalidArgument(f"{where}: low and high must be finite numbers")
    if dist.low > dist.high:
        raise InvalidArgument(
            f"{where}: low ({dist.low}) > high ({dist.high}); low must be <= high"
        )
    if dist.log and dist.low <= 0:
        raise InvalidArgument(f"{where}: log scale needs low > 0 (got {dist.low})")
    if dist.step is not None and not (math.isfinite(dist.step) and dist.step > 0):
        raise InvalidArgument(f"{where}: step is {dist.step}, but must be a number > 0")
    if dist.log and dist.step is not None:
        raise InvalidArgument(f"{where}: step cannot be used with log scale")
    _check_range(where, dist.low, dist.high, hp)


def _validate_choices(
    where: str, dist: CategoricalDist, hp: catalogue.Hyperparameter, model: str
) -> None:
    if not dist.choices:
        raise InvalidArgument(f"{where}: categorical choices are empty; give at least one")
    if len(set(map(repr, dist.choices))) != len(dist.choices):
        raise InvalidArgument(f"{where}: categorical choices repeat a value")
    for c in dist.choices:
        try:
            catalogue.resolve_params(model, {hp.name: c})
        except InvalidArgument as err:
            raise InvalidArgument(f"{where}: choice {c!r} is not valid: {err}") from None


def _can_take(dist: Distribution, v: Value) -> bool:
    """Whether a parameter of distribution ``dist`` can take the value ``v``."""
    if isinstance(dist, CategoricalDist):
        return any(type(v) is type(c) and v == c for c in dist.choices)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    if isinstance(dist, IntDist) and not float(v).is_integer():
        return False
    return dist.low <= v <= dist.high


def _check_range(where: str, low: float, high: float, hp: catalogue.Hyperparameter) -> None:
    if hp.low is not None and low < hp.low:
        raise InvalidArgument(f"{where}: low ({low:g}) is below the valid minimum {hp.low:g}")
    if hp.high is not None and high > hp.high:
        raise InvalidArgument(f"{where}: high ({high:g}) is above the valid maximum {hp.high:g}")
