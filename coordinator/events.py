"""A study's event log, which WatchStudy streams from."""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass


class EventKind(enum.Enum):
    """What happened (mirrors StudyEvent.Kind)."""

    TRIAL_STARTED = 1
    EPOCH_REPORTED = 2
    TRIAL_PRUNED = 3
    TRIAL_COMPLETED = 4
    TRIAL_FAILED = 5
    STUDY_FINISHED = 6
    TRIAL_RETRIED = 7
    STUDY_WAITING = 8


@dataclass(frozen=True)
class Event:
    """One event of one study."""

    sequence: int
    kind: EventKind
    time: float
    trial_number: int = -1
    step: int = 0
    value: float = float("nan")
    message: str = ""


class EventLog:
    """Append-only, in memory; readers block until something newer than what they saw."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._closed = False

    def append(
        self,
        kind: EventKind,
        trial_number: int = -1,
        step: int = 0,
        value: float = float("nan"),
        message: str = "",
    ) -> Event:
        """Record an event; wakes every waiting reader."""
        with self._cond:
            ev = Event(len(self._events) + 1, kind, time.time(), trial_number, step, value, message)
            self._events.append(ev)
            if kind is EventKind.STUDY_FINISHED:
                self._closed = True
            self._cond.notify_all()
            return ev

    def after(self, sequence: int, timeout_s: float) -> tuple[list[Event], bool]:
        """Events newer than ``sequence`` (waiting up to ``timeout_s`` for one), and whether
        the log is closed (the study finished)."""
        with self._cond:
            if len(self._events) <= sequence and not self._closed:
                self._cond.wait(timeout_s)
            return self._events[sequence:], self._closed
