"""Protos in, domain objects out (and back): the coordinator's only contact with generated code
besides the servicers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import optuna
from google.protobuf import json_format, struct_pb2

from coordinator.events import Event
from coordinator.objectives import pareto_front
from coordinator.spec import (
    TRIAL_METRICS,
    CategoricalDist,
    ComponentSpec,
    Condition,
    ConstraintSpec,
    DatasetSpec,
    Distribution,
    FloatDist,
    IntDist,
    ObjectiveSpec,
    ParamSpec,
    StudySpec,
    Value,
)
from molhpo.contract import attrs
from molhpo.contract.enums import Direction, direction_from_proto, direction_to_proto
from molhpo.contract.errors import InvalidArgument

if TYPE_CHECKING:
    from coordinator.capabilities import Capabilities, ComponentDescription
    from coordinator.datasets import DatasetSummary
    from coordinator.evaluation import RaceRow
    from coordinator.lifecycle import StudyStatus
from molhpo.contract import catalogue
from molhpo.v1 import common_pb2, study_pb2

DEFAULT_SAMPLER = "tpe"
DEFAULT_PRUNER = "hyperband"


def value_from_proto(v: common_pb2.ParamValue, where: str = "value") -> Value:
    """A Python value from a ParamValue."""
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where}: no value is set")
    out: Value = getattr(v, kind)
    return out


def value_to_proto(v: object) -> common_pb2.ParamValue:
    """A ParamValue from a Python value (bool before int: bool is an int in Python)."""
    if isinstance(v, bool):
        return common_pb2.ParamValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.ParamValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.ParamValue(float_value=v)
    return common_pb2.ParamValue(string_value=str(v))


def struct_to_dict(s: struct_pb2.Struct, where: str = "options") -> dict[str, object]:
    """A Struct as a plain dict; whole-number floats become ints (Struct has only doubles)."""
    try:
        raw = json_format.MessageToDict(s)
    except ValueError:
        # NaN and infinity have no JSON form; no option or hyperparameter takes them either.
        raise InvalidArgument(f"{where}: holds NaN or infinity; use finite numbers") from None
    return {k: _intify(v) for k, v in raw.items()}


def _intify(v: object) -> object:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def dict_to_struct(d: Mapping[str, object]) -> struct_pb2.Struct:
    """A Struct from a plain dict."""
    s = struct_pb2.Struct()
    s.update(dict(d))  # type: ignore[arg-type]
    return s


def _distribution(p: common_pb2.ParamSpec, where: str) -> Distribution:
    kind = p.WhichOneof("distribution")
    if kind == "int":
        d = p.int
        return IntDist(low=d.low, high=d.high, step=d.step or 1, log=d.log)
    if kind == "float":
        f = p.float
        return FloatDist(low=f.low, high=f.high, step=f.step or None, log=f.log)
    if kind == "categorical":
        return CategoricalDist(
            tuple(
                value_from_proto(c, f"{where}.categorical.choices[{i}]")
                for i, c in enumerate(p.categorical.choices)
            )
        )
    raise InvalidArgument(f"{where}: no distribution is set; give int, float or categorical")


def spec_from_proto(req: study_pb2.StartStudyRequest) -> StudySpec:
    """The domain spec of a request, with defaults filled in (not yet validated)."""
    params = []
    for i, p in enumerate(req.search_space.params):
        where = f"search_space.params[{i}]"
        cond = None
        if p.HasField("condition"):
            cond = Condition(
                parent=p.condition.parent,
                values=tuple(
                    value_from_proto(v, f"{where}.condition.values[{j}]")
                    for j, v in enumerate(p.condition.values)
                ),
            )
        params.append(ParamSpec(name=p.name, distribution=_distribution(p, where), condition=cond))
    objectives = [_objective(o) for o in req.objectives] or [_objective(req.objective)]
    metric, direction = objectives[0].metric, objectives[0].direction
    multi = len(objectives) > 1
    return StudySpec(
        name=req.name,
        dataset=DatasetSpec(
            name=req.dataset.name,
            split=req.dataset.split or "random",
            split_seed=req.dataset.split_seed,
            valid_fraction=req.dataset.valid_fraction or 0.1,
            test_fraction=req.dataset.test_fraction or 0.1,
            path=req.dataset.path,
            format=req.dataset.format,
            smiles_column=req.dataset.smiles_column or "smiles",
            target_columns=tuple(req.dataset.target_columns),
            target=req.dataset.target,
            max_invalid_share=req.dataset.max_invalid_share or 0.1,
            max_molecules=req.dataset.max_molecules,
        ),
        model=req.model,
        params=tuple(params),
        fixed_params=struct_to_dict(req.fixed_params, "fixed_params"),
        metric=metric,
        direction=direction,
        sampler=ComponentSpec(
            req.sampler.name or DEFAULT_SAMPLER,
            struct_to_dict(req.sampler.options, "sampler.options"),
        ),
        pruner=ComponentSpec(
            req.pruner.name or ("none" if multi else DEFAULT_PRUNER),
            struct_to_dict(req.pruner.options, "pruner.options"),
        ),
        n_trials=req.budget.n_trials,
        max_epochs=req.budget.max_epochs,
        checkpoint_every=req.budget.checkpoint_every,
        timeout_seconds=req.budget.timeout_seconds,
        parallelism=req.parallelism or 1,
        seed=req.seed,
        description=req.description,
        extra_objectives=tuple(objectives[1:]),
        constraints=tuple(ConstraintSpec(c.metric, c.max) for c in req.constraints),
        enqueue_default=not req.skip_default_trial,
        enqueued=tuple(
            struct_to_dict(t, f"enqueued_trials[{i}]") for i, t in enumerate(req.enqueued_trials)
        ),
        keep_checkpoints=req.keep_checkpoints or 1,
        return_test_predictions=req.return_test_predictions,
        request_id=req.request_id,
    )


def _objective(o: common_pb2.Objective) -> ObjectiveSpec:
    metric = o.metric or "rmse"
    natural = {**catalogue.METRICS, **TRIAL_METRICS}.get(metric, Direction.MINIMIZE)
    return ObjectiveSpec(metric, direction_from_proto(o.direction) or natural)


def objective_to_proto(metric: str, direction: str) -> common_pb2.Objective:
    """An objective (a metric and its direction) as it travels in requests and trial specs."""
    return common_pb2.Objective(metric=metric, direction=direction_to_proto(direction))


def _objective_proto(o: ObjectiveSpec) -> common_pb2.Objective:
    return objective_to_proto(o.metric, o.direction)


_STUDY_DIRECTIONS = {
    Direction.MINIMIZE: optuna.study.StudyDirection.MINIMIZE,
    Direction.MAXIMIZE: optuna.study.StudyDirection.MAXIMIZE,
}


def study_direction(direction: str) -> optuna.study.StudyDirection:
    """A direction as Optuna's enum, for creating a study."""
    return _STUDY_DIRECTIONS[Direction(direction)]


