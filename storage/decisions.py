"""CONTINUE/PRUNE decisions, from the coordinator to the trainer waiting on them.

The coordinator pushes one item onto a per-(trial, step) list; the trainer blocks on that list
(BLPOP) with a timeout, so a decision is visible the moment it is written, without polling. The
decision is also kept in a per-trial hash so a repeated report gets the same answer, and a
pruned flag lets a trainer that timed out still learn, before its next epoch, that it was pruned.
"""

from __future__ import annotations

import enum
import time

import redis

from storage.keys import RedisKeys

# Decision keys outlive any sane wait; a trainer that never reads its key leaves no garbage.
_DECISION_TTL_S = 3600
# Longest single BLPOP; must stay below the Redis client's socket timeout.
_BLOCK_CHUNK_S = 2.0


class Decision(enum.Enum):
    """What a trainer does after an epoch."""

    CONTINUE = "continue"
    PRUNE = "prune"


def publish(
    client: redis.Redis, keys: RedisKeys, trial_id: int, step: int, decision: Decision
) -> None:
    """Make a decision visible to the trainer, and remember it."""
    publish_many(client, keys, [(trial_id, step, decision)])


def publish_many(
    client: redis.Redis, keys: RedisKeys, items: list[tuple[int, int, Decision]]
) -> None:
    """Publish (trial, step, decision) items in one atomic round trip."""
    if not items:
        return
    pipe = client.pipeline(transaction=True)
    for trial_id, step, decision in items:
        key = keys.decision(trial_id, step)
        pipe.delete(key)
        pipe.rpush(key, decision.value)
        pipe.expire(key, _DECISION_TTL_S)
        pipe.hset(keys.decisions(trial_id), str(step), decision.value)
        pipe.expire(keys.decisions(trial_id), _DECISION_TTL_S * 24)
        if decision is Decision.PRUNE:
            pipe.set(keys.pruned(trial_id), step, ex=_DECISION_TTL_S * 24)
    pipe.execute()


def recorded(client: redis.Redis, keys: RedisKeys, trial_id: int, step: int) -> Decision | None:
    """The decision already made for this step, if any."""
    raw = client.hget(keys.decisions(trial_id), str(step))
    if raw is None:
        return None
    return Decision(raw.decode() if isinstance(raw, bytes) else str(raw))


def wait(
    client: redis.Redis, keys: RedisKeys, trial_id: int, step: int, timeout_s: float
) -> Decision | None:
    """Block until the decision for (trial, step) arrives; None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    key = keys.decision(trial_id, step)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # Short blocks keep each call inside the client's socket timeout.
        answer = client.blpop([key], timeout=min(left, _BLOCK_CHUNK_S))
        if answer is not None:
            _key, raw = answer
            return Decision(raw.decode() if isinstance(raw, bytes) else str(raw))


def is_pruned(client: redis.Redis, keys: RedisKeys, trial_id: int) -> bool:
    """Whether the coordinator pruned the trial (whatever step it was)."""
    return bool(client.exists(keys.pruned(trial_id)))
