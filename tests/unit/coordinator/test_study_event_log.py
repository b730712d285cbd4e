"""A study's in-memory event log: sequence numbers, reading after a point, closing, waiting."""

from __future__ import annotations

import math
import threading
import time

from coordinator.events import EventKind, EventLog


def test_sequence_numbers_count_up_from_one() -> None:
    log = EventLog()
    events = [log.append(EventKind.TRIAL_STARTED, trial_number=i) for i in range(4)]
    assert [e.sequence for e in events] == [1, 2, 3, 4]


def test_append_records_the_fields() -> None:
    log = EventLog()
    before = time.time()
    ev = log.append(EventKind.EPOCH_REPORTED, trial_number=3, step=5, value=0.25, message="m")
    assert (ev.kind, ev.trial_number, ev.step, ev.value, ev.message) == (
        EventKind.EPOCH_REPORTED,
        3,
        5,
        0.25,
        "m",
    )
    assert before <= ev.time <= time.time()


def test_default_value_is_nan() -> None:
    ev = EventLog().append(EventKind.TRIAL_STARTED)
    assert math.isnan(ev.value)
    assert ev.trial_number == -1


def test_after_returns_only_newer_events() -> None:
    log = EventLog()
    for i in range(5):
        log.append(EventKind.TRIAL_STARTED, trial_number=i)
    events, closed = log.after(2, timeout_s=0.0)
    assert [e.sequence for e in events] == [3, 4, 5]
    assert closed is False
    events, _ = log.after(0, timeout_s=0.0)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]


def test_after_is_closed_once_the_study_finished() -> None:
    log = EventLog()
    log.append(EventKind.TRIAL_STARTED, trial_number=0)
    log.append(EventKind.TRIAL_COMPLETED, trial_number=0, value=1.0)
    _, closed = log.after(0, timeout_s=0.0)
    assert closed is False
    last = log.append(EventKind.STUDY_FINISHED, message="complete")
    events, closed = log.after(1, timeout_s=0.0)
    assert closed is True
    assert [e.sequence for e in events] == [2, 3]
    assert events[-1] == last


def test_closed_log_answers_at_once_even_with_nothing_new() -> None:
    log = EventLog()
    log.append(EventKind.STUDY_FINISHED)
    start = time.monotonic()
    events, closed = log.after(1, timeout_s=5.0)
    assert time.monotonic() - start < 1.0
    assert (events, closed) == ([], True)


def test_after_waits_at_most_the_timeout_when_nothing_is_new() -> None:
    log = EventLog()
    log.append(EventKind.TRIAL_STARTED)
    start = time.monotonic()
    events, closed = log.after(1, timeout_s=0.2)
    elapsed = time.monotonic() - start
    assert (events, closed) == ([], False)
    assert 0.15 <= elapsed < 2.0


def test_after_does_not_wait_when_something_is_already_new() -> None:
    log = EventLog()
    log.append(EventKind.TRIAL_STARTED)
    start = time.monotonic()
    events, _ = log.after(0, timeout_s=5.0)
    assert time.monotonic() - start < 1.0
    assert len(events) == 1


def test_a_waiting_reader_wakes_when_an_event_is_appended() -> None:
    log = EventLog()
    timer = threading.Timer(0.05, log.append, args=(EventKind.TRIAL_STARTED,))
    start = time.monotonic()
    timer.start()
    try:
        events, closed = log.after(0, timeout_s=10.0)
    finally:
        timer.join()
    assert time.monotonic() - start < 5.0
    assert [e.sequence for e in events] == [1]
    assert closed is False
