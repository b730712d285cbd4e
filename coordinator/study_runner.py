"""One study's lifecycle: sample, dispatch, record reports and decisions, finish.

A runner owns one Optuna study. Its dispatch thread keeps up to ``parallelism`` trials running
on the trainer pool; the report consumer calls :meth:`on_epoch` and :meth:`on_result` as reports
arrive. Every change to the study happens under the runner's lock, so decisions are made in a
single, recorded order (each carries a sequence number) and can be replayed exactly.
"""

from __future__ import annotations

import base64
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import optuna

from coordinator import convert, pruning
from coordinator.events import EventKind, EventLog
from coordinator.membership import Reservation, Waiting, WaitReason, work_key
from coordinator.objectives import objective_values, violations
from coordinator.optimizer.search_space import suggest
from coordinator.retry import RETRYABLE, should_retry
from coordinator.spec import StudySpec, default_trial
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo.contract import attrs
from molhpo.contract.enums import Direction, FailureClass
from molhpo.contract.errors import InvalidArgument, MolhpoError
from molhpo.v1 import common_pb2
from storage import decisions
from storage.decisions import Decision
from storage.owned_cache import OwnedStudyStorage

log = logging.getLogger(__name__)

# How often the dispatch loop re-checks when nothing wakes it.
_IDLE_WAIT_S = 0.5
# A trial no trainer accepts is retried this many times before it is recorded as FAIL.
_MAX_DISPATCH_TRIES = 20
# A study waiting for busy slots (or its fair share) says so in its events only once the wait
# has lasted this long, so ordinary hand-overs between trials make no noise; a study that no
# registered trainer can run says so at once.
_ANNOUNCE_BUSY_AFTER_S = 2.0


class StudyState(enum.Enum):
    """Mirrors molhpo.v1.StudyState."""

    RUNNING = 1
    COMPLETE = 2
    STOPPED = 3
    FAILED = 4
    DETACHED = 5


class RunState(enum.Enum):
    """Where a trial of this runner stands (a :class:`RunningTrial`'s ``state``).

    DISPATCHING -> ON_TRAINER -> FINISHED is the usual path. A trainer that refuses sends it
    back to DISPATCHING; a lost trial goes to RETRY_QUEUED (then DISPATCHING again) or, out of
    attempts, to FINISHED. A trial adopted after a coordinator restart starts AWAITING_CLAIM
    (its trainer may still run it) or, if it never reached a trainer, RETRY_QUEUED.
    """

    DISPATCHING = 1
    """Registered, looking for a trainer that takes it; on none."""
    AWAITING_CLAIM = 2
    """Adopted from a previous coordinator; waiting for a trainer's heartbeat to claim it."""
    ON_TRAINER = 3
    """A trainer holds it (from the moment its slot is confirmed); ``trainer_id`` names it."""
    RETRY_QUEUED = 4
    """Lost, or never handed out; in the runner's retry queue for another attempt."""
    FINISHED = 5
    """Told to the study (or failed by the store); no longer the runner's."""


# On no trainer and not queued for a retry: a trainer's claim after a restart takes such a
# trial (attach), and a missing claim sends it to the retry queue (unclaimed).
_UNASSIGNED = frozenset({RunState.DISPATCHING, RunState.AWAITING_CLAIM})


@dataclass
class RunningTrial:
    """A trial of this runner from its dispatch to its end; ``state`` says where it stands."""

    trial_id: int
    number: int
    trainer_id: str
    attempt: int
    started: float
    last_step: int = 0
    spec: common_pb2.TrialSpec | None = None
    history: list[str] = field(default_factory=list)
    state: RunState = RunState.DISPATCHING


