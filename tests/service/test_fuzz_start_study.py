"""Property-based fuzzing of StudyService.StartStudy on one real coordinator.

Hypothesis sends at least 1000 StartStudyRequest messages to a real coordinator server (port 0,
a real redis-server, a SQLite store in a temporary folder, no trainers): completely random
requests and single-field mutations of a valid study file (examples/freesolv_mlp.yaml). Every
answer must be OK or INVALID_ARGUMENT, or ALREADY_EXISTS for a name this test started a study
under before; ALREADY_EXISTS for any other name, or any other status (INTERNAL, UNKNOWN,
DEADLINE_EXCEEDED, UNAVAILABLE, ...), is a bug in validation and fails the test with the
request printed. Studies that start are stopped at once. Afterwards the coordinator must still
answer a health check SERVING, and ListStudies with exactly the studies this test started.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import RedisServer
from google.protobuf import struct_pb2, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.server import CoordinatorServer, make_server
from coordinator.settings import CoordinatorSettings
from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.contract import catalogue
from molhpo.contract.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MolhpoError
from molhpo.v1 import common_pb2, study_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_mlp.yaml"
BASE_NAME = "freesolv-mlp"
MIN_EXAMPLES = 1000
CALL_TIMEOUT_S = 30.0

# ---- values ----------------------------------------------------------------------------------

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)

SPECIAL_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.05,
    0.5,
    0.9,
    1e-6,
    1e-300,
    5e-324,
    -5e-324,
    1e6,
    1e300,
    1.7976931348623157e308,
    -1e300,
    math.nan,
    math.inf,
    -math.inf,
]

SPECIAL_TEXT = [
    "",
    " ",
    "a",
    "freesolv-mlp",
    "x" * 128,
    "x" * 129,
    "y" * 5000,
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "/",
    "name with spaces",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "ünïcødé",
    "名前",
    "emoji-\U0001f600",
    "'; DROP TABLE studies; --",
    "%s%n{0}",
    "\u202e",
    "\ufeff",
]

MODEL_NAMES = sorted(catalogue.MODELS)
DATASET_NAMES = sorted(catalogue.DATASETS)
HP_NAMES = sorted({n for m in MODEL_NAMES for n in catalogue.hyperparameters_for(m)})
METRIC_NAMES = [*sorted(catalogue.METRICS), "n_parameters", "train_seconds"]
SAMPLER_NAMES = ["random", "tpe", "gp", "cmaes", "qmc", "grid", "nsga2"]
PRUNER_NAMES = ["hyperband", "asha", "median", "percentile", "patient", "none"]
OPTION_NAMES = [
    "n_startup_trials",
    "n_ei_candidates",
    "multivariate",
    "constant_liar",
    "deterministic_objective",
    "sigma0",
    "with_margin",
    "lr_adapt",
    "qmc_type",
    "scramble",
    "n_points",
    "population_size",
    "mutation_prob",
    "crossover_prob",
    "swapping_prob",
    "min_resource",
    "reduction_factor",
    "bootstrap_count",
    "min_early_stopping_rate",
    "n_warmup_steps",
    "interval_steps",
    "n_min_trials",
    "percentile",
    "patience",
    "min_delta",
    "wrapped",
    "wrapped_options",
]
SPLITS = ["random", "scaffold", "given"]
DATASET_PATHS = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "mols.csv",
    "./mols.csv",
    "missing.csv",
    "mols.sdf",
    "sub",
    "sub/../mols.csv",
    "sub/../../mols.csv",
    "/",
    "nul\x00byte.csv",
    "z" * 300 + ".csv",
]

floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats())
int64s = st.one_of(
    st.sampled_from([0, 1, -1, 2, 3, 32, 512, 1024, 100_000, INT64[0], INT64[1]]),
    st.integers(-1000, 1000),
    st.integers(*INT64),
)
int32s = st.one_of(
    st.sampled_from([0, 1, -1, 2, 64, 1_000_000, 1_000_001, 100_000, INT32[0], INT32[1]]),
    st.integers(-100, 100),
    st.integers(*INT32),
)
texts = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40))


def names_of(known: list[str]) -> st.SearchStrategy[str]:
    """Known names most of the time, odd ones otherwise."""
    return st.one_of(st.sampled_from(known), texts, st.sampled_from(known).map(str.upper))


study_names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.\-]{1,128}", fullmatch=True),
    texts,
    st.text(min_size=100, max_size=300),
)

# Struct values: JSON-like, nested, including NaN/inf (Struct numbers are doubles).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.sampled_from([0, 1, -1, 2, 3, 10, 1000]),
    floats,
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(OPTION_NAMES), texts), inner, max_size=4),
    ),
    max_leaves=10,
)


def structs(keys: st.SearchStrategy[str]) -> st.SearchStrategy[struct_pb2.Struct]:
    """A Struct with keys from ``keys`` and any JSON-like values."""

    def build(d: dict[str, Any]) -> struct_pb2.Struct:
        s = struct_pb2.Struct()
        s.update(d)
        return s

    return st.dictionaries(keys, json_values, max_size=5).map(build)


option_structs = structs(st.one_of(st.sampled_from(OPTION_NAMES), texts))
param_structs = structs(names_of(HP_NAMES))

param_values = st.one_of(
    st.builds(common_pb2.ParamValue, int_value=int64s),
    st.builds(common_pb2.ParamValue, float_value=floats),
    st.builds(common_pb2.ParamValue, string_value=texts),
    st.builds(common_pb2.ParamValue, bool_value=st.booleans()),
    st.just(common_pb2.ParamValue()),  # no value set
)

int_dists = st.builds(
    common_pb2.IntDistribution,
    low=int64s,
    high=int64s,
    step=st.one_of(st.sampled_from([0, 1, 2, 32, -1]), int64s),
    log=st.booleans(),
)
float_dists = st.builds(
    common_pb2.FloatDistribution,
    low=floats,
    high=floats,
    step=st.one_of(st.sampled_from([0.0, 0.0, 0.05, 1e-300, 5e-324, math.nan, -0.1]), floats),
    log=st.booleans(),
)
categorical_dists = st.builds(
    common_pb2.CategoricalDistribution, choices=st.lists(param_values, max_size=5)
)
conditions = st.builds(
    common_pb2.Condition, parent=names_of(HP_NAMES), values=st.lists(param_values, max_size=4)
)


@st.composite
def param_specs(draw: st.DrawFn) -> common_pb2.ParamSpec:
    """One tuned hyperparameter with any (or no) distribution and maybe a condition."""
    p = common_pb2.ParamSpec(name=draw(names_of(HP_NAMES)))
    kind = draw(st.sampled_from(["int", "float", "categorical", "none"]))
    if kind == "int":
        p.int.CopyFrom(draw(int_dists))
    elif kind == "float":
        p.float.CopyFrom(draw(float_dists))
    elif kind == "categorical":
        p.categorical.CopyFrom(draw(categorical_dists))
    if draw(st.booleans()):
        p.condition.CopyFrom(draw(conditions))
    return p


search_spaces = st.builds(common_pb2.SearchSpace, params=st.lists(param_specs(), max_size=6))
directions = st.sampled_from([0, 1, 2, 3, -1])
objectives = st.builds(common_pb2.Objective, metric=names_of(METRIC_NAMES), direction=directions)
constraints = st.builds(study_pb2.Constraint, metric=names_of(METRIC_NAMES), max=floats)
samplers = st.builds(common_pb2.ComponentSpec, name=names_of(SAMPLER_NAMES), options=option_structs)
pruners = st.builds(common_pb2.ComponentSpec, name=names_of(PRUNER_NAMES), options=option_structs)
budgets = st.builds(common_pb2.Budget, n_trials=int32s, timeout_seconds=floats, max_epochs=int32s)
fractions = st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.49, 0.5, -0.1, 1.0]), floats)
dataset_refs = st.builds(
    common_pb2.DatasetRef,
    name=names_of(DATASET_NAMES),
    split=names_of(SPLITS),
    split_seed=int64s,
    valid_fraction=fractions,
    test_fraction=fractions,
    path=st.one_of(st.sampled_from(DATASET_PATHS), texts),
    format=st.one_of(st.sampled_from(["", "csv", "sdf"]), texts),
    smiles_column=st.one_of(st.sampled_from(["", "smiles", "SMILES", "y"]), texts),
    target_columns=st.lists(st.one_of(st.sampled_from(["y", "smiles", "expt"]), texts), max_size=3),
    target=st.one_of(st.sampled_from(["", "homo", "gap", "nope"]), texts),
    max_invalid_share=fractions,
    max_molecules=int32s,
)

random_requests = st.builds(
    study_pb2.StartStudyRequest,
    name=study_names,
    dataset=dataset_refs,
    model=names_of(MODEL_NAMES),
    search_space=search_spaces,
    fixed_params=param_structs,
    objective=objectives,
    sampler=samplers,
    pruner=pruners,
    budget=budgets,
    parallelism=int32s,
    seed=int64s,
    description=texts,
    objectives=st.lists(objectives, max_size=3),
    constraints=st.lists(constraints, max_size=3),
    skip_default_trial=st.booleans(),
    enqueued_trials=st.lists(param_structs, max_size=3),
    keep_checkpoints=int32s,
    return_test_predictions=st.booleans(),
)

# ---- mutations of a valid request ------------------------------------------------------------

_BASE = studyfile.load(EXAMPLE)
assert _BASE.name == BASE_NAME


def _setter(path: str) -> Callable[[study_pb2.StartStudyRequest, Any], None]:
    """Set a (dotted) scalar or message field; repeated fields are replaced."""
    *parents, last = path.split(".")

    def apply(req: study_pb2.StartStudyRequest, value: Any) -> None:
        msg: Any = req
        for p in parents:
            msg = getattr(msg, p)
        target = getattr(msg, last)
        if isinstance(value, list):
            del target[:]
            target.extend(value)
        elif hasattr(value, "DESCRIPTOR"):
            target.CopyFrom(value)
        else:
            setattr(msg, last, value)

    return apply


FIELD_MUTATIONS: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("name", study_names),
    ("description", texts),
    ("model", names_of(MODEL_NAMES)),
    ("dataset", dataset_refs),
    ("dataset.name", names_of(DATASET_NAMES)),
    ("dataset.split", names_of(SPLITS)),
    ("dataset.split_seed", int64s),
    ("dataset.valid_fraction", fractions),
    ("dataset.test_fraction", fractions),
    ("dataset.path", st.one_of(st.sampled_from(DATASET_PATHS), texts)),
    ("dataset.format", st.one_of(st.sampled_from(["", "csv", "sdf"]), texts)),
    ("dataset.smiles_column", texts),
    ("dataset.target_columns", st.lists(texts, max_size=3)),
    ("dataset.target", texts),
    ("dataset.max_invalid_share", fractions),
    ("dataset.max_molecules", int32s),
    ("search_space", search_spaces),
    ("fixed_params", param_structs),
    ("objective", objectives),
    ("objective.metric", names_of(METRIC_NAMES)),
    ("objective.direction", directions),
    ("objectives", st.lists(objectives, max_size=3)),
    ("constraints", st.lists(constraints, max_size=3)),
    ("sampler", samplers),
    ("sampler.name", names_of(SAMPLER_NAMES)),
    ("sampler.options", option_structs),
    ("pruner", pruners),
    ("pruner.name", names_of(PRUNER_NAMES)),
    ("pruner.options", option_structs),
    ("budget", budgets),
    ("budget.n_trials", int32s),
    ("budget.timeout_seconds", floats),
    ("budget.max_epochs", int32s),
    ("parallelism", int32s),
    ("seed", int64s),
    ("skip_default_trial", st.booleans()),
    ("enqueued_trials", st.lists(param_structs, max_size=3)),
    ("keep_checkpoints", int32s),
    ("return_test_predictions", st.booleans()),
]


def _mutate(path: str, value: Any) -> study_pb2.StartStudyRequest:
    req = copy.deepcopy(_BASE)
    _setter(path)(req, value)
    return req


field_mutations = st.one_of(
    *[strategy.map(functools.partial(_mutate, path)) for path, strategy in FIELD_MUTATIONS]
)

_BASE_PARAM_NAMES = [p.name for p in _BASE.search_space.params]


@st.composite
def param_mutations(draw: st.DrawFn) -> study_pb2.StartStudyRequest:
    """One tuned parameter of the base request changed: its distribution, one bound, its
    condition, replaced, removed, or a new one inserted."""
    req = copy.deepcopy(_BASE)
    params = req.search_space.params
    i = draw(st.integers(0, len(params) - 1))
    p = params[i]
    how = draw(
        st.sampled_from(
            ["int", "float", "categorical", "field", "condition", "replace", "delete", "insert"]
        )
    )
    if how == "int":
        p.int.CopyFrom(draw(int_dists))
    elif how == "float":
        p.float.CopyFrom(draw(float_dists))
    elif how == "categorical":
        p.categorical.CopyFrom(draw(categorical_dists))
    elif how == "field":
        kind = p.WhichOneof("distribution")
        if kind == "int":
            name = draw(st.sampled_from(["low", "high", "step", "log"]))
            setattr(p.int, name, draw(st.booleans() if name == "log" else int64s))
        elif kind == "float":
            name = draw(st.sampled_from(["low", "high", "step", "log"]))
            setattr(p.float, name, draw(st.booleans() if name == "log" else floats))
        else:
            p.categorical.choices.append(draw(param_values))
    elif how == "condition":
        parent = draw(st.one_of(st.sampled_from(_BASE_PARAM_NAMES), names_of(HP_NAMES)))
        p.condition.CopyFrom(
            common_pb2.Condition(parent=parent, values=draw(st.lists(param_values, max_size=4)))
        )
    elif how == "replace":
        p.CopyFrom(draw(param_specs()))
    elif how == "delete":
        del params[i]
    else:
        new = [copy.deepcopy(q) for q in params]
        new.insert(i, draw(param_specs()))
        del params[:]
        params.extend(new)
    return req


@st.composite
def option_mutations(draw: st.DrawFn) -> study_pb2.StartStudyRequest:
    """A known sampler/pruner with one known option set to a random value."""
    req = copy.deepcopy(_BASE)
    if draw(st.booleans()):
        req.sampler.name = draw(st.sampled_from(SAMPLER_NAMES))
        target = req.sampler.options
    else:
        req.pruner.name = draw(st.sampled_from(PRUNER_NAMES))
        req.pruner.options.Clear()
        target = req.pruner.options
    target.update({draw(st.sampled_from(OPTION_NAMES)): draw(json_values)})
    return req


@st.composite
def value_mutations(draw: st.DrawFn) -> study_pb2.StartStudyRequest:
    """A fixed parameter, an enqueued trial or a constraint with one odd value."""
    req = copy.deepcopy(_BASE)
    which = draw(st.sampled_from(["fixed", "enqueued", "constraint", "objectives"]))
    if which == "fixed":
        req.fixed_params.update({draw(names_of(HP_NAMES)): draw(json_values)})
    elif which == "enqueued":
        s = struct_pb2.Struct()
        s.update({draw(st.sampled_from(_BASE_PARAM_NAMES)): draw(json_values)})
        req.enqueued_trials.append(s)
    elif which == "constraint":
        req.constraints.append(
            study_pb2.Constraint(metric=draw(names_of(METRIC_NAMES)), max=draw(floats))
        )
    else:
        req.pruner.name = "none"
        req.objectives.extend(draw(st.lists(objectives, min_size=2, max_size=3)))
    return req


def _edit_param(
    name: str, kind: str, **values: Any
) -> Callable[[study_pb2.StartStudyRequest], None]:
    def edit(req: study_pb2.StartStudyRequest) -> None:
        for p in req.search_space.params:
            if p.name == name:
                for k, v in values.items():
                    setattr(getattr(p, kind), k, v)

    return edit


def _set(path: str, value: Any) -> Callable[[study_pb2.StartStudyRequest], None]:
    return lambda req: _setter(path)(req, value)


def _options(
    which: str, name: str, **options: Any
) -> Callable[[study_pb2.StartStudyRequest], None]:
    def edit(req: study_pb2.StartStudyRequest) -> None:
        spec = getattr(req, which)
        spec.name = name
        spec.options.Clear()
        spec.options.update(options)

    return edit


# Edge values random draws reach only rarely (hypothesis is not coverage-guided): one each.
EDGES: list[Callable[[study_pb2.StartStudyRequest], None]] = [
    *[_set("dataset.path", path) for path in DATASET_PATHS],
    *[_set("seed", seed) for seed in (-1, 2**32 - 1, 2**32, INT64[0], INT64[1])],
    *[
        _edit_param("dropout", "float", step=step)
        for step in (math.nan, math.inf, -math.inf, 5e-324, 1e-300, -0.0, 0.45, 1.0)
    ],
    *[
        _edit_param("dropout", "float", low=low, high=high, log=log)
        for low, high, log in (
            (math.nan, 0.5, False),
            (0.05, math.inf, False),
            (0.0, 0.5, True),
            (-0.1, 0.5, True),
            (0.5, 0.05, False),
            (0.3, 0.3, False),
        )
    ],
    *[
        _edit_param("units", "int", low=low, high=high, step=step, log=log)
        for low, high, step, log in (
            (32, 512, INT64[1], False),
            (32, 512, -32, False),
            (0, 512, 1, True),
            (INT64[0], INT64[1], 1, False),
            (512, 32, 32, False),
            (64, 64, 32, False),
        )
    ],
    *[
        _options("pruner", "hyperband", **opts)
        for opts in (
            {"min_resource": 65},
            {"min_resource": 1e300},
            {"reduction_factor": math.inf},
            {"reduction_factor": math.nan},
            {"reduction_factor": 2.5},
            {"bootstrap_count": -1},
            {"min_resource": True},
        )
    ],
    *[
        _options("pruner", "patient", **opts)
        for opts in (
            {"wrapped": "patient"},
            {"wrapped": "hyperband", "wrapped_options": {"min_resource": 1000}},
            {"wrapped": "nope"},
            {"wrapped_options": [1, 2]},
            {"min_delta": math.nan},
        )
    ],
    *[
        _options("sampler", name, **opts)
        for name, opts in (
            ("grid", {}),
            ("grid", {"n_points": 3}),
            ("grid", {"n_points": 2**53}),
            ("grid", {"n_points": -1}),
            ("cmaes", {"sigma0": math.inf}),
            ("cmaes", {"sigma0": 0}),
            ("qmc", {"qmc_type": "nope"}),
            ("nsga2", {"population_size": 1}),
            ("tpe", {"n_startup_trials": 1.5}),
            ("tpe", {"multivariate": "yes"}),
        )
    ],
    _set("budget.timeout_seconds", 1e-300),
    _set("budget.timeout_seconds", math.nan),
    _set("budget.n_trials", 1_000_000),
    _set("parallelism", 1024),
    _set("keep_checkpoints", 101),
    _set("name", "x" * 128),
    _set("name", "x" * 129),
]


def _edge(i: int) -> study_pb2.StartStudyRequest:
    req = copy.deepcopy(_BASE)
    EDGES[i](req)
    return req


edge_mutations = st.integers(0, len(EDGES) - 1).map(_edge)


def _exhausts_memory(req: study_pb2.StartStudyRequest) -> bool:
    """Whether a grid sampler would build an enormous grid before checking its size.

    Known bug (grid_values in coordinator/optimizer/samplers.py builds every value of a
    stepped float range, or np.linspace(n_points), before its MAX_GRID_POINTS check): such a
    request makes the server allocate memory until it dies, which a test must not do to the
    machine it runs on. Grids that fail fast (OverflowError, numpy MemoryError) are still sent.
    """
    if req.sampler.name != "grid":
        return False
    n_points = req.sampler.options.fields.get("n_points")
    if n_points is not None and 1e6 < n_points.number_value < 1e12:
        return True
    for p in req.search_space.params:
        if p.WhichOneof("distribution") == "float":
            f = p.float
            with_step = math.isfinite(f.low) and math.isfinite(f.high) and f.step > 0
            if with_step and 1e6 < (f.high - f.low) / f.step < math.inf:
                return True
    return False


requests = st.one_of(
    random_requests,
    field_mutations,
    param_mutations(),
    option_mutations(),
    value_mutations(),
    edge_mutations,
    st.just(copy.deepcopy(_BASE)),
).filter(lambda r: not _exhausts_memory(r))

# ---- the server --------------------------------------------------------------------------------

SMILES = ["C", "CC", "CCC", "CCCC", "CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCl", "OCCO"] * 3


@dataclass
class Fuzz:
    """The coordinator under test and what was sent to it."""

    server: CoordinatorServer
    client: MolhpoClient
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    # Names of the studies this test started: the only ones ALREADY_EXISTS may answer for.
    started: set[str] = field(default_factory=set)
    unique: Iterator[int] = field(default_factory=itertools.count)


@pytest.fixture(scope="module")
def fuzz(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    """One real coordinator (no trainers) for the whole module, with a data folder holding a
    small valid CSV so user-file paths can succeed too."""
    state = tmp_path_factory.mktemp("fuzz-state")
    data = tmp_path_factory.mktemp("fuzz-data")
    (data / "sub").mkdir()
    rows = "\n".join(f"{s},{i * 0.5 - 3}" for i, s in enumerate(SMILES))
    (data / "mols.csv").write_text(f"smiles,y\n{rows}\n")
    settings_ = CoordinatorSettings(
        listen="127.0.0.1:0",
        redis_url=redis_server.url,
        storage_url=f"sqlite:///{state / 'studies.db'}",
        key_prefix=f"fuzz-{os.getpid()}-{int(time.time() * 1000) % 100000}",
        state_dir=state,
        artifact_dir=str(state / "artifacts"),
        dataset_roots=str(data),
        metrics_port=-1,
    )
    built = make_server(settings_)
    built.start()
    client = MolhpoClient(f"127.0.0.1:{built.port}", timeout_s=CALL_TIMEOUT_S)
    try:
        yield Fuzz(built, client)
    finally:
        client.close()
        built.stop(grace_s=0)


def _show(req: study_pb2.StartStudyRequest) -> str:
    return text_format.MessageToString(req, as_utf8=True)


def _send(fz: Fuzz, request: study_pb2.StartStudyRequest) -> None:
    req = copy.deepcopy(request)
    if req.name == BASE_NAME:
        # Unchanged base names get a fresh suffix so valid mutations really start a study.
        req.name = f"{BASE_NAME}-{next(fz.unique)}"
    fz.sent += 1
    try:
        info = fz.client.start_study(req)
    except AlreadyExists as err:
        if req.name not in fz.started:
            raise AssertionError(
                f"StartStudy answered ALREADY_EXISTS for {req.name!r}, a name no study was "
                f"started under: {err}\n--- request ---\n{_show(req)}"
            ) from None
        fz.answers[err.code.name] = fz.answers.get(err.code.name, 0) + 1
        return
    except InvalidArgument as err:
        fz.answers[err.code.name] = fz.answers.get(err.code.name, 0) + 1
        return
    except MolhpoError as err:
        raise AssertionError(
            f"StartStudy answered {err.code.name}: {err}\n--- request ---\n{_show(req)}"
        ) from None
    fz.answers["OK"] = fz.answers.get("OK", 0) + 1
    assert info.name == req.name, (info.name, req.name)
    fz.started.add(info.name)
    try:
        fz.client.stop_study(info.name, cancel_running=True)
    except (InvalidArgument, FailedPrecondition):
        pass  # it ended by itself already (e.g. a tiny timeout)
    except MolhpoError as err:
        raise AssertionError(
            f"StopStudy({info.name!r}) answered {err.code.name}: {err}\n"
            f"--- request ---\n{_show(req)}"
        ) from None


def test_start_study_answers_ok_or_invalid_argument(fuzz: Fuzz) -> None:
    @settings(
        max_examples=MIN_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(request=requests)
    def start(request: study_pb2.StartStudyRequest) -> None:
        _send(fuzz, request)

    started = time.monotonic()
    start()
    elapsed = time.monotonic() - started
    print(f"\nStartStudy fuzz: {fuzz.sent} requests in {elapsed:.1f} s; answers {fuzz.answers}")
    assert fuzz.sent >= MIN_EXAMPLES
    assert fuzz.answers.get("OK", 0) > 0, "no request was valid; the mutations are too coarse"

    # The coordinator still serves.
    with grpc.insecure_channel(f"127.0.0.1:{fuzz.server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "molhpo.v1.StudyService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    studies = fuzz.client.list_studies()
    assert {s.name for s in studies} == fuzz.started
    assert len(fuzz.started) == fuzz.answers.get("OK", 0)
    # A name it started under is taken: the valid base request under it is ALREADY_EXISTS.
    again = copy.deepcopy(_BASE)
    again.name = min(fuzz.started)
    with pytest.raises(AlreadyExists):
        fuzz.client.start_study(again)
