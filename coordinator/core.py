"""The coordinator's core: studies, the report consumer and the trainer-pool reaper.

The gRPC servicers are thin wrappers over :class:`Coordinator`; it never sees a proto except
the TrialReports it reads from Redis and the TrialSpecs it hands to trainers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import redis

from coordinator import convert
from coordinator.datasets import DatasetSummary, summarize
from coordinator.evaluation import (
    Evaluation,
    RaceRow,
    evaluate_trials,
    race_row,
)
from coordinator.events import Event
from coordinator.membership import TrainerPool, TrainerRecord, Waiting
from coordinator.metrics import CoordinatorMetrics, StudyCollector
from coordinator.objectives import constraints_func
from coordinator.optimizer.pruners import build_pruner, validate_pruner
from coordinator.optimizer.refine import refine_space
from coordinator.optimizer.samplers import SamplerContext, build_sampler, validate_sampler
from coordinator.reporting import build_report
from coordinator.retry import DEFAULT_MAX_ATTEMPTS
from coordinator.spec import ComponentSpec, StudySpec, default_trial, validate
from coordinator.study_runner import (
    StudyRunner,
    StudyState,
)
from coordinator.trainer_client import TrainerClient
from molhpo.contract import attrs, catalogue
from molhpo.contract.enums import Direction, FailureClass
from molhpo.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from storage import decisions
from storage.decisions import Decision
from storage.keys import RedisKeys
from storage.owned_cache import Hold, OwnedStudyStorage
from storage.reports import ReportReader

log = logging.getLogger(__name__)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# Decisions published per Redis round trip when a burst of epoch reports arrives.
_PUBLISH_EVERY = 16


def _is_epoch(report: object) -> bool:
    from molhpo.v1 import common_pb2

    return isinstance(report, common_pb2.TrialReport) and report.WhichOneof("body") == "epoch"


@dataclass(frozen=True)
class StudyStatus:
    """What GetStudy answers, as domain values."""

    name: str
    state: StudyState
    request_json: str
    trials: list[optuna.trial.FrozenTrial]
    directions: tuple[str, ...]
    start_time: float
    end_time: float
    message: str
    dataset: DatasetSummary | None = None
    # Why a running study dispatches nothing although it has trials to run (None: it does not
    # wait, or it is not running here).
    waiting: Waiting | None = None


class Coordinator:
    """Owns the studies of this process and the loops that serve them."""

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        redis_client: redis.Redis,
        keys: RedisKeys,
        pool: TrainerPool,
        trainers: TrainerClient,
        metrics: CoordinatorMetrics,
        decision_timeout_s: float = 30.0,
        dataset_roots: Sequence[Path] = (),
        artifact_root: Path | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._max_attempts = max_attempts
        self.dataset_roots = tuple(dataset_roots)
        self.artifact_root = artifact_root
        # Trials whose write the store refused for good (recorded there as FAIL), told by the
        # store's writer thread; the report consumer ends them in their runners.
        self._lost_writes: collections.deque[tuple[int, str]] = collections.deque()
        # This process is the only writer of the studies it runs: their trials stay in memory.
        self.storage: optuna.storages.BaseStorage = (
            OwnedStudyStorage(storage, on_write_lost=self._write_lost)
            if isinstance(storage, optuna.storages.RDBStorage)
            else storage
        )
        self.redis = redis_client
        self.keys = keys
        self.pool = pool
        self.trainers = trainers
        self.metrics = metrics
        self._decision_timeout = decision_timeout_s
        self._lock = threading.Lock()
        self._studies: dict[str, StudyRunner] = {}
        self._stop = threading.Event()
        # One coordinator per key prefix, always the same consumer: after a restart it reads
        # first the reports it had been given and not acknowledged.
        self._reader = ReportReader(redis_client, keys, "coordinator")
        metrics.registry.register(StudyCollector(self.runners))
        if isinstance(self.storage, OwnedStudyStorage):
            metrics.store_stalled_seconds.set_function(self.storage.stalled_s)
        self._threads = [
            threading.Thread(target=self._consume_reports, name="reports", daemon=True),
            threading.Thread(target=self._reap_trainers, name="reaper", daemon=True),
        ]

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take back unfinished studies, then start the report consumer and the reaper."""
        self._reader.ensure_group()
        self._resume_unfinished()
        for t in self._threads:
            t.start()

    def _resume_unfinished(self) -> None:
        """Studies a previous coordinator left running go on: their running trials are
        claimed back from trainers (or run again), the rest are dispatched as before."""
        for summary in self.storage.get_all_studies():
            study_attrs = summary.system_attrs
            running = study_attrs.get(attrs.STUDY_STATE) == StudyState.RUNNING.name
            if not running or not study_attrs.get(attrs.STUDY_REQUEST):
                continue
            name = summary.study_name
            try:
                spec = convert.spec_from_proto(
                    convert.request_from_json(str(study_attrs[attrs.STUDY_REQUEST]))
                )
                study = self._load(spec)
                trials = study.get_trials(deepcopy=False)
                runner = self._runner(spec, study, n_existing=len(trials))
                runner.adopt([t for t in trials if t.state == optuna.trial.TrialState.RUNNING])
            except Exception:  # one broken study must not keep the others down
                log.exception("could not resume study %s", name)
                continue
            with self._lock:
                self._studies[name] = runner
            runner.start(enqueue_initial=False)
            self._watch_end(runner)
            log.info("resumed study %s (%d trials so far)", name, len(trials))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loops (studies stay in the store as they are)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        if isinstance(self.storage, OwnedStudyStorage):
            self.storage.close(timeout_s)  # what is queued is stored
        self.trainers.close()

    # ---- studies ---------------------------------------------------------------------------

    def validate(self, spec: StudySpec) -> DatasetSummary:
        """Raise InvalidArgument naming the first rule the spec breaks; what its data holds."""
        validate(spec)
        validate_sampler(spec.sampler.name, spec.sampler.options, spec.params)
        validate_pruner(spec.pruner.name, spec.pruner.options)
        min_resource = spec.pruner.options.get("min_resource", 1)
        if isinstance(min_resource, int) and min_resource > spec.max_epochs:
            raise InvalidArgument(
                f"pruner.options.min_resource: is {min_resource}, but must be <= "
                f"budget.max_epochs ({spec.max_epochs}); no trial would reach the first rung"
            )
        return summarize(spec.dataset, self.dataset_roots)

    def start_study(
        self,
        spec: StudySpec,
        *,
        system_attrs: Mapping[str, Any] | None = None,
        enqueue: Sequence[tuple[Mapping[str, object], Mapping[str, object]]] = (),
    ) -> StudyStatus:
        """Create the study in the store and start dispatching its trials.

        ``system_attrs`` are kept with the study (e.g. its parent); ``enqueue`` adds trials
        (params, user attrs) after the default one.
        """
        summary = self.validate(spec)
        if spec.request_id and self._same_request(spec):
            # The same request again (a client retry): the study it started.
            return self.status(spec.name)
        with self._lock:
            if spec.name in self._studies or self._exists(spec.name):
                raise AlreadyExists(
                    f"study {spec.name!r} exists already; choose another name or delete it"
                )
            study = optuna.create_study(
                storage=self.storage,
                study_name=spec.name,
                directions=[convert.study_direction(o.direction) for o in spec.objectives],
                sampler=self._sampler(spec),
                pruner=build_pruner(spec.pruner.name, spec.pruner.options, spec.max_epochs),
            )
            self._own(study)
            for key, value in (system_attrs or {}).items():
                self.storage.set_study_system_attr(study._study_id, key, value)
            study.set_user_attr("model", spec.model)
            study.set_user_attr("dataset", spec.dataset.name)
            study.set_user_attr("metric", spec.metric)
            self.storage.set_study_system_attr(
                study._study_id,
                attrs.STUDY_REQUEST,
                convert.request_to_json(convert.spec_to_proto(spec)),
            )
            self.storage.set_study_system_attr(
                study._study_id, attrs.STUDY_DATASET, dataclasses.asdict(summary)
            )
            runner = self._runner(spec, study)
            self._studies[spec.name] = runner
        try:
            runner.start(extra=enqueue)
        except Exception:
            # Nothing half-made stays behind: the name is free again.
            with self._lock:
                self._studies.pop(spec.name, None)
                optuna.delete_study(study_name=spec.name, storage=self.storage)
            raise
        self._watch_end(runner)
        return self.status(spec.name)

    def _same_request(self, spec: StudySpec) -> bool:
        if not self._exists(spec.name):
            return False
        sid = self.storage.get_study_id_from_name(spec.name)
        raw = self.storage.get_study_system_attrs(sid).get(attrs.STUDY_REQUEST)
        return bool(raw) and convert.request_from_json(str(raw)).request_id == spec.request_id

    def _load(self, spec: StudySpec) -> optuna.Study:
        """A stored study with the sampler and pruner its spec names (to run it again), read
        afresh: others may have written it since this process last ran it."""
        study = optuna.load_study(
            study_name=spec.name,
            storage=self.storage,
            sampler=self._sampler(spec),
            pruner=build_pruner(spec.pruner.name, spec.pruner.options, spec.max_epochs),
        )
        self._own(study)
        return study

    def _own(self, study: optuna.Study) -> None:
        """Keep the study's trials in memory while this process runs it (read afresh now)."""
        if isinstance(self.storage, OwnedStudyStorage):
            self.storage.own(study._study_id)

    def _sampler(self, spec: StudySpec) -> optuna.samplers.BaseSampler:
        ctx = SamplerContext(spec.seed, spec.params, constraints_func(spec.constraints))
        return build_sampler(spec.sampler.name, spec.sampler.options, spec.seed, ctx)

    def _runner(self, spec: StudySpec, study: optuna.Study, n_existing: int = 0) -> StudyRunner:
        return StudyRunner(
            spec,
            study,
            self.pool,
            self.trainers,
            self.redis,
            self.keys,
            self.metrics,
            self._decision_timeout,
            n_existing=n_existing,
            max_attempts=self._max_attempts,
        )

    def _watch_end(self, runner: StudyRunner) -> None:
        self.metrics.studies_running.inc()
        threading.Thread(target=self._await_end, args=(runner,), daemon=True).start()

    def spec_of(self, name: str) -> StudySpec:
        """The spec a stored study was started with; NotFound / FailedPrecondition."""
        status = self.status(name)
        if not status.request_json:
            raise FailedPrecondition(
                f"study {name!r} was not made by molhpo (it has no request); nothing to do"
            )
        return convert.spec_from_proto(convert.request_from_json(status.request_json))

    def resume_study(self, name: str, n_trials: int) -> StudyStatus:
        """Continue a stopped, finished or orphaned study up to ``n_trials`` trials."""
        spec = self.spec_of(name)
        with self._lock:
            old = self._studies.get(name)
            if old is not None and not old.finished:
                raise FailedPrecondition(f"study {name!r} is running; stop it before resuming it")
            if n_trials < 0:
                raise InvalidArgument(f"n_trials: is {n_trials}, but must be >= 0")
            spec = dataclasses.replace(spec, n_trials=n_trials or spec.n_trials)
            study = self._load(spec)
            # A RUNNING trial no coordinator serves any more cannot finish: record why.
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                self.storage.set_trial_user_attr(
                    t._trial_id, attrs.TRIAL_FAILURE_CLASS, FailureClass.ORPHANED
                )
                self.storage.set_trial_user_attr(
                    t._trial_id,
                    attrs.TRIAL_FAILURE_REASON,
                    "its coordinator stopped before it ended",
                )
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            existing = len(study.get_trials(deepcopy=False))
            if existing >= spec.n_trials:
                raise InvalidArgument(
                    f"n_trials: study {name!r} has {existing} trials already; ask for more"
                )
            self.storage.set_study_system_attr(
                study._study_id,
                attrs.STUDY_REQUEST,
                convert.request_to_json(convert.spec_to_proto(spec)),
            )
            runner = self._runner(spec, study, n_existing=existing)
            self._studies[name] = runner
        runner.start(enqueue_initial=False)
        self._watch_end(runner)
        return self.status(name)

    def _best_trials(self, name: str, k: int) -> list[optuna.trial.FrozenTrial]:
        """The k best complete, feasible trials of a study, best first."""
        status = self.status(name)
        if len(status.directions) > 1:
            raise FailedPrecondition(
                f"study {name!r} has several objectives; it has a Pareto front, not a ranking"
            )
        sign = -1.0 if status.directions[0] == Direction.MAXIMIZE else 1.0
        done = [
            t
            for t in status.trials
            if t.state == optuna.trial.TrialState.COMPLETE
            and t.value is not None
            and t.user_attrs.get(attrs.TRIAL_FEASIBLE, True)
        ]
        if not done:
            raise FailedPrecondition(f"study {name!r} has no complete trial yet")
        return sorted(done, key=lambda t: sign * float(t.value or 0.0))[:k]

    def refine_study(self, parent: str, name: str, percent: float, n_trials: int) -> StudyStatus:
        """A follow-up study searching close to the parent's best trial."""
        spec = self.spec_of(parent)
        best = self._best_trials(parent, 1)[0]
        child = dataclasses.replace(
            spec,
            name=name or f"{parent}-refine",
            params=refine_space(spec.params, best.params, percent or 20.0),
            n_trials=n_trials or spec.n_trials,
            enqueue_default=False,
            # Start where the parent ended: its best configuration is the child's trial 0.
            enqueued=(dict(best.params),),
        )
        return self.start_study(child, system_attrs={attrs.STUDY_PARENT: parent})

    def evaluate_study(
        self,
        name: str,
        top_k: int,
        seeds: int,
        include_default: bool,
        max_epochs: int,
        evaluation_name: str,
    ) -> StudyStatus:
        """Retrain the top-k configurations (and the default) with several seeds."""
        spec = self.spec_of(name)
        if top_k < 0 or seeds < 0 or max_epochs < 0:
            raise InvalidArgument("top_k, seeds and max_epochs must be >= 0 (0: the default)")
        top_k, seeds = top_k or 3, seeds or 3
        best = self._best_trials(name, top_k)
        configs: list[tuple[str, dict[str, object]]] = [
            (f"rank-{i + 1}", dict(t.params)) for i, t in enumerate(best)
        ]
        if include_default:
            configs.append(("default", dict(default_trial(spec))))
        enqueue = [
            (params, {attrs.EVAL_CONFIG: label, attrs.EVAL_SEED_INDEX: s, "enqueued": "evaluation"})
            for s in range(seeds)
            for label, params in configs
        ]
        eval_spec = dataclasses.replace(
            spec,
            name=evaluation_name or f"{name}-eval",
            n_trials=len(enqueue),
            max_epochs=max_epochs or spec.max_epochs,
            pruner=ComponentSpec("none", {}),
            sampler=ComponentSpec("random", {}),
            enqueue_default=False,
            enqueued=(),
            extra_objectives=(),
            constraints=(),
            return_test_predictions=True,
        )
        return self.start_study(
            eval_spec, system_attrs={attrs.STUDY_EVALUATION_OF: name}, enqueue=enqueue
        )

    def evaluation(self, name: str) -> Evaluation | None:
        """The evaluation summary of an evaluation study (None for other studies)."""
        status = self.status(name)
        sid = self.storage.get_study_id_from_name(name)
        if attrs.STUDY_EVALUATION_OF not in self.storage.get_study_system_attrs(sid):
            return None
        return evaluate_trials(status.trials)

    def start_race(
        self,
        name: str,
        base: StudySpec,
        entries: Sequence[tuple[str, ComponentSpec, ComponentSpec]],
        concurrent: bool,
        target: float,
    ) -> None:
        """One study per set-up on the same workload; one after another unless concurrent."""
        if not entries:
            raise InvalidArgument("entries: is empty; give at least one set-up")
        specs = []
        for i, (label, sampler, pruner) in enumerate(entries):
            if not label:
                raise InvalidArgument(f"entries[{i}].label: is empty")
            specs.append(
                dataclasses.replace(base, name=f"{name}-{label}", sampler=sampler, pruner=pruner)
            )
        for s in specs:  # refuse the whole race before any of it starts
            self.validate(s)
            if self._exists(s.name):
                raise AlreadyExists(f"study {s.name!r} exists already; rename the race")

        def study_attrs(i: int) -> dict[str, object]:
            return {
                attrs.STUDY_RACE: {
                    "race": name,
                    "label": entries[i][0],
                    "index": i,
                    "target": target,
                    "n_entries": len(entries),
                }
            }

        if concurrent:
            for i, s in enumerate(specs):
                self.start_study(s, system_attrs=study_attrs(i))
            return
        # The first set-up starts now, so the race exists as soon as this returns.
        self.start_study(specs[0], system_attrs=study_attrs(0))

        def run_in_turn() -> None:
            for i, s in enumerate(specs):
                if self._stop.is_set():
                    return
                if i > 0:
                    self.start_study(s, system_attrs=study_attrs(i))
                runner = self.runner(s.name)
                while runner is not None and not runner.finished and not self._stop.is_set():
                    runner.join(1.0)

        threading.Thread(target=run_in_turn, name=f"race-{name}", daemon=True).start()

    def race(self, name: str) -> tuple[list[RaceRow], float | None, bool]:
        """Rows of a race in set-up order, the target value used, whether all ended."""
        members = []
        expected = 0
        for s in self.storage.get_all_studies():
            info = s.system_attrs.get(attrs.STUDY_RACE)
            if isinstance(info, dict) and info.get("race") == name:
                expected = int(info.get("n_entries", 0))
                members.append(
                    (
                        int(info["index"]),
                        str(info["label"]),
                        s.study_name,
                        float(info.get("target", 0.0)),
                    )
                )
        if not members:
            raise NotFound(f"race {name!r} does not exist")
        members.sort()
        statuses = [self.status(study) for _, _, study, _ in members]
        target: float | None = members[0][3] or None
        if target is None:
            first = race_row(
                members[0][1], members[0][2], statuses[0].trials, statuses[0].directions[0], None
            )
            target = first.best_value
        rows = [
            race_row(label, study, st.trials, st.directions[0], target)
            for (_, label, study, _), st in zip(members, statuses, strict=True)
        ]
        finished = len(members) >= expected and all(
            st.state is not StudyState.RUNNING for st in statuses
        )
        return rows, target, finished

    def report(self, name: str) -> StudyReport:
        """A study's report: Markdown, JSON, best parameters and PNG plots."""
        self.status(name)  # NotFound
        study = optuna.load_study(study_name=name, storage=self.storage)
        predictions = None
        multi = len(study.directions) > 1
        if not multi and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            best = self._best_trials(name, 1)[0]
            predictions = _test_predictions(best)
        built = build_report(study, predictions=predictions)
        markdown = built.markdown
        summary = dict(built.summary)
        evaluation = self.evaluation(name)
        if evaluation is not None:
            markdown += "\n" + evaluation_markdown(evaluation)
            summary["evaluation"] = dataclasses.asdict(evaluation)
        return StudyReport(
            markdown=markdown,
            json=json.dumps(summary, indent=2, default=str),
            best_params_json=built.best_params_json or "{}",
            plots=built.plot_files(),
        )

    def predict(
        self, study: str, smiles: Sequence[str], top_k: int
    ) -> tuple[list[float], list[list[float]], list[int], str]:
        """Predictions of the best (or top-k averaged) models of a study, computed on a
        trainer: (values, per-model values, trial numbers, units)."""
        if not smiles:
            raise InvalidArgument("smiles: is empty; give at least one SMILES")
        if top_k < 0:
            raise InvalidArgument(f"top_k: is {top_k}, but must be >= 0 (0 and 1: the best)")
        best = self._best_trials(study, max(top_k, 1))
        paths = []
        for t in best:
            path = t.user_attrs.get("checkpoint")
            if not path:
                raise FailedPrecondition(
                    f"trial {t.number} of study {study!r} kept no checkpoint; retrain it "
                    "(EvaluateStudy) to predict with it"
                )
            paths.append(str(path))
        trainers = sorted(self.pool.snapshot(), key=lambda r: len(r.assigned))
        if not trainers:
            raise Unavailable("no trainer is registered to load the models; start one")
        values, members = self.trainers.predict(trainers[0].address, paths, list(smiles))
        units = ""
        spec = self.spec_of(study)
        if not spec.dataset.path and spec.dataset.name in catalogue.DATASETS:
            units = catalogue.DATASETS[spec.dataset.name].units
        return values, members, [t.number for t in best], units

    def delete_study(self, name: str) -> None:
        """Delete a study that does not run, with its checkpoints."""
        self.status(name)  # NotFound
        with self._lock:
            runner = self._studies.get(name)
            if runner is not None and not runner.finished:
                raise FailedPrecondition(f"study {name!r} is running; stop it first")
            self._studies.pop(name, None)
            optuna.delete_study(study_name=name, storage=self.storage)
        if self.artifact_root is not None:
            target = (self.artifact_root / name).resolve()
            if target.parent == self.artifact_root.resolve() and target.is_dir():
                shutil.rmtree(target, ignore_errors=True)

    def _await_end(self, runner: StudyRunner) -> None:
        while not runner.finished and not self._stop.is_set():
            runner.join(1.0)
        self.metrics.studies_running.dec()
        if (
            runner.finished
            and isinstance(self.storage, OwnedStudyStorage)
            and self.runner(runner.spec.name) is runner  # not resumed meanwhile
        ):
            # Nobody runs it now; others may write it (e.g. an evaluation, a resume elsewhere).
            self.storage.disown(runner.study._study_id)

    def _exists(self, name: str) -> bool:
        try:
            self.storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return True

    def runners(self) -> list[StudyRunner]:
        """Every study this process manages."""
        with self._lock:
            return list(self._studies.values())

    def runner(self, name: str) -> StudyRunner | None:
        """The runner of a study this process manages."""
        with self._lock:
            return self._studies.get(name)

    def status(self, name: str) -> StudyStatus:
        """A study's state, request and trials; NotFound for an unknown name."""
        try:
            sid = self.storage.get_study_id_from_name(name)
        except KeyError:
            raise NotFound(f"study {name!r} does not exist; see `molhpo study list`") from None
        study_attrs = self.storage.get_study_system_attrs(sid)
        directions = tuple(convert.direction_of(d) for d in self.storage.get_study_directions(sid))
        runner = self.runner(name)
        if runner is not None:
            # Its study's cached storage reads only the unfinished trials from the store.
            trials = runner.study.get_trials(deepcopy=False)
            state, message, end = runner.state, runner.message, runner.end_time
            waiting = runner.waiting
        else:
            trials = self.storage.get_all_trials(sid, deepcopy=False)
            raw = str(study_attrs.get(attrs.STUDY_STATE, "DETACHED"))
            state = StudyState[raw] if raw in StudyState.__members__ else StudyState.DETACHED
            if state is StudyState.RUNNING:
                # Started by a coordinator that is gone; nobody dispatches it now.
                state = StudyState.DETACHED
            message = str(study_attrs.get(attrs.STUDY_MESSAGE, ""))
            end = float(study_attrs.get(attrs.STUDY_END, 0.0))
            waiting = None
        return StudyStatus(
            name=name,
            state=state,
            request_json=str(study_attrs.get(attrs.STUDY_REQUEST, "")),
            trials=trials,
            directions=directions,
            start_time=float(study_attrs.get(attrs.STUDY_START, 0.0)),
            end_time=end,
            message=message,
            dataset=_summary(study_attrs.get(attrs.STUDY_DATASET)),
            waiting=waiting,
        )

    def list_studies(self) -> list[StudyStatus]:
        """Every study in the store."""
        return [self.status(s.study_name) for s in self.storage.get_all_studies()]

    def stop_study(self, name: str, cancel_running: bool) -> StudyStatus:
        """Stop dispatching a study's trials."""
        runner = self.runner(name)
        if runner is None:
            self.status(name)  # NotFound for unknown names
            raise InvalidArgument(
                f"study {name!r} is not running in this coordinator; nothing to stop"
            )
        runner.stop(cancel_running)
        return self.status(name)

    def watch(self, name: str, after: int, timeout_s: float) -> tuple[list[Event], bool]:
        """Events of a running study newer than ``after``; (events, finished)."""
        runner = self.runner(name)
        if runner is None:
            self.status(name)
            return [], True
        return runner.events.after(after, timeout_s)

    # ---- loops -----------------------------------------------------------------------------

    def _consume_reports(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._end_lost_trials()
            try:
                entries = self._reader.read(count=256, block_ms=200)
            except redis.RedisError as err:
                log.warning("report stream unreadable (%s); retrying in %.1fs", err, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                self._handle_batch([entry.report for entry in entries])
            except Exception as err:  # never acknowledged: read again and handled again
                if isinstance(err, redis.RedisError | optuna.exceptions.StorageInternalError):
                    log.warning(
                        "could not handle %d reports (%s); again in %.1fs",
                        len(entries),
                        err,
                        backoff,
                    )
                else:
                    log.exception(
                        "could not handle %d reports; again in %.1fs", len(entries), backoff
                    )
                self._reader.rewind()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            done = [entry.entry_id for entry in entries]
            if isinstance(self.storage, OwnedStudyStorage):
                # Acknowledged once the writes they caused are stored.
                self.storage.after_writes(functools.partial(self._ack, done))
                continue
            self._ack(done)

    def _ack(self, done: list[str]) -> None:
        if done:
            try:
                self._reader.ack(done)
            except redis.RedisError as err:
                # Unacknowledged entries come back; handling them again is harmless.
                log.warning("could not acknowledge %d reports: %s", len(done), err)

    def _write_lost(self, trial_id: int, reason: str) -> None:
        """The store's writer gave up a write of a trial and recorded the trial as FAIL (on
        the writer thread, which must not wait for a runner: handed to the consumer)."""
        self._lost_writes.append((trial_id, reason))

    def _end_lost_trials(self) -> None:
        """Trials the store holds as failed for a refused write stop running here too."""
        while self._lost_writes:
            trial_id, reason = self._lost_writes.popleft()
            if not any(r.on_store_failure(trial_id, reason) for r in self.runners()):
                log.warning(
                    "trial id %d failed in the store (%s); no study runs it", trial_id, reason
                )

    def _handle_batch(self, reports: list[object]) -> None:
        """Handle a batch of reports: first every epoch report, in order, its decision published
        with a few others in one round trip; then the trials' results. A trial's result always
        follows its epochs in the stream, so its epochs are recorded before it ends.

        The store writes go through the store's writer thread, in the order they were made;
        the writes an epoch's decision caused are queued only once Redis took the decision (a
        trainer never waits on a decision the store has and Redis lacks). When Redis fails, the
        writes still held are dropped and undone, and the error ends the batch: nothing of it
        is acknowledged, and it is handled afresh."""
        pending: list[tuple[int, int, Decision]] = []

        def publish(hold: Hold | None) -> None:
            decisions.publish_many(self.redis, self.keys, pending)
            pending.clear()
            if hold is not None:
                hold.release()

        deferring = (
            self.storage.deferring()
            if isinstance(self.storage, OwnedStudyStorage)
            else contextlib.nullcontext()
        )
        holding: contextlib.AbstractContextManager[Hold | None] = (
            self.storage.holding()
            if isinstance(self.storage, OwnedStudyStorage)
            else contextlib.nullcontext(None)
        )
        epochs = [r for r in reports if _is_epoch(r)]
        others = [r for r in reports if not _is_epoch(r)]
        with deferring:
            with holding as hold:
                for report in epochs:
                    self._handle(report, lambda t, s, d: pending.append((t, s, d)))
                    if len(pending) >= _PUBLISH_EVERY:
                        publish(hold)
                publish(hold)
            for report in others:
                self._handle(report)

    def _handle(
        self, report: object, publish: Callable[[int, int, Decision], None] | None = None
    ) -> None:
        from molhpo.v1 import common_pb2

        if not isinstance(report, common_pb2.TrialReport):
            self.metrics.reports.labels("undecodable").inc()
            return
        runner = self.runner(report.study_name)
        if runner is None:
            self.metrics.reports.labels("unknown_study").inc()
            return
        body = report.WhichOneof("body")
        try:
            if body == "epoch":
                t0 = time.perf_counter()
                decision = runner.on_epoch(report, publish)
                if decision is None:
                    self.metrics.reports.labels("stale").inc()
                    return
                self.metrics.decision_seconds.observe(time.perf_counter() - t0)
                self.metrics.decisions.labels(decision.value).inc()
                self.metrics.reports.labels("epoch").inc()
            elif body == "result":
                ok = runner.on_result(report)
                self.metrics.reports.labels("result" if ok else "stale").inc()
                if ok and report.result.failure_class not in (
                    FailureClass.TRAINER_LOST,
                    FailureClass.DRAINED,
                ):
                    self.pool.note_success(report.trainer_id)
            else:
                self.metrics.reports.labels("undecodable").inc()
        except (redis.RedisError, optuna.exceptions.StorageInternalError):
            raise  # Redis or the store is away: the whole batch is handled again
        except optuna.exceptions.UpdateFinishedTrialError as err:
            # The trial ended meanwhile by another path (its lease, a refused store write).
            log.info("report of trial %d after its end: %s", report.trial_number, err)
            self.metrics.reports.labels("stale").inc()
        except Exception:  # one bad report must not stop the consumer; it is logged and counted
            log.exception("could not handle a report of trial %d", report.trial_number)
            self.metrics.reports.labels("error").inc()

    def _reap_trainers(self) -> None:
        while not self._stop.wait(1.0):
            gone: list[TrainerRecord] = self.pool.expire()
            for rec in gone:
                log.warning(
                    "trainer %s at %s stopped sending heartbeats; forgetting it",
                    rec.trainer_id,
                    rec.address,
                )
                self.metrics.trainers_lost.inc()
                for runner in self.runners():
                    runner.on_trainer_lost(rec.trainer_id, rec.assigned)
            for trainer_id, trial_id in self.pool.take_claimed():
                for r in self.runners():
                    if r.attach(trainer_id, trial_id):
                        log.info("trial %d is still running on %s", trial_id, trainer_id)
            for trial_id in self.pool.take_unclaimed():
                for r in self.runners():
                    r.unclaimed(trial_id)
            for trainer_id, trial_id in self.pool.expired_leases():
                self.metrics.lease_expiries.inc()
                log.warning("lease of trial %d on trainer %s expired", trial_id, trainer_id)
                if any(r.on_lease_expired(trainer_id, trial_id) for r in self.runners()) and (
                    self.pool.note_loss(trainer_id)
                ):
                    self.metrics.trainers_rested.inc()
                    log.warning("trainer %s lost trials in a row; resting it", trainer_id)
            snap = self.pool.snapshot()
            self.metrics.trainers_registered.set(len(snap))
            total = sum(r.slots for r in snap)
            busy = sum(len(r.assigned) for r in snap)
            self.metrics.slots.labels("busy").set(busy)
            self.metrics.slots.labels("free").set(max(total - busy, 0))


@dataclass(frozen=True)
class StudyReport:
    """What GetReport answers."""

    markdown: str
    json: str
    best_params_json: str
    plots: dict[str, bytes]


def _test_predictions(trial: optuna.trial.FrozenTrial) -> dict[str, list[float]] | None:
    """The best model's test-set predictions, from the trial or its checkpoint folder."""
    if attrs.TEST_PREDICTIONS in trial.user_attrs:
        return {
            "y_true": list(trial.user_attrs[attrs.TEST_TARGETS]),
            "y_pred": list(trial.user_attrs[attrs.TEST_PREDICTIONS]),
        }
    path = trial.user_attrs.get("checkpoint")
    if not path:
        return None
    file = Path(str(path)).parent / "test_predictions.json"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "y_true" not in data or "y_pred" not in data:
        return None
    return {"y_true": list(data["y_true"]), "y_pred": list(data["y_pred"])}


def evaluation_markdown(e: Evaluation) -> str:
    """The final-evaluation section of a report."""
    lines = [
        "## Final evaluation",
        "",
        "| configuration | runs | test rmse | test mae | test r2 |",
        "|---|---|---|---|---|",
    ]
    for c in e.configs:
        cells = [
            f"{c.test_mean[m]:.4f} +/- {c.test_std[m]:.4f}" if m in c.test_mean else "-"
            for m in ("rmse", "mae", "r2")
        ]
        lines.append(f"| {c.config} | {c.n_runs} | " + " | ".join(cells) + " |")
    if e.ensemble_rmse_mean is not None:
        lines.append("")
        lines.append(
            f"Ensemble of {', '.join(e.ensemble_members)} (averaged predictions): test rmse "
            f"{e.ensemble_rmse_mean:.4f} +/- {e.ensemble_rmse_std or 0.0:.4f}."
        )
    by_name = {c.config: c for c in e.configs}
    if "default" in by_name and "rank-1" in by_name and "rmse" in by_name["default"].test_mean:
        a = by_name["default"].test_mean["rmse"]
        b = by_name["rank-1"].test_mean["rmse"]
        lines.append("")
        lines.append(f"Tuning cut test RMSE from {a:.4f} (default configuration) to {b:.4f}.")
    return "\n".join(lines) + "\n"


def _summary(raw: object) -> DatasetSummary | None:
    return DatasetSummary.from_dict(raw)
    try:
        return DatasetSummary(
            name=str(raw["name"]),
            n_molecules=int(raw["n_molecules"]),
            n_invalid=int(raw["n_invalid"]),
            invalid_examples=tuple(raw["invalid_examples"]),
            target_names=tuple(raw["target_names"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