def direction_of(direction: optuna.study.StudyDirection) -> Direction:
    """The direction of an Optuna study (NOT_SET, which molhpo never creates, reads as
    minimize)."""
    if direction == optuna.study.StudyDirection.MAXIMIZE:
        return Direction.MAXIMIZE
    return Direction.MINIMIZE


def dataset_to_proto(d: DatasetSpec) -> common_pb2.DatasetRef:
    """A DatasetSpec as the DatasetRef that travels in requests and trial specs."""
    return common_pb2.DatasetRef(
        name=d.name,
        split=d.split,
        split_seed=d.split_seed,
        valid_fraction=d.valid_fraction,
        test_fraction=d.test_fraction,
        path=d.path,
        format=d.format,
        smiles_column=d.smiles_column,
        target_columns=list(d.target_columns),
        target=d.target,
        max_invalid_share=d.max_invalid_share,
        max_molecules=d.max_molecules,
    )


def spec_to_proto(spec: StudySpec) -> study_pb2.StartStudyRequest:
    """The request that describes a spec (defaults filled in)."""
    req = study_pb2.StartStudyRequest(
        name=spec.name,
        dataset=dataset_to_proto(spec.dataset),
        model=spec.model,
        objective=objective_to_proto(spec.metric, spec.direction),
        sampler=common_pb2.ComponentSpec(
            name=spec.sampler.name, options=dict_to_struct(spec.sampler.options)
        ),
        pruner=common_pb2.ComponentSpec(
            name=spec.pruner.name, options=dict_to_struct(spec.pruner.options)
        ),
        budget=common_pb2.Budget(
            n_trials=spec.n_trials,
            max_epochs=spec.max_epochs,
            timeout_seconds=spec.timeout_seconds,
            checkpoint_every=spec.checkpoint_every,
        ),
        parallelism=spec.parallelism,
        seed=spec.seed,
        description=spec.description,
        fixed_params=dict_to_struct(spec.fixed_params),
        skip_default_trial=not spec.enqueue_default,
        keep_checkpoints=spec.keep_checkpoints,
        return_test_predictions=spec.return_test_predictions,
        request_id=spec.request_id,
    )
    if spec.multi_objective:
        req.objectives.extend(_objective_proto(o) for o in spec.objectives)
    req.constraints.extend(
        study_pb2.Constraint(metric=c.metric, max=c.max) for c in spec.constraints
    )
    req.enqueued_trials.extend(dict_to_struct(t) for t in spec.enqueued)
    for p in spec.params:
        ps = req.search_space.params.add(name=p.name)
        d = p.distribution
        if isinstance(d, IntDist):
            ps.int.CopyFrom(
                common_pb2.IntDistribution(low=d.low, high=d.high, step=d.step, log=d.log)
            )
        elif isinstance(d, FloatDist):
            ps.float.CopyFrom(
                common_pb2.FloatDistribution(low=d.low, high=d.high, step=d.step or 0.0, log=d.log)
            )
        else:
            ps.categorical.choices.extend(value_to_proto(c) for c in d.choices)
        if p.condition is not None:
            ps.condition.parent = p.condition.parent
            ps.condition.values.extend(value_to_proto(v) for v in p.condition.values)
    return req


