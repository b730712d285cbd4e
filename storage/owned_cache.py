"""The study store as its only writer sees it: every trial of a running study in memory.

Optuna's ``_CachedStorage`` keeps finished trials in memory but reads every unfinished trial
back from the database on each ``get_all_trials``, because another worker may have written
it. With 64 trials running that read (ORM objects for every attribute and intermediate value)
costs tens of milliseconds, and it happens on every pruning decision (Hyperband reads its
bracket) and every ask (the sampler reads the history).

A coordinator is the only writer of the studies it runs. For those ("owned" studies) this
storage reads the trials once, then keeps them current from its own writes: each write goes
to the database first (write-through, so the store stays the durable record and
``optuna-dashboard`` sees it) and then replaces the cached trial with an updated copy.
Readers never see a trial object change under them. Studies it does not own behave exactly
as under ``_CachedStorage``.

A thread may also hand its writes of owned trials to a writer thread (``deferring()``): they
reach the cache at once and the database soon after, in the order they were made. The report
consumer does this so a pruning decision never waits for the database; it acknowledges its
reports through ``after_writes()``, so a report is acknowledged only once what it caused is
stored, and a crash loses no report (Redis hands unacknowledged ones out again). A write made
by any other thread to an owned trial first waits for the writer to catch up (``drain()``),
and a study is marked finished only after it did, so the store never lags at the end.

Such writes can also wait in a hold (``holding()``) until the caller releases them: the report
consumer releases the writes a pruning decision caused only once Redis has the decision, and
when publishing fails the held writes are dropped and undone in the cache, so the reports are
handled afresh.

The writer never skips a write silently. A write the database cannot take now (it is away,
locked, busy: an operational error) is tried again, with backoff, for as long as it takes;
nothing queued after it runs meanwhile, so nothing is acknowledged. A write the database
refuses for good (any other error, tried a few times) is given up: its trial is recorded as
FAIL in the store with the reason, the trial's other queued writes are dropped, the cached
trial is read back from the database, and ``on_write_lost(trial_id, reason)`` is told, so the
trial ends in the open instead of going on with a hole in its record.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import optuna
import sqlalchemy.exc
from optuna import distributions
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.trial import FrozenTrial, TrialState

from molhpo.contract import attrs
from molhpo.contract.enums import FailureClass

log = logging.getLogger(__name__)

# A write the database refuses (not merely cannot take now) is tried this many times in all.
MAX_WRITE_TRIES = 4
# Retries of a failed write back off from the first delay up to the last.
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
# The database away this long (writes held, nothing acknowledged) is logged as an error, and
# again every so long while it lasts.
STALL_ALARM_S = 60.0
# The longest error text kept in a failure reason.
_MAX_REASON = 400

_MISSING = object()

_Item = tuple[Callable[..., Any] | None, tuple[Any, ...]]
"""A queued write (the function and its arguments, the trial id first), or a callback
(None and a one-tuple holding the callback)."""


@dataclasses.dataclass
class _Tries:
    """The writer's count of tries of the write at the queue's head, and its next delay."""

    tries: int = 0
    backoff: float = _FIRST_BACKOFF_S
    # when the last stall alarm was logged (monotonic; 0: not during this stall)
    alarmed: float = 0.0


class Hold:
    """Writes one thread made while holding: in the cache already, queued nowhere yet."""

    def __init__(self, storage: OwnedStudyStorage) -> None:
        self._storage = storage
        self.items: list[_Item] = []
        # (trial id, FrozenTrial field, key in that field's dict or None, value before)
        self.undo: list[tuple[int, str, object, object]] = []

    def release(self) -> None:
        """Queue the held writes for the writer thread, in the order they were made."""
        items, self.items, self.undo = self.items, [], []
        self._storage._enqueue_many(items)


class OwnedStudyStorage(_CachedStorage):
    """``_CachedStorage`` that keeps unfinished trials of owned studies in memory too."""

    def __init__(
        self,
        backend: RDBStorage,
        on_write_lost: Callable[[int, str], object] | None = None,
        max_write_tries: int = MAX_WRITE_TRIES,
    ) -> None:
        """Args:
        backend: the study store.
        on_write_lost: told (trial id, reason), on the writer thread, after a write the
            store refused for good was given up and its trial recorded as FAIL; it must not
            wait for this storage (hand the news to another thread).
        max_write_tries: how often a write the store refuses is tried in all (>= 1).
        """
        if max_write_tries < 1:
            raise ValueError(
                f"The value of `max_write_tries` is {max_write_tries}, but must be "
                "`max_write_tries >= 1`"
            )
        super().__init__(backend)
        self._owned: set[int] = set()
        self._local = threading.local()
        self._cv = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._busy = False
        self._closed = False
        self._writer: threading.Thread | None = None
        self._on_write_lost = on_write_lost or (lambda trial_id, reason: None)
        self._max_tries = max_write_tries
        self._stalled_since: float | None = None

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within: this thread's writes to owned trials go through the writer thread."""
        self._local.deferring = True
        try:
            yield
        finally:
            self._local.deferring = False

    @contextlib.contextmanager
    def holding(self) -> Iterator[Hold]:
        """Within (and within ``deferring()``): this thread's writes of owned trials, and its
        ``after_writes`` callbacks, wait in the returned hold until ``Hold.release()`` queues
        them. What is still held when the block ends is dropped, and its effect on the cache
        undone (latest first), as if it had never been written."""
        hold = Hold(self)
        self._local.hold = hold
        try:
            yield hold
        finally:
            self._local.hold = None
            self._undo(hold)

    def after_writes(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the writer thread once every write queued before it is stored
        (or, refused for good, recorded as its trial's failure)."""
        self._submit(None, (callback,))

    def stalled_s(self) -> float:
        """For how long the writer has been waiting for the database (0: it is not)."""
        since = self._stalled_since
        return 0.0 if since is None else time.monotonic() - since

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until every queued write is stored; False on timeout."""
        if threading.current_thread() is self._writer:
            return True
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Store what is queued, then stop the writer thread."""
        self.drain(timeout_s)
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _submit(self, write: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        """Queue a write, or keep it in this thread's hold."""
        hold: Hold | None = getattr(self._local, "hold", None)
        if hold is not None:
            hold.items.append((write, args))
        else:
            self._enqueue_many([(write, args)])

    def _enqueue_many(self, items: Iterable[_Item]) -> None:
        with self._cv:
            self._queue.extend(items)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="store-writer", daemon=True
                )
                self._writer.start()
            self._cv.notify_all()

    def _write_loop(self) -> None:
        head = _Tries()
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                write, args = self._queue[0]
                self._busy = True
            failure = self._run_write(write, args)
            if failure is not None and write is None:
                # A callback (an acknowledgement) handles its own errors; one that still fails
                # is not run again: what it would have acknowledged comes back instead.
                log.error("a callback after store writes failed: %s", _why(failure))
            elif failure is not None and write is not None:
                if self._write_failed(write, args, failure, head):
                    continue  # the head is tried again, or replaced by its trial's failure
            elif write is OwnedStudyStorage._record_failure:
                self._tell_lost(args[0], args[1])
            head = _Tries()
            self._stalled_since = None
            with self._cv:
                self._queue.popleft()
                self._busy = False
                self._cv.notify_all()

    def _run_write(
        self, write: Callable[..., Any] | None, args: tuple[Any, ...]
    ) -> Exception | None:
        """Run the queued write (or callback) at the head; the error it raised, if any."""
        try:
            if write is None:
                args[0]()
            else:
                write(self, *args)
        except UpdateFinishedTrialError as err:
            # The trial ended meanwhile by another path (e.g. its lease ran out): its end
            # is stored, and the store refuses changes to an ended trial.
            log.info("dropped a queued write: %s", err)
        except Exception as err:  # judged by the caller: retried, held or given up, never skipped
            return err
        return None

    def _write_failed(
        self, write: Callable[..., Any], args: tuple[Any, ...], failure: Exception, head: _Tries
    ) -> bool:
        """Judge a failed write: True when it stays at the head (to be tried again, or
        replaced by the record of its trial's failure), False when it is done with."""
        head.tries += 1
        transient = _is_transient(failure)
        if transient or head.tries < self._max_tries:
            self._wait_to_retry(write, args, failure, head, transient=transient)
            return True
        if write is OwnedStudyStorage._record_failure:
            # Even the failure cannot be stored: nothing more can be done here.
            log.error(
                "could not record the failure of trial id %d in the store (%s): %s",
                args[0],
                _why(failure),
                args[1],
            )
            self._tell_lost(args[0], args[1])
            return False
        self._give_up(write, args, failure, head.tries)
        head.tries, head.backoff = 0, _FIRST_BACKOFF_S
        return True

    def _wait_to_retry(
        self,
        write: Callable[..., Any],
        args: tuple[Any, ...],
        failure: Exception,
        head: _Tries,
        *,
        transient: bool,
    ) -> None:
        """Log the failure (an alarm once the store has been away STALL_ALARM_S), then sleep
        the backoff with the writer marked idle."""
        now = time.monotonic()
        if transient and self._stalled_since is None:
            self._stalled_since = now
        stalled = 0.0 if self._stalled_since is None else now - self._stalled_since
        if stalled >= STALL_ALARM_S and now - head.alarmed >= STALL_ALARM_S:
            head.alarmed = now
            log.error(
                "the study store has taken no write for %.0fs (%d waiting; no "
                "report is acknowledged meanwhile): %s",
                stalled,
                len(self._queue),
                _why(failure),
            )
        else:
            log.warning(
                "store write (%s) failed (%s); try %d, again in %.1fs",
                _describe(write, args),
                _why(failure),
                head.tries,
                head.backoff,
            )
        with self._cv:
            self._busy = False
            self._cv.notify_all()
        time.sleep(head.backoff)
        head.backoff = min(head.backoff * 2, _MAX_BACKOFF_S)

    def _give_up(
        self, write: Callable[..., Any], args: tuple[Any, ...], err: Exception, tries: int
    ) -> None:
        """Replace a write the store refused for good, and every later queued write of its
        trial, by the record of the trial's failure."""
        trial_id = int(args[0])
        with self._lock:
            cached = self._owned_trial(trial_id)
        who = f"trial {cached.number}" if cached is not None else f"trial id {trial_id}"
        reason = (
            f"the study store refused {_describe(write, args)} of {who} "
            f"{tries} time{'s' * (tries > 1)}: {_why(err)}"
        )
        log.error("%s; recording the trial as failed", reason)
        with self._cv:
            rest = [
                item
                for item in list(self._queue)[1:]
                if item[0] is None or int(item[1][0]) != trial_id
            ]
            dropped = len(self._queue) - 1 - len(rest)
            self._queue.clear()
            self._queue.append((OwnedStudyStorage._record_failure, (trial_id, reason)))
            self._queue.extend(rest)
        if dropped:
            log.warning("dropped %d later queued writes of %s", dropped, who)

    def _record_failure(self, trial_id: int, reason: str) -> None:
        """Store a trial as FAIL with why (the writer thread's own write)."""
        backend = self._backend
        backend.set_trial_user_attr(trial_id, attrs.TRIAL_FAILURE_CLASS, FailureClass.STORE)
        backend.set_trial_user_attr(trial_id, attrs.TRIAL_FAILURE_REASON, reason)
        backend.set_trial_state_values(trial_id, TrialState.FAIL)

    def _tell_lost(self, trial_id: int, reason: str) -> None:
        """The cache takes the trial as the database holds it; the owner is told."""
        try:
            stored = self._backend.get_trial(trial_id)
        except Exception as err:  # the trial is gone, or the store away: keep the cache
            log.warning("could not read trial id %d back: %s", trial_id, _why(err))
        else:
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                if where is not None and where[0] in self._owned:
                    self._studies[where[0]].trials[where[1]] = stored
        try:
            self._on_write_lost(trial_id, reason)
        except Exception:  # the owner's trouble must not stop the writer
            log.exception("on_write_lost failed for trial id %d", trial_id)

    def _defer(self, trial_id: int, write: Callable[..., Any], *args: Any) -> bool:
        """Queue (or hold) a write of an owned trial when this thread defers; else make other
        threads' queued writes land first. False: the caller writes it now."""
        if not self._is_owned(trial_id):
            return False
        if self._is_deferring():
            with self._lock:
                cached = self._owned_trial(trial_id)
                if cached is not None and cached.state.is_finished():
                    # As the database would answer (e.g. a trial a refused write failed).
                    raise UpdateFinishedTrialError(
                        f"Trial#{cached.number} has already finished and can not be updated."
                    )
            self._submit(write, (trial_id, *args))
            return True
        self.drain()
        return False

    def own(self, study_id: int) -> None:
        """From now on this process is the study's only writer: read it once, fully."""
        self.drain()  # what is queued for the study is in what is read
        trials = self._backend._get_trials(
            study_id, states=None, included_trial_ids=set(), trial_id_greater_than=-1
        )
        name = self.get_study_name_from_id(study_id)
        with self._lock:
            old = self._studies.pop(study_id, None)
            info = _StudyInfo()
            info.name = name
            if old is not None:
                info.directions = old.directions
            self._studies[study_id] = info
            self._add_trials_to_cache(study_id, trials)
            for t in trials:
                for name, dist in t.distributions.items():
                    info.param_distribution.setdefault(name, dist)
            self._owned.add(study_id)

    def disown(self, study_id: int) -> None:
        """Others may write the study again: read unfinished trials back as Optuna does."""
        with self._lock:
            self._owned.discard(study_id)
            self._studies.pop(study_id, None)

    def delete_study(self, study_id: int) -> None:
        self.drain()
        with self._lock:
            self._owned.discard(study_id)
        super().delete_study(study_id)

    # ---- reads -----------------------------------------------------------------------------

    def get_study_id_from_name(self, study_name: str) -> int:
        # Optuna's pruners build a Study per decision (Hyperband's bracket view), which asks
        # for the id by name: answered from memory for owned studies.
        with self._lock:
            for study_id in self._owned:
                info = self._studies.get(study_id)
                if info is not None and info.name == study_name:
                    return study_id
        return super().get_study_id_from_name(study_name)

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._lock:
            if study_id in self._owned:
                return
        super()._read_trials_from_remote_storage(study_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            cached = self._owned_trial(trial_id)
            if cached is not None:
                return _detached(cached)
        return super().get_trial(trial_id)

    # ---- writes: the database first, then the cached copy ---------------------------------

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        value = distribution.to_external_repr(param_value_internal)

        def apply(t: FrozenTrial) -> None:
            t.params = {**t.params, param_name: value}
            t.distributions = {**t.distributions, param_name: distribution}

        self._update(trial_id, apply)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        owned = self._is_owned(trial_id)
        if owned and self._is_deferring():
            with self._lock:
                cached = self._owned_trial(trial_id)
                assert cached is not None  # owned trials are all cached
                if cached.state.is_finished():
                    raise UpdateFinishedTrialError(
                        f"Trial#{cached.number} has already finished and can not be updated."
                    )
                if state == TrialState.RUNNING and cached.state != TrialState.WAITING:
                    return False
            self._submit(_CachedStorage.set_trial_state_values, (trial_id, state, values))
            changed = True
        else:
            if owned:
                self.drain()  # queued writes of the trial land before its new state
            changed = super().set_trial_state_values(trial_id, state, values)
        if changed:
            now = datetime.datetime.now()

            def apply(t: FrozenTrial) -> None:
                t.state = state
                if values is not None:
                    t.values = list(values)
                if state == TrialState.RUNNING and t.datetime_start is None:
                    t.datetime_start = now
                if state.is_finished():
                    t.datetime_complete = now

            self._update(trial_id, apply, _STATE_FIELDS)
        return changed

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        if not self._defer(
            trial_id, _CachedStorage.set_trial_intermediate_value, step, intermediate_value
        ):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._update(
            trial_id,
            lambda t: setattr(
                t, "intermediate_values", {**t.intermediate_values, step: intermediate_value}
            ),
            (("intermediate_values", step),),
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, _CachedStorage.set_trial_user_attr, key, value):
            super().set_trial_user_attr(trial_id, key, value)
        self._update(
            trial_id,
            lambda t: setattr(t, "user_attrs", {**t.user_attrs, key: value}),
            (("user_attrs", key),),
        )

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, _CachedStorage.set_trial_system_attr, key, value):
            super().set_trial_system_attr(trial_id, key, value)
        self._update(
            trial_id,
            lambda t: setattr(t, "system_attrs", {**t.system_attrs, key: value}),
            (("system_attrs", key),),
        )

    # ---- helpers ---------------------------------------------------------------------------

    def _is_deferring(self) -> bool:
        return bool(getattr(self._local, "deferring", False))

    def _is_owned(self, trial_id: int) -> bool:
        with self._lock:
            return self._owned_trial(trial_id) is not None

    def _owned_trial(self, trial_id: int) -> FrozenTrial | None:
        where = self._trial_id_to_study_id_and_number.get(trial_id)
        if where is None or where[0] not in self._owned:
            return None
        return self._studies[where[0]].trials.get(where[1])

    def _update(
        self,
        trial_id: int,
        apply: Callable[[FrozenTrial], object],
        changes: Sequence[tuple[str, object]] = (),
    ) -> None:
        """Replace an owned study's cached trial with an updated copy (copy-on-write).

        ``changes`` names what ``apply`` changes: (field, key in the field's dict), or
        (field, None) for the whole field; while this thread holds its writes, their values
        before are kept to undo them."""
        hold: Hold | None = getattr(self._local, "hold", None)
        with self._lock:
            old = self._owned_trial(trial_id)
            if old is None:
                return
            if hold is not None and self._is_deferring():
                for name, key in changes:
                    before = getattr(old, name)
                    if key is not None:
                        before = before.get(key, _MISSING)
                    hold.undo.append((trial_id, name, key, before))
            new = copy.copy(old)
            apply(new)
            study_id, number = self._trial_id_to_study_id_and_number[trial_id]
            self._studies[study_id].trials[number] = new

    def _undo(self, hold: Hold) -> None:
        """Put back in the cache what held writes changed, latest first."""
        for trial_id, name, key, before in reversed(hold.undo):
            self._update(trial_id, functools.partial(_restore, name=name, key=key, before=before))
        if hold.items:
            log.info("dropped %d held store writes (not released)", len(hold.items))
        hold.items, hold.undo = [], []


def _restore(t: FrozenTrial, name: str, key: object, before: object) -> None:
    """Put back a field of a trial copy, or one key of a dict field (absent before: removed)."""
    if key is None:
        setattr(t, name, before)
        return
    now = dict(getattr(t, name))
    if before is _MISSING:
        now.pop(key, None)
    else:
        now[key] = before
    setattr(t, name, now)


_STATE_FIELDS: tuple[tuple[str, object], ...] = (
    ("state", None),
    ("values", None),
    ("datetime_start", None),
    ("datetime_complete", None),
)

_TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
)


def _is_transient(err: BaseException) -> bool:
    """Whether a failed write may succeed later as it is: the database is away, locked or busy
    (Optuna wraps SQLAlchemy's error in StorageInternalError), rather than refusing it."""
    if not isinstance(err, optuna.exceptions.StorageInternalError):
        return False
    return err.__cause__ is None or isinstance(err.__cause__, _TRANSIENT)


def _why(err: BaseException) -> str:
    """An error in one line: the driver's own error where SQLAlchemy wraps one."""
    cause: BaseException = err
    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        cause = err.__cause__
    orig = getattr(cause, "orig", None)
    if isinstance(orig, BaseException):
        cause = orig
    text = " ".join(f"{type(cause).__name__}: {cause}".split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _describe(write: Callable[..., Any] | None, args: tuple[Any, ...]) -> str:
    """What a queued write writes, in words."""
    if write is _CachedStorage.set_trial_intermediate_value:
        return f"the value of step {args[1]}"
    if write is _CachedStorage.set_trial_user_attr:
        return f"user attribute {args[1]!r}"
    if write is _CachedStorage.set_trial_system_attr:
        return f"system attribute {args[1]!r}"
    if write is _CachedStorage.set_trial_state_values:
        return f"the state {args[1].name}"
    if write is OwnedStudyStorage._record_failure:
        return "the record of its failure"
    return "a callback" if write is None else getattr(write, "__name__", "a write")


def _detached(trial: FrozenTrial) -> FrozenTrial:
    """A copy whose dicts are its own: ``optuna.Trial`` keeps the trial it is given and adds
    params, attributes and intermediate values to those dicts in place."""
    out = copy.copy(trial)
    out.params = dict(trial.params)
    out.distributions = dict(trial.distributions)
    out.user_attrs = dict(trial.user_attrs)
    out.system_attrs = dict(trial.system_attrs)
    out.intermediate_values = dict(trial.intermediate_values)
    return out
