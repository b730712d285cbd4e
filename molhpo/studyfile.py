"""Study files (YAML) and dicts to StartStudyRequest.

A study file says the same as StartStudyRequest, in a friendlier shape:

.. code-block:: yaml

    name: freesolv-gin
    dataset: {name: freesolv, split: random, split_seed: 0}
    model: gin
    search_space:
      hidden_channels: {type: int, low: 16, high: 256, log: true}
      pooling: {type: categorical, choices: [add, mean]}
      units_2: {type: int, low: 32, high: 512,
                condition: {parent: num_extra_layers, values: [2, 3, 4]}}
    fixed_params: {batch_size: 32}
    objective: {metric: rmse, direction: minimize}
    sampler: {name: tpe, options: {n_startup_trials: 8}}
    pruner: {name: hyperband, options: {reduction_factor: 3}}
    budget: {n_trials: 24, max_epochs: 64, timeout_seconds: 0, checkpoint_every: 5}
    parallelism: 2
    seed: 0

``budget.checkpoint_every`` is how often (in epochs) trainers save the state a trial
dispatched again resumes from (0 or absent: every 5; at most ``max_epochs``).

Files are read with ``yaml.safe_load`` (no arbitrary objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from molhpo.contract.enums import Direction, direction_to_proto
from molhpo.contract.errors import InvalidArgument
from molhpo.v1 import common_pb2, study_pb2

_TOP_KEYS = {
    "objectives",
    "constraints",
    "skip_default_trial",
    "enqueued_trials",
    "keep_checkpoints",
    "return_test_predictions",
    "name",
    "dataset",
    "model",
    "search_space",
    "fixed_params",
    "objective",
    "sampler",
    "pruner",
    "budget",
    "parallelism",
    "seed",
    "description",
}


def load(path: str | Path) -> study_pb2.StartStudyRequest:
    """Read a YAML study file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise InvalidArgument(f"study file {str(p)!r} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidArgument(f"study file {str(p)!r} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"study file {str(p)!r} must hold a mapping of study fields")
    return from_dict(data)


def _value(v: Any, where: str) -> common_pb2.ParamValue:
    if isinstance(v, bool):
        return common_pb2.ParamValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.ParamValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.ParamValue(float_value=v)
    if isinstance(v, str):
        return common_pb2.ParamValue(string_value=v)
    raise InvalidArgument(f"{where}: {v!r} is not a number, string or boolean")


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
        raise InvalidArgument(f"{where}: must be an integer, got {v!r}")
    return int(v)


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidArgument(f"{where}: must be a number, got {v!r}")
    return float(v)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise InvalidArgument(f"{where}: must be true or false, got {v!r}")
    return v


def _param(name: str, d: Any, where: str) -> common_pb2.ParamSpec:
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{where}: must be a mapping with 'type' and its bounds or choices")
    allowed = {"type", "low", "high", "step", "log", "choices", "condition", "name"}
    extra = set(d) - allowed
    if extra:
        raise InvalidArgument(f"{where}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    p = common_pb2.ParamSpec(name=name)
    kind = d.get("type")
    try:
        _distribution(p, kind, d, where)
    except KeyError as err:
        raise InvalidArgument(f"{where}: {err.args[0]!r} is required for type {kind}") from None
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"{where}: {err}") from None
    cond = d.get("condition")
    if cond is not None:
        _condition(p, cond, where)
    return p


def _distribution(p: common_pb2.ParamSpec, kind: Any, d: Mapping[str, Any], where: str) -> None:
    """Set ``p``'s distribution of type ``kind`` from the file's mapping ``d``."""
    if kind == "int":
        p.int.CopyFrom(
            common_pb2.IntDistribution(
                low=_int(d["low"], f"{where}.low"),
                high=_int(d["high"], f"{where}.high"),
                step=_int(d.get("step", 0), f"{where}.step"),
                log=_bool(d.get("log", False), f"{where}.log"),
            )
        )
    elif kind == "float":
        p.float.CopyFrom(
            common_pb2.FloatDistribution(
                low=_float(d["low"], f"{where}.low"),
                high=_float(d["high"], f"{where}.high"),
                step=_float(d.get("step", 0.0), f"{where}.step"),
                log=_bool(d.get("log", False), f"{where}.log"),
            )
        )
    elif kind == "categorical":
        choices = d.get("choices")
        if not isinstance(choices, list):
            raise InvalidArgument(f"{where}.choices: must be a list")
        p.categorical.choices.extend(_value(c, f"{where}.choices") for c in choices)
    else:
        raise InvalidArgument(
            f"{where}.type: {kind!r} is not a parameter type; use int, float or categorical"
        )


