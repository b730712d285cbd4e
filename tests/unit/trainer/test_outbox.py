"""The trainer's outbox against a real redis-server that stops and starts: reports leave in
the order they were put, epoch reports are bounded (oldest dropped first), results are never
dropped, and a flush sends what waits once Redis is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer

from molhpo.v1 import common_pb2
from storage import reports
from storage.keys import RedisKeys
from storage.redis_conn import connect
from trainer.outbox import Outbox

KEYS = RedisKeys("outbox")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (stopped and started again)."""
    s = RedisServer(tmp_path / "redis")
    s.start()
    yield s
    s.stop()


def _outbox(server: RedisServer, **kw: int) -> tuple[Outbox, list[int]]:
    client = connect(server.url, socket_timeout=1.0)
    sizes: list[int] = []
    box = Outbox(lambda rep: reports.publish(client, KEYS, rep), on_change=sizes.append, **kw)
    return box, sizes


def _epoch(trial: int, step: int) -> common_pb2.TrialReport:
    return common_pb2.TrialReport(
        trial_id=trial, trial_number=trial, attempt=1, epoch=common_pb2.EpochReport(step=step)
    )


def _result(trial: int) -> common_pb2.TrialReport:
    return common_pb2.TrialReport(
        trial_id=trial,
        trial_number=trial,
        attempt=1,
        result=common_pb2.TrialResult(state=common_pb2.TRIAL_STATE_COMPLETE),
    )


def _label(rep: common_pb2.TrialReport) -> str:
    if rep.WhichOneof("body") == "epoch":
        return f"t{rep.trial_id}e{rep.epoch.step}"
    return f"t{rep.trial_id}result"


def _stream(server: RedisServer) -> list[str]:
    """What Redis received, in stream order."""
    out = []
    for _id, fields in server.stream(KEYS.reports):
        rep = common_pb2.TrialReport()
        rep.ParseFromString(fields[b"r"])
        out.append(_label(rep))
    return out


def test_reports_leave_in_the_order_put_across_an_outage(server: RedisServer) -> None:
    box, sizes = _outbox(server)
    server.stop()
    for rep in (_epoch(1, 1), _epoch(1, 2), _result(1), _epoch(2, 1)):
        assert box.put(rep) is False  # buffered
    assert box.pending() == 4
    server.start()
    # Redis is back: a new report goes behind older ones still waiting, never ahead.
    box.put(_epoch(2, 2))
    assert box.flush(10.0)
    assert _stream(server) == ["t1e1", "t1e2", "t1result", "t2e1", "t2e2"]
    assert box.put(_epoch(2, 3)) is True  # nothing waits: sent at once
    assert _stream(server)[-1] == "t2e3"
    assert sizes[:4] == [1, 2, 3, 4] and sizes[-1] == 0


def test_epoch_reports_are_bounded_and_results_never_dropped(server: RedisServer) -> None:
    box, _sizes = _outbox(server, max_epochs=3)
    server.stop()
    box.put(_epoch(1, 1))
    box.put(_epoch(1, 2))
    box.put(_result(1))
    for step in (1, 2, 3, 4):
        box.put(_epoch(2, step))
    for trial in (3, 4, 5, 6, 7):  # more results than the epoch bound: every one is kept
        box.put(_result(trial))
    assert box.dropped == 3  # the three oldest epoch reports
    assert box.pending() == 1 + 3 + 5
    server.start()
    assert box.flush(10.0)
    assert _stream(server) == [
        "t1result",
        "t2e2",
        "t2e3",
        "t2e4",
        "t3result",
        "t4result",
        "t5result",
        "t6result",
        "t7result",
    ]


def test_waiting_reports_go_out_by_themselves_once_redis_is_back(server: RedisServer) -> None:
    box, _sizes = _outbox(server)
    server.stop()
    box.put(_epoch(1, 1))
    box.put(_result(1))
    time.sleep(0.5)  # the background retries fail meanwhile
    assert box.pending() == 2
    server.start()
    assert box.wait_empty(15.0)
    assert _stream(server) == ["t1e1", "t1result"]


def test_close_tries_for_its_time_then_hands_back_what_it_could_not_send(
    server: RedisServer,
) -> None:
    box, _sizes = _outbox(server)
    server.stop()
    box.put(_epoch(1, 1))
    box.put(_result(1))
    t0 = time.monotonic()
    left = box.close(1.0)
    assert time.monotonic() - t0 < 5.0
    assert [_label(r) for r in left] == ["t1e1", "t1result"]
    # Closed: it tries no more, even once Redis is back.
    server.start()
    time.sleep(0.5)
    assert _stream(server) == []


def test_close_sends_what_waits_when_redis_comes_back_within_its_time(
    server: RedisServer,
) -> None:
    box, _sizes = _outbox(server)
    server.stop()
    box.put(_epoch(1, 1))
    box.put(_result(1))
    threading.Timer(1.0, server.start).start()
    left = box.close(15.0)
    assert left == []
    assert _stream(server) == ["t1e1", "t1result"]


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_epochs"):
        Outbox(lambda rep: None, max_epochs=0)
