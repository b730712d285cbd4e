"""The life of a study in this process: validate, start, resume, stop, delete; its status.

Every study this process runs has a :class:`StudyRunner`; the others live only in the store.
While a runner runs a study, the store's trials of that study stay in memory (the process is
their only writer, see :class:`storage.owned_cache.OwnedStudyStorage`); when it ends they are
let go, so others may write the study again.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from coordinator import convert
from coordinator.datasets import DatasetSummary, summarize
from coordinator.events import Event
from coordinator.membership import Waiting
from coordinator.objectives import constraints_func
from coordinator.optimizer.pruners import build_pruner, validate_pruner
from coordinator.optimizer.samplers import SamplerContext, build_sampler, validate_sampler
from coordinator.spec import StudySpec, validate
from coordinator.study_runner import StudyRunner, StudyState
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo.contract import attrs
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from storage.owned_cache import OwnedStudyStorage

log = logging.getLogger(__name__)

RunnerFactory = Callable[[StudySpec, optuna.Study, int], StudyRunner]
"""Builds the runner of a study: (spec, loaded study, trials it has already)."""


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


class StudyLifecycle:
    """The studies of this process: their runners, and every study's status in the store."""

    def __init__(
        self, shared: Shared, options: CoordinatorOptions, new_runner: RunnerFactory
    ) -> None:
        self.storage = shared.storage
        self.metrics = shared.metrics
        self.dataset_roots = tuple(options.dataset_roots)
        self.artifact_root = options.artifact_root
        self._new_runner = new_runner
        self._stop = shared.stop
        self._lock = threading.Lock()
        self._studies: dict[str, StudyRunner] = {}

    # ---- starting --------------------------------------------------------------------------

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
            if spec.name in self._studies or self.exists(spec.name):
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
            runner = self._new_runner(spec, study, 0)
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
        if not self.exists(spec.name):
            return False
        sid = self.storage.get_study_id_from_name(spec.name)
        raw = self.storage.get_study_system_attrs(sid).get(attrs.STUDY_REQUEST)
        return bool(raw) and convert.request_from_json(str(raw)).request_id == spec.request_id

    # ---- resuming --------------------------------------------------------------------------

    def resume_unfinished(self) -> None:
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
                runner = self._new_runner(spec, study, len(trials))
                runner.adopt([t for t in trials if t.state == optuna.trial.TrialState.RUNNING])
            except Exception:  # one broken study must not keep the others down
                log.exception("could not resume study %s", name)
                continue
            with self._lock:
                self._studies[name] = runner
            runner.start(enqueue_initial=False)
            self._watch_end(runner)
            log.info("resumed study %s (%d trials so far)", name, len(trials))

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
            _fail_orphans(self.storage, study)
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
            runner = self._new_runner(spec, study, existing)
            self._studies[name] = runner
        runner.start(enqueue_initial=False)
        self._watch_end(runner)
        return self.status(name)

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

    # ---- ending ----------------------------------------------------------------------------

    def _watch_end(self, runner: StudyRunner) -> None:
        self.metrics.studies_running.inc()
        threading.Thread(target=self._await_end, args=(runner,), daemon=True).start()

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

    # ---- reading ---------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Whether the store has a study of this name."""
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

    def spec_of(self, name: str) -> StudySpec:
        """The spec a stored study was started with; NotFound / FailedPrecondition."""
        status = self.status(name)
        if not status.request_json:
            raise FailedPrecondition(
                f"study {name!r} was not made by molhpo (it has no request); nothing to do"
            )
        return convert.spec_from_proto(convert.request_from_json(status.request_json))

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
            dataset=DatasetSummary.from_dict(study_attrs.get(attrs.STUDY_DATASET)),
            waiting=waiting,
        )

    def list_studies(self) -> list[StudyStatus]:
        """Every study in the store."""
        return [self.status(s.study_name) for s in self.storage.get_all_studies()]

    def watch(self, name: str, after: int, timeout_s: float) -> tuple[list[Event], bool]:
        """Events of a running study newer than ``after``; (events, finished)."""
        runner = self.runner(name)
        if runner is None:
            self.status(name)
            return [], True
        return runner.events.after(after, timeout_s)


def _fail_orphans(storage: optuna.storages.BaseStorage, study: optuna.Study) -> None:
    """A RUNNING trial no coordinator serves any more cannot finish: record why."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, attrs.TRIAL_FAILURE_CLASS, FailureClass.ORPHANED)
        storage.set_trial_user_attr(
            t._trial_id,
            attrs.TRIAL_FAILURE_REASON,
            "its coordinator stopped before it ended",
        )
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
