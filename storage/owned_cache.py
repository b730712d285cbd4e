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
"""

from __future__ import annotations

import collections
import contextlib
import copy
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
from optuna import distributions
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


class OwnedStudyStorage(_CachedStorage):
    """``_CachedStorage`` that keeps unfinished trials of owned studies in memory too."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._owned: set[int] = set()
        self._local = threading.local()
        self._cv = threading.Condition()
        self._queue: collections.deque[tuple[Callable[..., Any] | None, tuple[Any, ...]]] = (
            collections.deque()
        )
        self._busy = False
        self._closed = False
        self._writer: threading.Thread | None = None

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within: this thread's writes to owned trials go through the writer thread."""
        self._local.deferring = True
        try:
            yield
        finally:
            self._local.deferring = False

    def after_writes(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the writer thread once every write queued before it is stored."""
        self._enqueue(None, (callback,))

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

    def _enqueue(self, write: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
        with self._cv:
            self._queue.append((write, args))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="store-writer", daemon=True
                )
                self._writer.start()
            self._cv.notify_all()

    def _write_loop(self) -> None:
        backoff = 0.1
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                write, args = self._queue[0]
                self._busy = True
            try:
                if write is None:
                    args[0]()
                else:
                    write(self, *args)
            except optuna.exceptions.StorageInternalError as err:
                # The database is away: keep the write and try again (nothing was acknowledged).
                log.warning("store write failed (%s); retrying in %.1fs", err, backoff)
                with self._cv:
                    self._busy = False
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except UpdateFinishedTrialError as err:
                # The trial ended meanwhile by another path (e.g. its lease ran out).
                log.info("dropped a queued write: %s", err)
            except Exception:  # one bad write must not stop the writer; logged
                log.exception("a queued store write failed")
            backoff = 0.1
            with self._cv:
                self._queue.popleft()
                self._busy = False
                self._cv.notify_all()

    def _defer(self, trial_id: int, write: Callable[..., Any], *args: Any) -> bool:
        """Queue a write of an owned trial when this thread defers; else make other threads'
        queued writes land first. False: the caller writes it now."""
        if not self._is_owned(trial_id):
            return False
        if self._is_deferring():
            self._enqueue(write, (trial_id, *args))
            return True
        self.drain()
        return False

    def own(self, study_id: int) -> None:
        """From now on this process is the study's only writer: read it once, fully."""
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
            self._enqueue(_CachedStorage.set_trial_state_values, (trial_id, state, values))
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

            self._update(trial_id, apply)
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
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, _CachedStorage.set_trial_user_attr, key, value):
            super().set_trial_user_attr(trial_id, key, value)
        self._update(trial_id, lambda t: setattr(t, "user_attrs", {**t.user_attrs, key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._defer(trial_id, _CachedStorage.set_trial_system_attr, key, value):
            super().set_trial_system_attr(trial_id, key, value)
        self._update(trial_id, lambda t: setattr(t, "system_attrs", {**t.system_attrs, key: value}))

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

    def _update(self, trial_id: int, apply: Callable[[FrozenTrial], object]) -> None:
        """Replace an owned study's cached trial with an updated copy (copy-on-write)."""
        with self._lock:
            old = self._owned_trial(trial_id)
            if old is None:
                return
            new = copy.copy(old)
            apply(new)
            study_id, number = self._trial_id_to_study_id_and_number[trial_id]
            self._studies[study_id].trials[number] = new


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
