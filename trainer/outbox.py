"""Reports that could not reach Redis wait here and are sent again, in order, with backoff.

Trainers keep training while Redis is away. Epoch reports wait in a bounded buffer (the
oldest epoch reports are dropped first when it is full: a later epoch says more); final
results are never dropped. A background thread retries until Redis takes them, so results
reach the coordinator once Redis is back. On shutdown ``close()`` sends what waits, trying
often, within the time it is given, and returns what it could not send.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import redis

from molhpo.v1 import common_pb2

log = logging.getLogger(__name__)

MAX_BUFFERED_EPOCHS = 10_000
# Backoff between retries while Redis is away; shorter while a flush waits for it.
_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 5.0
_FLUSH_DELAY_S = 0.2


def _is_epoch(report: common_pb2.TrialReport) -> bool:
    return report.WhichOneof("body") == "epoch"


class Outbox:
    """Sends reports through ``send``; buffers and retries them while it fails."""

    def __init__(
        self,
        send: Callable[[common_pb2.TrialReport], object],
        on_change: Callable[[int], None] | None = None,
        max_epochs: int = MAX_BUFFERED_EPOCHS,
    ) -> None:
        """Args:
        send: puts one report into Redis; raises ``redis.RedisError`` when it cannot.
        on_change: told the number of waiting reports whenever it changes (a gauge).
        max_epochs: most epoch reports kept waiting (>= 1); results are never dropped.
        """
        if max_epochs < 1:
            raise ValueError(f"The value of `max_epochs` is {max_epochs}, but must be >= 1")
        self._send = send
        self._on_change = on_change or (lambda n: None)
        self._max_epochs = max_epochs
        self._queue: deque[common_pb2.TrialReport] = deque()
        self._epochs = 0  # epoch reports in the queue
        # Guards the queue; sends happen under it too, so reports leave in the order put.
        self._lock = threading.Lock()
        self._emptied = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._hurry = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        """Epoch reports dropped because the buffer was full."""

    def put(self, report: common_pb2.TrialReport) -> bool:
        """Send now when nothing waits, else queue behind what waits; True if sent now."""
        with self._lock:
            if not self._queue:
                try:
                    self._send(report)
                    return True
                except redis.RedisError as err:
                    log.warning("Redis unreachable (%s); buffering reports", err)
            self._enqueue(report)
            if not self._closed:
                self._ensure_thread()
        self._wake.set()
        return False

    def _enqueue(self, report: common_pb2.TrialReport) -> None:
        if _is_epoch(report):
            if self._epochs >= self._max_epochs:
                # The oldest epoch report goes: results, wherever they wait, never do.
                for i, r in enumerate(self._queue):
                    if _is_epoch(r):
                        del self._queue[i]
                        self._epochs -= 1
                        self.dropped += 1
                        break
            self._epochs += 1
        self._queue.append(report)
        self._on_change(len(self._queue))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._flush, name="outbox", daemon=True)
            self._thread.start()

    def pending(self) -> int:
        """Reports waiting for Redis."""
        with self._lock:
            return len(self._queue)

    def _send_head(self) -> bool:
        """Send the oldest waiting report (the lock held); False when Redis refused it."""
        head = self._queue[0]
        try:
            self._send(head)
        except redis.RedisError:
            return False
        self._queue.popleft()
        if _is_epoch(head):
            self._epochs -= 1
        self._on_change(len(self._queue))
        if not self._queue:
            self._emptied.notify_all()
        return True

    def _flush(self) -> None:
        delay = _FIRST_DELAY_S
        while True:
            with self._lock:
                if self._closed or not self._queue:
                    return
                if self._send_head():
                    delay = _FIRST_DELAY_S
                    continue
            self._wake.wait(min(delay, _FLUSH_DELAY_S) if self._hurry else delay)
            self._wake.clear()
            delay = min(delay * 2, _MAX_DELAY_S)

    def flush(self, timeout_s: float) -> bool:
        """Send what waits, retrying often, for at most ``timeout_s``; True when none waits."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if not self._queue:
                return True
            self._hurry = True
            if not self._closed:
                self._ensure_thread()
        self._wake.set()
        try:
            with self._lock:
                return self._emptied.wait_for(
                    lambda: not self._queue, max(deadline - time.monotonic(), 0.0)
                )
        finally:
            self._hurry = False

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every buffered report went out; False after ``timeout_s``."""
        with self._lock:
            return self._emptied.wait_for(lambda: not self._queue, timeout_s)

    def close(self, timeout_s: float) -> list[common_pb2.TrialReport]:
        """Send what waits (at most ``timeout_s``), then stop retrying; what could not be sent,
        oldest first (it is lost with the process: the caller says so)."""
        self.flush(timeout_s)
        with self._lock:
            self._closed = True
            left = list(self._queue)
        self._wake.set()
        return left