def request_to_json(req: study_pb2.StartStudyRequest) -> str:
    """The request as JSON, as kept with the study in the store."""
    return json_format.MessageToJson(req, indent=None, preserving_proto_field_name=True)


def request_from_json(text: str) -> study_pb2.StartStudyRequest:
    """Inverse of request_to_json."""
    return json_format.Parse(text, study_pb2.StartStudyRequest())


_TRIAL_STATES = {
    "RUNNING": common_pb2.TRIAL_STATE_RUNNING,
    "COMPLETE": common_pb2.TRIAL_STATE_COMPLETE,
    "PRUNED": common_pb2.TRIAL_STATE_PRUNED,
    "FAIL": common_pb2.TRIAL_STATE_FAIL,
    "WAITING": common_pb2.TRIAL_STATE_WAITING,
}


def trial_to_proto(t: optuna.trial.FrozenTrial) -> study_pb2.TrialInfo:
    """A stored trial as TrialInfo."""
    ua = t.user_attrs
    info = study_pb2.TrialInfo(
        number=t.number,
        trial_id=t._trial_id,
        state=_TRIAL_STATES.get(t.state.name, common_pb2.TRIAL_STATE_UNSPECIFIED),
        epochs_trained=int(ua.get("epochs_trained", 0)),
        last_step=t.last_step or 0,
        best_step=int(ua.get("best_step", 0)),
        feasible=bool(ua.get(attrs.TRIAL_FEASIBLE, True)),
        n_parameters=int(ua.get(attrs.TRIAL_N_PARAMETERS, 0) or 0),
        failure_class=str(ua.get(attrs.TRIAL_FAILURE_CLASS, "")),
        failure_reason=str(ua.get(attrs.TRIAL_FAILURE_REASON, "")),
        trainer_id=str(ua.get("trainer_id", "")),
    )
    if t.values is not None:
        info.value = t.values[0]
        info.has_value = True
        if len(t.values) > 1:
            info.values.extend(t.values)
    for k, v in t.params.items():
        info.params[k].CopyFrom(value_to_proto(v))
    for k, v in dict(ua.get(attrs.TRIAL_VALID, {})).items():
        info.valid.values[k] = float(v)
    for k, v in dict(ua.get("test_metrics", {})).items():
        info.test.values[k] = float(v)
    for step, v in t.intermediate_values.items():
        info.intermediate_values[step] = v
    if t.datetime_start is not None and t.datetime_complete is not None:
        info.seconds = (t.datetime_complete - t.datetime_start).total_seconds()
    return info


def status_to_proto(s: StudyStatus, with_request: bool = True) -> study_pb2.StudyInfo:
    """A StudyStatus as StudyInfo: counts, best trial, epochs trained."""
    info = study_pb2.StudyInfo(
        name=s.name,
        state=common_pb2.StudyState.ValueType(s.state.value),
        start_time=s.start_time,
        end_time=s.end_time,
        message=s.message,
        wait_reason=(
            study_pb2.WaitReason.ValueType(s.waiting.reason.value)
            if s.waiting is not None
            else study_pb2.WAIT_REASON_NONE
        ),
        wait_message=s.waiting.message if s.waiting is not None else "",
    )
    if with_request and s.request_json:
        info.request.CopyFrom(request_from_json(s.request_json))
    _count_trials(info, s.trials)
    if s.dataset is not None:
        info.dataset.CopyFrom(summary_to_proto(s.dataset))
    if len(s.directions) > 1:
        front = [
            (t.number, list(t.values))
            for t in s.trials
            if t.state.name == "COMPLETE" and t.values is not None and _feasible(t)
        ]
        if front:
            by_number = {t.number: t for t in s.trials}
            for number in pareto_front(front, s.directions):
                info.best_trials.append(trial_to_proto(by_number[number]))
    else:
        best = _best_trial(s.trials, s.directions)
        if best is not None:
            info.best_trial.CopyFrom(trial_to_proto(best))
    return info


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return bool(t.user_attrs.get(attrs.TRIAL_FEASIBLE, True))