class StudyRunner:
    """Runs one study to its end on the shared trainer pool."""

    def __init__(
        self,
        spec: StudySpec,
        study: optuna.Study,
        shared: Shared,
        options: CoordinatorOptions,
        *,
        n_existing: int = 0,
    ) -> None:
        """Args:
        spec: the study's settings.
        study: the study, loaded from the store.
        shared: the trainer pool and client, Redis (pruning decisions) and metrics; the
            runner writes the study through ``study`` only.
        options: the decision timeout trainers are given, and how often a trial is dispatched
            at most.
        n_existing: trials the study has already (a resumed study).
        """
        self._max_attempts = options.max_attempts
        self._retry: deque[RunningTrial] = deque()
        self.spec = spec
        self.study = study
        self.events = EventLog()
        self._pool = shared.pool
        self._trainers = shared.trainers
        self._redis = shared.redis
        self._keys = shared.keys
        self._metrics = shared.metrics
        self._decision_timeout = options.decision_timeout_s
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._running: dict[int, RunningTrial] = {}
        # Trials the study had before this runner (a resumed study) count towards n_trials.
        self._n_dispatched = n_existing
        # Counts of this runner's finished trials and its best value, for metrics.
        self.finished_counts: dict[str, int] = {"complete": 0, "pruned": 0, "fail": 0}
        self.best_value: float | None = None
        # Decision sequence numbers go on from the study's last one (a resumed or restarted
        # study), so they stay unique across every runner the study has had.
        self._sequence = last_decision_seq(study.get_trials(deepcopy=False))
        self._stop_requested = False
        self.state = StudyState.RUNNING
        self.message = ""
        # Why the study cannot dispatch what it wants now (None: it can, or wants nothing).
        self.waiting: Waiting | None = None
        self.waiting_since = 0.0
        self._wait_announced: Waiting | None = None
        self._work = work_key(spec.dataset.name, spec.dataset.path, spec.dataset.format)
        self.start_time = time.time()
        self.end_time = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"study-{spec.name}", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(
        self,
        enqueue_initial: bool = True,
        extra: Sequence[tuple[Mapping[str, object], Mapping[str, object]]] = (),
    ) -> None:
        """Record the study's start, enqueue the first trials, and begin dispatching."""
        st = self.study._storage
        sid = self.study._study_id
        if enqueue_initial:
            if self.spec.enqueue_default:
                self.study.enqueue_trial(
                    default_trial(self.spec), user_attrs={"enqueued": "default"}
                )
            for trial in self.spec.enqueued:
                self.study.enqueue_trial(dict(trial), user_attrs={"enqueued": "request"})
            for params, user_attrs in extra:
                self.study.enqueue_trial(dict(params), user_attrs=dict(user_attrs))
        st.set_study_system_attr(sid, attrs.STUDY_STATE, self.state.name)
        st.set_study_system_attr(sid, attrs.STUDY_START, self.start_time)
        self._thread.start()

    def stop(self, cancel_running: bool) -> None:
        """Dispatch nothing more; cancel running trials when asked."""
        with self._lock:
            self._stop_requested = True
            running = list(self._running.values())
        if cancel_running:
            for rt in running:
                self._cancel(rt, "study stopped by request")
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        """Wait for the dispatch thread to end."""
        self._thread.join(timeout_s)

    @property
    def finished(self) -> bool:
        """Whether the study reached a final state."""
        return self.state is not StudyState.RUNNING

    def queue_depth(self) -> int:
        """Trials this study would dispatch now if trainer slots were free."""
        with self._lock:
            if self._stop_requested or self._timed_out() or self.finished:
                return 0
            return max(
                min(
                    self.spec.parallelism - len(self._running),
                    self.spec.n_trials - self._n_dispatched,
                ),
                0,
            )

    def running_trials(self) -> list[RunningTrial]:
        """A copy of the running trials."""
        with self._lock:
            return list(self._running.values())

    # ---- dispatch --------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stop_requested:
                        self._drop_retries()
                    if self._should_finish():
                        self._finish()
                        return
                    retry = self._retry[0] if self._retry else None
                    want = retry is not None or self._wants_trial()
                if not want:
                    self._note_wait(None)
                    self._wake.wait(_IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                res = self._reserve()
                if res is None:
                    self._pool.wait_for_change(_IDLE_WAIT_S)
                elif retry is not None:
                    self._dispatch_retry(retry, res)
                else:
                    self._dispatch_new(res)
        except Exception as err:  # the study cannot go on; record why instead of dying silently
            log.exception("study %s failed", self.spec.name)
            with self._lock:
                self._finish(StudyState.FAILED, f"coordinator error: {err}")

    def _drop_retries(self) -> None:
        """The study stops: the trials queued for a retry fail (called under the lock)."""
        while self._retry:
            waiting = self._retry.popleft()
            self._fail(waiting, FailureClass.STOPPED, "the study stopped before its retry")

    def _dispatch_retry(self, retry: RunningTrial, res: Reservation) -> None:
        """Send the first queued retry to the slot ``res``, unless its first run has ended."""
        with self._lock:
            self._retry.popleft()
            # Its first run may have ended meanwhile (a late result).
            current = self._running.get(retry.trial_id) is retry
            if current and retry.state is RunState.RETRY_QUEUED:
                retry.state = RunState.DISPATCHING
        if current:
            self._send(retry, res)
        else:
            self._pool.release(res.trainer_id, res.token)

    def _reserve(self, avoid: frozenset[str] = frozenset()) -> Reservation | None:
        """A slot for this study's work, or None (noting why, see :meth:`_note_wait`)."""
        with self._lock:
            demand = len(self._retry) + self.queue_depth()
        got = self._pool.reserve_or_wait(
            self.spec.model, self._work, avoid, self.spec.name, demand=max(demand, 1)
        )
        if isinstance(got, Reservation):
            self._note_wait(None)
            return got
        self._note_wait(got)
        return None

    def _note_wait(self, why: Waiting | None) -> None:
        """Keep why the study waits (status and metrics read it) and tell its watchers: at once
        when no trainer can run it, after a while when slots are busy, and once more (with an
        empty message) when it dispatches again after a told wait."""
        now = time.monotonic()
        with self._lock:
            if why is None:
                if self._wait_announced is not None:
                    self.events.append(EventKind.STUDY_WAITING)
                self.waiting, self._wait_announced = None, None
                return
            if self.waiting is None or self.waiting.reason is not why.reason:
                self.waiting_since = now
            self.waiting = why
            told = self._wait_announced
            if (
                told is not None
                and told.reason is why.reason
                and (told.message == why.message or why.reason is WaitReason.SLOTS_BUSY)
            ):
                return
            patient = why.reason in (WaitReason.SLOTS_BUSY, WaitReason.FAIR_SHARE)
            if patient and now - self.waiting_since < _ANNOUNCE_BUSY_AFTER_S:
                return
            self._wait_announced = why
            self.events.append(EventKind.STUDY_WAITING, message=why.message)
            log.info("study %s waits: %s", self.spec.name, why.message)

    def _timed_out(self) -> bool:
        t = self.spec.timeout_seconds
        return t > 0 and time.time() - self.start_time >= t

    def _wants_trial(self) -> bool:
        return (
            not self._stop_requested
            and not self._timed_out()
            and self._n_dispatched < self.spec.n_trials
            and len(self._running) < self.spec.parallelism
        )

    def _should_finish(self) -> bool:
        if self._running or self._retry:
            return False
        return self._stop_requested or self._timed_out() or self._n_dispatched >= self.spec.n_trials

    def _dispatch_new(self, first: Reservation) -> None:
        t0 = time.perf_counter()
        with self._lock:
            trial = self.study.ask()
            params = suggest(trial, self.spec.params)
            self._n_dispatched += 1
            rt = RunningTrial(trial._trial_id, trial.number, "", 1, time.time())
            rt.spec = self._trial_spec(trial, params)
            # Registered before any trainer has it, so a report can never outrun it.
            self._running[trial._trial_id] = rt
        self._metrics.ask_seconds.observe(time.perf_counter() - t0)
        self._send(rt, first)

    def _send(self, rt: RunningTrial, first: Reservation | None) -> None:
        """Hand a trial (new or retried) to a trainer, trying others when one refuses."""
        assert rt.spec is not None  # set by _dispatch_new before any send
        spec = common_pb2.TrialSpec()
        spec.CopyFrom(rt.spec)
        spec.attempt = rt.attempt
        avoid: set[str] = set()
        res = first
        refusals = 0
        # Waiting for a free slot is unbounded (trainers may be restarting); only trainers
        # that refuse the trial count towards the limit.
        while refusals < _MAX_DISPATCH_TRIES:
            if res is None:
                self._pool.wait_for_change(_IDLE_WAIT_S)
                if self._stop_requested:
                    break
                res = self._reserve(frozenset(avoid))
                if res is None:
                    avoid.clear()
                    continue
            if not self._keep_spec(rt, spec, res):
                return
            self._pool.confirm(res, rt.trial_id)
            with self._lock:
                rt.trainer_id = res.trainer_id
                rt.started = time.time()
                if rt.state is not RunState.FINISHED:
                    rt.state = RunState.ON_TRAINER
            t1 = time.perf_counter()
            try:
                self._trainers.run_trial(res.address, spec)
            except InvalidArgument as err:
                self._release(rt)
                self._fail(rt, FailureClass.INVALID_CONFIG, f"trainer refused the trial: {err}")
                return
            except MolhpoError as err:
                self._refused(rt, res.trainer_id, err)
                avoid.add(res.trainer_id)
                refusals += 1
                res = None
                continue
            self._started(rt, res.trainer_id, time.perf_counter() - t1)
            return
        self._fail(rt, FailureClass.DISPATCH, "no trainer accepted the trial")

    def _keep_spec(self, rt: RunningTrial, spec: common_pb2.TrialSpec, res: Reservation) -> bool:
        """Keep the TrialSpec with the trial before any trainer has it, so a restarted
        coordinator knows every trial that may be running somewhere, and with which attempt.
        False (and the slot released) when the trial has ended meanwhile."""
        try:
            self.study._storage.set_trial_system_attr(
                rt.trial_id,
                attrs.TRIAL_SPEC,
                base64.b64encode(spec.SerializeToString()).decode(),
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            self._pool.release(res.trainer_id, res.token)
            return False
        return True

    def _refused(self, rt: RunningTrial, trainer_id: str, err: MolhpoError) -> None:
        """A trainer did not take the trial: its slot goes back, the trial waits for another."""
        log.info("trainer %s did not take trial %d: %s", trainer_id, rt.number, err)
        self._release(rt)
        with self._lock:
            rt.trainer_id = ""
            if rt.state is RunState.ON_TRAINER:
                rt.state = RunState.DISPATCHING

    def _started(self, rt: RunningTrial, trainer_id: str, dispatch_s: float) -> None:
        self._metrics.dispatch_seconds.observe(dispatch_s)
        self._metrics.trials_started.inc()
        note = f"on trainer {trainer_id}"
        if rt.attempt > 1:
            note += f" (attempt {rt.attempt})"
        self.events.append(EventKind.TRIAL_STARTED, rt.number, message=note)

    def _lost(self, rt: RunningTrial, failure_class: str, reason: str) -> None:
        """The trainer of a trial is gone: dispatch it again, or record the failure."""
        with self._lock:
            if rt.state is not RunState.ON_TRAINER:
                return
            self._release(rt)
            rt.history.append(
                f"attempt {rt.attempt} on {rt.trainer_id}: {reason} (last epoch {rt.last_step})"
            )
            if should_retry(failure_class, rt.attempt, self._max_attempts) and not (
                self._stop_requested
            ):
                rt.attempt += 1
                rt.trainer_id = ""
                rt.state = RunState.RETRY_QUEUED
                self._retry.append(rt)
                self._metrics.retries.labels(failure_class).inc()
                self.events.append(
                    EventKind.TRIAL_RETRIED, rt.number, message=f"{failure_class}: {reason}"
                )
                self._wake.set()
                return
        self._fail(
            rt, failure_class, f"{reason} (after {rt.attempt} attempt{'s' * (rt.attempt > 1)})"
        )

    def _trial_spec(
        self, trial: optuna.Trial, params: Mapping[str, object]
    ) -> common_pb2.TrialSpec:
        return self._trial_spec_from(trial.number, trial._trial_id, params)

    def _trial_spec_from(
        self, number: int, trial_id: int, params: Mapping[str, object]
    ) -> common_pb2.TrialSpec:
        s = self.spec
        spec = common_pb2.TrialSpec(
            study_name=s.name,
            trial_id=trial_id,
            trial_number=number,
            attempt=1,
            dataset=convert.dataset_to_proto(s.dataset),
            model=s.model,
            max_epochs=s.max_epochs,
            seed=s.seed + number,
            objective=convert.objective_to_proto(s.metric, s.direction),
            keep_checkpoints=s.keep_checkpoints,
            checkpoint_every=s.checkpoint_every,
            return_test_predictions=s.return_test_predictions,
            decision_timeout_seconds=(0.0 if s.pruner.name == "none" else self._decision_timeout),
        )
        for k, v in {**s.fixed_params, **params}.items():
            spec.params[k].CopyFrom(convert.value_to_proto(v))
        return spec

    # ---- reports ---------------------------------------------------------------------------

    def on_epoch(
        self,
        report: common_pb2.TrialReport,
        publish: Callable[[int, int, Decision], None] | None = None,
    ) -> Decision | None:
        """Record an epoch report and decide; None when the report is stale (ignored).

        The decision goes to the trainer through ``publish`` (trial id, step, decision), by
        default at once; the report consumer passes its own to publish a burst in one trip.
        """
        ep = report.epoch
        out = publish or self._publish_now
        with self._lock:
            rt = self._running.get(report.trial_id)
            if rt is None or report.attempt != rt.attempt:
                return None
            value = ep.valid.values.get(self.spec.metric, float("nan"))
            if ep.step in self.study._storage.get_trial(report.trial_id).intermediate_values:
                # At-least-once delivery: the same report gets the same answer.
                again = decisions.recorded(self._redis, self._keys, report.trial_id, ep.step)
                if again is not None:
                    out(report.trial_id, ep.step, again)
                    return again
            prune = pruning.record_and_decide(self.study, report.trial_id, ep.step, value)
            self._sequence += 1
            self.study._storage.set_trial_system_attr(
                report.trial_id,
                f"{attrs.TRIAL_DECISION_PREFIX}{ep.step}",
                {"seq": self._sequence, "prune": prune},
            )
            rt.last_step = max(rt.last_step, ep.step)
            decision = Decision.PRUNE if prune else Decision.CONTINUE
            out(report.trial_id, ep.step, decision)
        self.events.append(EventKind.EPOCH_REPORTED, rt.number, ep.step, value)
        return decision

    def _publish_now(self, trial_id: int, step: int, decision: Decision) -> None:
        decisions.publish(self._redis, self._keys, trial_id, step, decision)

    def on_result(self, report: common_pb2.TrialReport) -> bool:
        """Record a trial's end; False when the report is stale (ignored)."""
        res = report.result
        with self._lock:
            rt = self._running.get(report.trial_id)
            if rt is None or report.attempt != rt.attempt:
                return False
            user_attrs = {
                attrs.TRIAL_VALID: dict(res.valid.values),
                "test_metrics": dict(res.test.values),
                "epochs_trained": res.epochs_trained,
                "best_step": res.best_step,
                "trainer_id": report.trainer_id,
                attrs.TRIAL_SECONDS: res.seconds,
                attrs.TRIAL_N_PARAMETERS: res.n_parameters,
            }
            if res.checkpoint:
                user_attrs["checkpoint"] = res.checkpoint
            if res.resumed_from_step:
                user_attrs["resumed_from_step"] = res.resumed_from_step
            if res.HasField("test_predictions"):
                user_attrs[attrs.TEST_PREDICTIONS] = list(res.test_predictions.values)
                user_attrs[attrs.TEST_TARGETS] = list(res.test_targets.values)
            if self.spec.constraints:
                user_attrs[attrs.TRIAL_FEASIBLE] = all(
                    v <= 0 for v in violations(self.spec.constraints, user_attrs)
                )
            if res.state == common_pb2.TRIAL_STATE_COMPLETE:
                values = objective_values(self.spec.objectives, user_attrs)
                if values is None:
                    missing = ", ".join(o.metric for o in self.spec.objectives)
                    self._fail(
                        rt,
                        FailureClass.ERROR,
                        f"trainer reported no value for: {missing}",
                        user_attrs,
                    )
                else:
                    self._finish_trial(rt, optuna.trial.TrialState.COMPLETE, values, user_attrs)
            elif res.state == common_pb2.TRIAL_STATE_PRUNED:
                self._finish_trial(rt, optuna.trial.TrialState.PRUNED, None, user_attrs)
            elif res.failure_class in RETRYABLE:
                self._lost(rt, res.failure_class, res.failure_reason or res.failure_class)
            else:
                self._fail(
                    rt,
                    res.failure_class or FailureClass.ERROR,
                    res.failure_reason or "trainer reported failure",
                    user_attrs,
                )
        return True

    def on_trainer_lost(self, trainer_id: str, trial_ids: set[int]) -> None:
        """A trainer went silent: its trials cannot finish there."""
        with self._lock:
            lost = [
                rt
                for tid, rt in self._running.items()
                if tid in trial_ids and rt.trainer_id == trainer_id
            ]
        for rt in lost:
            self._lost(
                rt, FailureClass.TRAINER_LOST, f"trainer {trainer_id} stopped sending heartbeats"
            )

    def adopt(self, trials: Sequence[optuna.trial.FrozenTrial]) -> None:
        """Take back the RUNNING trials of a study a previous coordinator ran: wait for their
        trainers to claim them (heartbeats), or run them again."""
        for t in trials:
            raw = t.system_attrs.get(attrs.TRIAL_SPEC)
            rt = RunningTrial(t._trial_id, t.number, "", 1, time.time(), t.last_step or 0)
            if isinstance(raw, str):
                spec = common_pb2.TrialSpec()
                spec.ParseFromString(base64.b64decode(raw))
                rt.spec, rt.attempt = spec, spec.attempt or 1
            else:
                # Never reached a trainer: rebuild its spec from the parameters it was given.
                rt.spec = self._trial_spec_from(t.number, t._trial_id, dict(t.params))
            with self._lock:
                self._running[t._trial_id] = rt
                if isinstance(raw, str):
                    rt.state = RunState.AWAITING_CLAIM
                    self._pool.expect(t._trial_id, self.spec.name)
                else:
                    rt.state = RunState.RETRY_QUEUED
                    self._retry.append(rt)

    def attach(self, trainer_id: str, trial_id: int) -> bool:
        """A trainer's heartbeat claimed an adopted trial; False if not ours."""
        with self._lock:
            rt = self._running.get(trial_id)
            if rt is None or rt.state not in _UNASSIGNED:
                return False
            rt.trainer_id = trainer_id
            rt.state = RunState.ON_TRAINER
        self.events.append(EventKind.TRIAL_STARTED, rt.number, message=f"on trainer {trainer_id}")
        return True

    def unclaimed(self, trial_id: int) -> bool:
        """No trainer claimed an adopted trial: run it again; False if not ours."""
        with self._lock:
            rt = self._running.get(trial_id)
            if rt is None or rt.state not in _UNASSIGNED:
                return False
            rt.history.append(f"attempt {rt.attempt}: no trainer claimed it after a restart")
            if should_retry(FailureClass.TRAINER_LOST, rt.attempt, self._max_attempts):
                rt.attempt += 1
                rt.state = RunState.RETRY_QUEUED
                self._retry.append(rt)
                self._metrics.retries.labels(FailureClass.TRAINER_LOST).inc()
                self._wake.set()
                return True
        self._fail(
            rt, FailureClass.TRAINER_LOST, "no trainer claimed it after a coordinator restart"
        )
        return True

    def on_lease_expired(self, trainer_id: str, trial_id: int) -> bool:
        """A trial's lease ran out (its trainer no longer lists it); False if not ours."""
        with self._lock:
            rt = self._running.get(trial_id)
            if rt is None or rt.trainer_id != trainer_id:
                return False
        self._lost(
            rt, FailureClass.LEASE_EXPIRED, f"trainer {trainer_id} stopped renewing its lease"
        )
        return True

    def owns(self, trial_id: int) -> bool:
        """Whether the trial is one of this study's running trials."""
        with self._lock:
            return trial_id in self._running

    def on_store_failure(self, trial_id: int, reason: str) -> bool:
        """The store refused a write of a running trial for good and holds the trial as FAIL
        with ``reason``: stop it on its trainer and free its slot; False if not ours."""
        with self._lock:
            rt = self._running.pop(trial_id, None)
            if rt is None:
                return False
            rt.state = RunState.FINISHED
            for i, waiting in enumerate(self._retry):
                if waiting is rt:
                    del self._retry[i]
                    break
            self.finished_counts["fail"] += 1
        self._cancel(rt, reason)
        self._release(rt)
        self._metrics.trials_finished.labels("fail").inc()
        self.events.append(EventKind.TRIAL_FAILED, rt.number, message=f"store: {reason}")
        self._wake.set()
        return True

    # ---- endings ---------------------------------------------------------------------------

    def _release(self, rt: RunningTrial) -> None:
        if rt.trainer_id:
            self._pool.release(rt.trainer_id, rt.trial_id)

    def _set_attrs(self, trial_id: int, user_attrs: dict[str, object]) -> None:
        st = self.study._storage
        for k, v in user_attrs.items():
            st.set_trial_user_attr(trial_id, k, v)

    def _finish_trial(
        self,
        rt: RunningTrial,
        state: optuna.trial.TrialState,
        values: list[float] | None,
        user_attrs: dict[str, object],
    ) -> None:
        value = values[0] if values else None
        with self._lock:
            self._set_attrs(rt.trial_id, {**user_attrs, **_attempt_attrs(rt)})
            told = values if values is None or self.spec.multi_objective else values[0]
            self.study.tell(rt.number, told, state=state)
            self._running.pop(rt.trial_id, None)
            rt.state = RunState.FINISHED
            self.finished_counts[state.name.lower()] += 1
            if (
                value is not None
                and not self.spec.multi_objective
                and user_attrs.get(attrs.TRIAL_FEASIBLE, True)
                and (
                    self.best_value is None
                    or (
                        value < self.best_value
                        if self.spec.direction == Direction.MINIMIZE
                        else value > self.best_value
                    )
                )
            ):
                self.best_value = value
        self._release(rt)
        self._metrics.trials_finished.labels(state.name.lower()).inc()
        if state is optuna.trial.TrialState.PRUNED:
            self.events.append(EventKind.TRIAL_PRUNED, rt.number, rt.last_step)
        else:
            self.events.append(EventKind.TRIAL_COMPLETED, rt.number, value=value or 0.0)
        self._wake.set()

    def _fail(
        self,
        rt: RunningTrial,
        failure_class: str,
        reason: str,
        user_attrs: dict[str, object] | None = None,
    ) -> None:
        with self._lock:
            self._set_attrs(
                rt.trial_id,
                {
                    **(user_attrs or {}),
                    attrs.TRIAL_FAILURE_CLASS: failure_class,
                    attrs.TRIAL_FAILURE_REASON: reason,
                    "trainer_id": rt.trainer_id,
                    **_attempt_attrs(rt),
                },
            )
            self.study.tell(rt.number, state=optuna.trial.TrialState.FAIL)
            self._running.pop(rt.trial_id, None)
            rt.state = RunState.FINISHED
            self.finished_counts["fail"] += 1
        self._release(rt)
        self._metrics.trials_finished.labels("fail").inc()
        self.events.append(EventKind.TRIAL_FAILED, rt.number, message=f"{failure_class}: {reason}")
        self._wake.set()

    def _cancel(self, rt: RunningTrial, reason: str) -> None:
        addr = next(
            (t.address for t in self._pool.snapshot() if t.trainer_id == rt.trainer_id), None
        )
        if addr is None:
            return
        try:
            self._trainers.cancel_trial(addr, rt.trial_id, reason)
        except MolhpoError as err:
            log.warning("could not cancel trial %d on %s: %s", rt.number, rt.trainer_id, err)

    def _finish(self, state: StudyState | None = None, message: str = "") -> None:
        if state is None:
            if self._stop_requested:
                state, message = StudyState.STOPPED, "stopped by request"
            elif self._n_dispatched < self.spec.n_trials:
                state, message = StudyState.COMPLETE, "timeout reached"
            else:
                state = StudyState.COMPLETE
        self.state = state
        self.message = message
        self.waiting = None
        self.end_time = time.time()
        st = self.study._storage
        sid = self.study._study_id
        if isinstance(st, OwnedStudyStorage) and not st.drain():
            log.warning("study %s ends with store writes still queued", self.spec.name)
        try:
            st.set_study_system_attr(sid, attrs.STUDY_STATE, state.name)
            st.set_study_system_attr(sid, attrs.STUDY_END, self.end_time)
            st.set_study_system_attr(sid, attrs.STUDY_MESSAGE, message)
        except Exception:  # the store itself failed; the in-memory state still tells
            log.exception("could not record the end of study %s", self.spec.name)
        self.events.append(EventKind.STUDY_FINISHED, message=message)


def last_decision_seq(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """The highest decision sequence number the trials' decision logs hold (0: none)."""
    last = 0
    for t in trials:
        for key, value in t.system_attrs.items():
            if key.startswith(attrs.TRIAL_DECISION_PREFIX) and isinstance(value, dict):
                seq = value.get("seq")
                if isinstance(seq, int) and seq > last:
                    last = seq
    return last


def _attempt_attrs(rt: RunningTrial) -> dict[str, object]:
    """How many dispatches a trial took, and why earlier ones ended."""
    out: dict[str, object] = {"attempts": rt.attempt}
    if rt.history:
        out["retry_history"] = list(rt.history)
    return out
