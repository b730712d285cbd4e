"""Reports that could not reach Redis wait here and are sent again, in order, with backoff.

Trainers keep training while Redis is away. Epoch reports wait in a bounded buffer (the
oldest epoch reports are dropped first when it is full: a later epoch says more); final
results are never dropped. A background thread retries until Redis takes them, so results
reach the coordinator once Redis is back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import redis

from molhpo.v1 import common_pb2

log = logging.getLogger(__name__)

MAX_BUFFERED_EPOCHS = 10_000


class Outbox:
    """Sends reports through ``send``; buffers and retries them while it fails."""

    def __init__(
        self,
        send: Callable[[common_pb2.TrialReport], object],
        on_change: Callable[[int], None] | None = None,
        max_epochs: int = MAX_BUFFERED_EPOCHS,
    ) -> None:
        self._send = send
        self._on_change = on_change or (lambda n: None)
        self._max_epochs = max_epochs
        self._queue: deque[common_pb2.TrialReport] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

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
            self._ensure_thread()
        self._wake.set()
        return False

    def _enqueue(self, report: common_pb2.TrialReport) -> None:
        epochs = sum(1 for r in self._queue if r.WhichOneof("body") == "epoch")
        if report.WhichOneof("body") == "epoch" and epochs >= self._max_epochs:
            for i, r in enumerate(self._queue):
                if r.WhichOneof("body") == "epoch":
                    del self._queue[i]
                    self.dropped += 1
                    break
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

    def _flush(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            with self._lock:
                if not self._queue:
                    return
                head = self._queue[0]
                try:
                    self._send(head)
                except redis.RedisError:
                    pass
                else:
                    self._queue.popleft()
                    self._on_change(len(self._queue))
                    delay = 0.1
                    continue
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until every buffered report went out; False after ``timeout_s``."""
        deadline = threading.Event()
        waited = 0.0
        while self.pending() and waited < timeout_s:
            deadline.wait(0.05)
            waited += 0.05
        return not self.pending()

    def close(self) -> None:
        """Stop retrying (what is left is lost with the process)."""
        self._stop.set()