def _count_trials(info: study_pb2.StudyInfo, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
    """Trials by state, and the epochs all of them trained."""
    epochs = 0
    for t in trials:
        name = t.state.name
        if name == "RUNNING":
            info.n_running += 1
        elif name == "COMPLETE":
            info.n_complete += 1
        elif name == "PRUNED":
            info.n_pruned += 1
        elif name == "FAIL":
            info.n_failed += 1
        epochs += int(t.user_attrs.get("epochs_trained", 0) or 0)
    info.epochs_trained = epochs


def _best_trial(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str]
) -> optuna.trial.FrozenTrial | None:
    """The first feasible complete trial with the best value of a single-objective study."""
    best: optuna.trial.FrozenTrial | None = None
    for t in trials:
        if t.state.name != "COMPLETE" or t.value is None or not _feasible(t):
            continue
        if (
            best is None
            or best.value is None
            or (
                t.value < best.value
                if directions[0] == Direction.MINIMIZE
                else t.value > best.value
            )
        ):
            best = t
    return best


def summary_to_proto(d: DatasetSummary) -> common_pb2.DatasetSummary:
    """A DatasetSummary as its proto."""
    return common_pb2.DatasetSummary(
        name=d.name,
        n_molecules=d.n_molecules,
        n_invalid=d.n_invalid,
        invalid_examples=list(d.invalid_examples),
        target_names=list(d.target_names),
        invalid_counts=dict(d.invalid_counts),
        invalid_rows=[
            common_pb2.InvalidRow(row=r.row, text=r.text, cause=r.cause, detail=r.detail)
            for r in d.invalid_rows
        ],
    )


def race_to_proto(
    name: str,
    rows: list[RaceRow],
    target: float | None,
    finished: bool,
    statuses: Mapping[str, StudyStatus],
) -> study_pb2.RaceInfo:
    """A race table as RaceInfo."""
    info = study_pb2.RaceInfo(name=name, target_value=target or 0.0, finished=finished)
    for r in rows:
        row = info.rows.add(
            label=r.label,
            wall_seconds=r.wall_seconds,
            trainer_seconds=r.trainer_seconds,
            epochs=r.epochs,
            best_value=r.best_value if r.best_value is not None else float("nan"),
            seconds_to_target=r.seconds_to_target,
            epochs_to_target=r.epochs_to_target,
        )
        row.best_test.values.update(r.best_test)
        row.study.CopyFrom(status_to_proto(statuses[r.study], with_request=False))
    return info


def event_to_proto(e: Event) -> study_pb2.StudyEvent:
    """An Event as StudyEvent (without the study snapshot)."""
    return study_pb2.StudyEvent(
        sequence=e.sequence,
        kind=study_pb2.StudyEvent.Kind.ValueType(e.kind.value),
        time=e.time,
        trial_number=e.trial_number,
        step=e.step,
        value=e.value,
        message=e.message,
    )


def capabilities_to_proto(c: Capabilities) -> study_pb2.ListCapabilitiesResponse:
    """What studies can use, as ListCapabilitiesResponse."""

    def components(descriptions: Sequence[ComponentDescription]) -> list[study_pb2.ComponentInfo]:
        return [
            study_pb2.ComponentInfo(
                name=d.name,
                summary=d.summary,
                options=[
                    study_pb2.ComponentOption(name=k, type_and_default=v)
                    for k, v in sorted(d.options.items())
                ],
            )
            for d in descriptions
        ]

    return study_pb2.ListCapabilitiesResponse(
        trainers=[
            study_pb2.TrainerCapabilities(
                trainer_id=r.trainer_id,
                device=r.device,
                slots=r.slots,
                models=list(r.models),
                datasets=list(r.datasets),
                file_formats=list(r.file_formats),
            )
            for r in c.trainers
        ],
        models=list(c.offer.models),
        datasets=list(c.offer.datasets),
        file_formats=list(c.offer.file_formats),
        samplers=components(c.samplers),
        pruners=components(c.pruners),
    )
