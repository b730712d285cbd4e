"""The report stream: trainers append TrialReports, the coordinator reads them in a group.

Redis streams with a consumer group give at-least-once delivery: an entry stays pending until
the coordinator acknowledges it, so a coordinator that restarts re-reads what it had not
acknowledged. Consumers therefore treat a report as idempotent per (trial, step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from molhpo.v1 import common_pb2
from storage.keys import RedisKeys

# Trimming keeps the stream bounded; acknowledged reports are not needed again.
_STREAM_MAXLEN = 1_000_000
_FIELD = "r"


@dataclass(frozen=True)
class StreamEntry:
    """One report read from the stream, with the id to acknowledge it by."""

    entry_id: str
    report: common_pb2.TrialReport | None
    """None when the entry could not be decoded (it is acknowledged and counted)."""


def publish(client: redis.Redis, keys: RedisKeys, report: common_pb2.TrialReport) -> str:
    """Append a report to the stream; returns its entry id."""
    entry_id = client.xadd(
        keys.reports,
        {_FIELD: report.SerializeToString()},
        maxlen=_STREAM_MAXLEN,
        approximate=True,
    )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class ReportReader:
    """Reads the report stream as one consumer of the coordinator's group."""

    def __init__(self, client: redis.Redis, keys: RedisKeys, consumer: str) -> None:
        self._client = client
        self._keys = keys
        self._consumer = consumer
        # Entries delivered to this consumer and not acknowledged (before a restart, or in a
        # batch that could not be handled) are read first, from after this id; None: only
        # new ones (">").
        self._cursor: str | None = "0"

    def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist yet.

        Looked up first: a Redis that refuses writes (at maxmemory) still lets a coordinator
        start, read and acknowledge, which frees memory."""
        try:
            groups: Any = self._client.xinfo_groups(self._keys.reports)
        except redis.ResponseError:
            groups = []  # no stream yet
        wanted = self._keys.report_group
        for group in groups:
            name = group.get("name", b"")
            if (name.decode() if isinstance(name, bytes) else str(name)) == wanted:
                return
        try:
            self._client.xgroup_create(
                self._keys.reports, self._keys.report_group, id="0", mkstream=True
            )
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read(self, count: int = 256, block_ms: int = 100) -> list[StreamEntry]:
        """Up to ``count`` entries, waiting at most ``block_ms`` for new ones: first those
        delivered before and not acknowledged (oldest first, each once), then new ones."""
        if self._cursor is not None:
            entries = self._read(self._cursor, count, None)
            if entries:
                self._cursor = entries[-1].entry_id
                return entries
            self._cursor = None
        return self._read(">", count, block_ms)

    def rewind(self) -> None:
        """Read the unacknowledged entries again, from the oldest: a batch could not be
        handled, and its entries must be handled again before anything newer is read."""
        self._cursor = "0"

    def _read(self, start: str, count: int, block_ms: int | None) -> list[StreamEntry]:
        try:
            answer = self._client.xreadgroup(
                self._keys.report_group,
                self._consumer,
                {self._keys.reports: start},
                count=count,
                block=block_ms,
            )
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            # The stream was deleted (e.g. Redis restarted without persistence): recreate.
            self.ensure_group()
            return []
        out: list[StreamEntry] = []
        # [[stream, [(id, {field: value}), ...]], ...]
        streams: list[Any] = answer or []  # type: ignore[assignment]
        for _stream, messages in streams:
            for raw_id, fields in messages:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                out.append(StreamEntry(entry_id, _decode(fields)))
        return out

    def ack(self, entry_ids: list[str]) -> None:
        """Acknowledge entries so they are not delivered again, and drop them."""
        if not entry_ids:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.xack(self._keys.reports, self._keys.report_group, *entry_ids)
        pipe.xdel(self._keys.reports, *entry_ids)
        pipe.execute()


def _decode(fields: dict[bytes, bytes] | None) -> common_pb2.TrialReport | None:
    if not fields:
        return None
    payload = fields.get(_FIELD.encode())
    if payload is None:
        return None
    report = common_pb2.TrialReport()
    try:
        report.ParseFromString(payload)
    except Exception:  # protobuf raises DecodeError, a bare Exception subclass
        return None
    return report