def _condition(p: common_pb2.ParamSpec, cond: Any, where: str) -> None:
    if not isinstance(cond, Mapping) or "parent" not in cond:
        raise InvalidArgument(f"{where}.condition: must be {{parent: NAME, values: [...]}}")
    values = cond.get("values", [])
    if not isinstance(values, list):
        values = [values]
    p.condition.parent = str(cond["parent"])
    p.condition.values.extend(_value(v, f"{where}.condition.values") for v in values)


def from_dict(data: Mapping[str, Any]) -> study_pb2.StartStudyRequest:
    """A StartStudyRequest from a study-file dict (search space as a mapping or a list)."""
    extra = set(data) - _TOP_KEYS
    if extra:
        raise InvalidArgument(
            f"unknown study fields {sorted(extra)}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    body = {k: v for k, v in data.items() if k not in ("search_space", "objective", "objectives")}
    req = study_pb2.StartStudyRequest()
    try:
        json_format.ParseDict(body, req)
    except json_format.ParseError as err:
        raise InvalidArgument(f"study: {err}") from None
    for name, d in _space_items(data.get("search_space") or {}):
        req.search_space.params.append(_param(str(name), d, f"search_space.{name}"))
    objective = data.get("objective")
    if objective is not None:
        _objective(objective, "objective", req.objective)
    objectives = data.get("objectives")
    if objectives is not None:
        if not isinstance(objectives, list):
            raise InvalidArgument("objectives: must be a list of {metric, direction}")
        for i, o in enumerate(objectives):
            _objective(o, f"objectives[{i}]", req.objectives.add())
    return req


def _space_items(space: Any) -> list[tuple[Any, Any]]:
    """The search space's (name, distribution) pairs, written as a mapping or as a list."""
    if isinstance(space, Mapping):
        return list(space.items())
    if not isinstance(space, list):
        raise InvalidArgument("search_space: must be a mapping of name -> distribution")
    items: list[tuple[Any, Any]] = []
    for i, entry in enumerate(space):
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise InvalidArgument(f"search_space[{i}]: must be a mapping with a name")
        items.append((str(entry["name"]), entry))
    return items


def _objective(objective: Any, where: str, out: common_pb2.Objective) -> None:
    if not isinstance(objective, Mapping):
        raise InvalidArgument(f"{where}: must be {{metric: NAME, direction: minimize|maximize}}")
    out.metric = str(objective.get("metric", ""))
    direction = objective.get("direction")
    if direction is not None:
        if direction not in tuple(Direction):
            raise InvalidArgument(
                f"{where}.direction: {direction!r} is not a direction; use minimize or maximize"
            )
        out.direction = direction_to_proto(direction)


def load_race(path: str | Path) -> study_pb2.StartRaceRequest:
    """A race file: a study file (the shared workload and budget) with a ``race`` section::

    race:
      name: freesolv-race
      concurrent: false        # default: set-ups run one after another
      target_value: 0          # 0: the first set-up's best validation value
      entries:
        - {label: random, sampler: {name: random}, pruner: {name: none}}
        - {label: tpe-hyperband, sampler: {name: tpe}, pruner: {name: hyperband}}
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as err:
        raise InvalidArgument(f"race file {str(p)!r} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InvalidArgument(f"race file {str(p)!r} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("race"), Mapping):
        raise InvalidArgument(f"race file {str(p)!r} needs a 'race' section with entries")
    race = dict(data["race"])
    body = {k: v for k, v in data.items() if k != "race"}
    req = study_pb2.StartRaceRequest(
        name=str(race.pop("name", body.get("name", ""))),
        base=from_dict(body),
        concurrent=bool(race.pop("concurrent", False)),
        target_value=float(race.pop("target_value", 0.0)),
    )
    entries = race.pop("entries", None)
    if race:
        raise InvalidArgument(
            f"race: unknown keys {sorted(race)}; allowed: name, concurrent, target_value, entries"
        )
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("race.entries: give a list of {label, sampler, pruner}")
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping) or "label" not in e:
            raise InvalidArgument(f"race.entries[{i}]: needs a label")
        try:
            json_format.ParseDict(dict(e), req.entries.add())
        except json_format.ParseError as err:
            raise InvalidArgument(f"race.entries[{i}]: {err}") from None
    return req
