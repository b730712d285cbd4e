"""The trainer pool: expiry, trainer choice and slot bookkeeping, on a fake clock."""

from __future__ import annotations

import threading
import time
from typing import TypedDict

from coordinator.membership import (
    Reservation,
    TrainerPool,
    TrainerRecord,
    Waiting,
    WaitReason,
    explain_no_slot,
    is_expired,
    pick_trainer,
    work_key,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rec(
    trainer_id: str,
    *,
    slots: int = 1,
    assigned: set[int] | None = None,
    models: tuple[str, ...] = (),
    datasets: tuple[str, ...] = (),
    file_formats: tuple[str, ...] = (),
) -> TrainerRecord:
    return TrainerRecord(
        trainer_id=trainer_id,
        address=f"{trainer_id}.local:5000",
        slots=slots,
        device="cpu",
        models=models,
        datasets=datasets,
        last_seen=0.0,
        assigned=set() if assigned is None else set(assigned),
        file_formats=file_formats,
    )


def _pool(timeout: float = 10.0) -> tuple[TrainerPool, FakeClock]:
    clock = FakeClock()
    return TrainerPool(timeout, clock=clock), clock


def _assigned(pool: TrainerPool) -> dict[str, set[int]]:
    return {r.trainer_id: r.assigned for r in pool.snapshot()}


# ---- is_expired --------------------------------------------------------------------------------


def test_is_expired_only_after_more_than_the_timeout() -> None:
    assert not is_expired(100.0, 105.0, 10.0)
    assert not is_expired(100.0, 110.0, 10.0)
    assert is_expired(100.0, 110.5, 10.0)


# ---- pick_trainer ------------------------------------------------------------------------------


def test_pick_trainer_takes_most_free_slots() -> None:
    records = [_rec("a", slots=2), _rec("b", slots=4, assigned={1}), _rec("c", slots=1)]
    picked = pick_trainer(records, "gin", "freesolv")
    assert picked is not None
    assert picked.trainer_id == "b"


def test_pick_trainer_skips_full_trainers() -> None:
    records = [_rec("a", slots=2, assigned={1, 2}), _rec("b", slots=1)]
    picked = pick_trainer(records, "gin", "freesolv")
    assert picked is not None
    assert picked.trainer_id == "b"


def test_pick_trainer_returns_none_when_every_trainer_is_full() -> None:
    records = [_rec("a", slots=1, assigned={1}), _rec("b", slots=2, assigned={2, 3})]
    assert pick_trainer(records, "gin", "freesolv") is None
    assert pick_trainer([], "gin", "freesolv") is None


def test_pick_trainer_skips_avoided_trainers() -> None:
    records = [_rec("a", slots=4), _rec("b", slots=1)]
    picked = pick_trainer(records, "gin", "freesolv", avoid=frozenset({"a"}))
    assert picked is not None
    assert picked.trainer_id == "b"
    assert pick_trainer(records, "gin", "freesolv", avoid=frozenset({"a", "b"})) is None


def test_pick_trainer_skips_trainers_without_the_model_or_dataset() -> None:
    records = [
        _rec("mlp-only", slots=8, models=("mlp",)),
        _rec("other-data", slots=8, datasets=("esol",)),
        _rec("capable", slots=1, models=("gin", "mlp"), datasets=("freesolv",)),
    ]
    picked = pick_trainer(records, "gin", "freesolv")
    assert picked is not None
    assert picked.trainer_id == "capable"


def test_pick_trainer_treats_empty_capabilities_as_anything() -> None:
    picked = pick_trainer([_rec("any", models=(), datasets=())], "gin", "freesolv")
    assert picked is not None
    assert picked.trainer_id == "any"


def test_pick_trainer_tie_on_free_slots_goes_to_fewer_trials() -> None:
    busy = _rec("a", slots=3, assigned={7})  # 2 free, 1 trial
    idle = _rec("b", slots=2)  # 2 free, 0 trials
    for records in ([busy, idle], [idle, busy]):
        picked = pick_trainer(records, "gin", "freesolv")
        assert picked is not None
        assert picked.trainer_id == "b"


def test_pick_trainer_full_tie_goes_to_smaller_id_in_any_order() -> None:
    names = ["t2", "t10", "t1", "t3"]
    for order in (names, list(reversed(names)), sorted(names)):
        picked = pick_trainer([_rec(n, slots=2) for n in order], "gin", "freesolv")
        assert picked is not None
        assert picked.trainer_id == "t1"


# ---- TrainerPool -------------------------------------------------------------------------------


def test_register_stamps_the_clock() -> None:
    pool, clock = _pool()
    clock.now = 1234.5
    pool.register(_rec("a"))
    (snap,) = pool.snapshot()
    assert snap.trainer_id == "a"
    assert snap.last_seen == 1234.5


def test_reserve_holds_a_slot_with_a_negative_token() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=2))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    assert (res.trainer_id, res.address) == ("a", "a.local:5000")
    assert res.token < 0
    assert _assigned(pool) == {"a": {res.token}}


def test_reserve_returns_none_when_all_slots_are_held() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=2))
    pool.register(_rec("b", slots=1))
    held = [pool.reserve("gin", "freesolv") for _ in range(3)]
    assert all(r is not None for r in held)
    assert pool.reserve("gin", "freesolv") is None


def test_reservations_get_distinct_tokens_and_spread_over_trainers() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=2))
    pool.register(_rec("b", slots=2))
    r1 = pool.reserve("gin", "freesolv")
    r2 = pool.reserve("gin", "freesolv")
    assert r1 is not None
    assert r2 is not None
    assert r1.token != r2.token
    assert {r1.trainer_id, r2.trainer_id} == {"a", "b"}


def test_reserve_honours_avoid_and_capabilities() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=4, models=("mlp",)))
    pool.register(_rec("b", slots=1))
    assert pool.reserve("gin", "freesolv", avoid=frozenset({"b"})) is None
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    assert res.trainer_id == "b"


def test_confirm_replaces_the_token_with_the_trial_id() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=2))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    pool.confirm(res, 41)
    assert _assigned(pool) == {"a": {41}}


def test_confirm_on_a_forgotten_trainer_does_nothing() -> None:
    pool, _ = _pool()
    pool.confirm(Reservation("ghost", "x:1", -1), 5)
    assert pool.snapshot() == []


def test_release_frees_the_slot_of_a_trial() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=1))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    pool.confirm(res, 9)
    assert pool.reserve("gin", "freesolv") is None
    pool.release("a", 9)
    assert _assigned(pool) == {"a": set()}
    assert pool.reserve("gin", "freesolv") is not None


def test_release_of_a_reservation_token_frees_the_slot() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=1))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    pool.release(res.trainer_id, res.token)
    assert _assigned(pool) == {"a": set()}


def test_release_on_unknown_trainer_is_harmless() -> None:
    pool, _ = _pool()
    pool.release("ghost", 3)
    assert pool.snapshot() == []


def test_expire_returns_silent_trainer_with_its_trials_and_forgets_it() -> None:
    pool, clock = _pool(timeout=10.0)
    pool.register(_rec("a", slots=3))
    pool.register(_rec("b", slots=1))
    for trial_id in (5, 6):
        res = pool.reserve("gin", "freesolv", avoid=frozenset({"b"}))
        assert res is not None
        pool.confirm(res, trial_id)
    clock.now += 5
    assert pool.heartbeat("b")
    clock.now += 6  # a silent for 11 s, b for 6 s
    gone = pool.expire()
    assert [(r.trainer_id, r.assigned) for r in gone] == [("a", {5, 6})]
    assert [r.trainer_id for r in pool.snapshot()] == ["b"]
    assert pool.heartbeat("a") is False


def test_expire_keeps_trainers_within_the_timeout() -> None:
    pool, clock = _pool(timeout=10.0)
    pool.register(_rec("a"))
    clock.now += 10.0
    assert pool.expire() == []
    assert [r.trainer_id for r in pool.snapshot()] == ["a"]


def test_heartbeats_keep_a_trainer_alive() -> None:
    pool, clock = _pool(timeout=10.0)
    pool.register(_rec("a"))
    for _ in range(5):
        clock.now += 8
        assert pool.heartbeat("a") is True
        assert pool.expire() == []
    (snap,) = pool.snapshot()
    assert snap.last_seen == clock.now


def test_heartbeat_of_unknown_trainer_returns_false() -> None:
    pool, _ = _pool()
    assert pool.heartbeat("nobody") is False


def test_registering_again_keeps_assignments_and_takes_new_details() -> None:
    pool, clock = _pool()
    pool.register(_rec("a", slots=2))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    pool.confirm(res, 77)
    clock.now += 3
    again = _rec("a", slots=4)
    again.address = "a.local:6000"
    pool.register(again)
    (snap,) = pool.snapshot()
    assert snap.assigned == {77}
    assert (snap.slots, snap.address, snap.last_seen) == (4, "a.local:6000", clock.now)
    assert snap.free_slots == 3


def test_snapshot_is_a_copy() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=1))
    snap = pool.snapshot()
    snap[0].assigned.add(99)
    assert _assigned(pool) == {"a": set()}
    assert pool.reserve("gin", "freesolv") is not None


def test_free_slots_never_go_negative() -> None:
    assert _rec("a", slots=1, assigned={1, 2, 3}).free_slots == 0


def test_wait_for_change_returns_after_timeout_when_nothing_happens() -> None:
    pool, _ = _pool()
    start = time.monotonic()
    pool.wait_for_change(0.1)
    assert 0.05 <= time.monotonic() - start < 2.0


def test_wait_for_change_wakes_on_release() -> None:
    pool, _ = _pool()
    pool.register(_rec("a", slots=1))
    res = pool.reserve("gin", "freesolv")
    assert res is not None
    timer = threading.Timer(0.05, pool.release, args=("a", res.token))
    start = time.monotonic()
    timer.start()
    try:
        pool.wait_for_change(10.0)
    finally:
        timer.join()
    assert time.monotonic() - start < 5.0


def test_slots_are_shared_fairly_between_studies() -> None:
    now = [0.0]
    pool = TrainerPool(heartbeat_timeout_s=10.0, clock=lambda: now[0])
    pool.register(TrainerRecord("t", "127.0.0.1:1", 2, "cpu", (), (), 0.0))
    a1 = pool.reserve("gin", "freesolv", study="a")
    a2 = pool.reserve("gin", "freesolv", study="a")
    assert a1 is not None and a2 is not None
    # Study b asks and finds nothing free: it is now waiting with 0 slots.
    assert pool.reserve("gin", "freesolv", study="b") is None
    pool.confirm(a1, 101)
    pool.release("t", 101)
    # a holds more than the waiting b, so the freed slot goes to b.
    assert pool.reserve("gin", "freesolv", study="a") is None
    b1 = pool.reserve("gin", "freesolv", study="b")
    assert b1 is not None
    assert (pool.held("a"), pool.held("b")) == (1, 1)
    # Once b stops asking, a may take free slots again.
    pool.release("t", b1.token)
    now[0] += 5.0
    assert pool.reserve("gin", "freesolv", study="a") is not None


# ---- user files, and why a study waits ---------------------------------------------------------


class _Offer(TypedDict):
    models: tuple[str, ...]
    datasets: tuple[str, ...]


_REAL: _Offer = {"models": ("gin", "mlp"), "datasets": ("freesolv", "solubility")}


def test_work_key_of_user_files_is_their_format() -> None:
    assert work_key("freesolv") == "freesolv"
    assert work_key("", "data/my.CSV") == "file:csv"
    assert work_key("", "data.v2/mols.sdf") == "file:sdf"
    assert work_key("", "data/mols.txt", "csv") == "file:csv"


def test_a_study_on_a_user_file_gets_a_trainer_that_reads_its_format() -> None:
    # A trainer as the real one registers: built-in names and the file formats it reads.
    reads = _rec("a", **_REAL, file_formats=("csv", "sdf"))
    picked = pick_trainer([reads], "mlp", work_key("", "data/my.csv"))
    assert picked is reads
    # One listing built-in sets but no formats reads no files.
    assert pick_trainer([_rec("b", **_REAL)], "mlp", "file:csv") is None
    assert pick_trainer([_rec("c", **_REAL, file_formats=("sdf",))], "mlp", "file:csv") is None


def test_explain_no_slot_names_each_reason() -> None:
    none = explain_no_slot([], "gin", "freesolv", frozenset())
    assert none.reason is WaitReason.NO_TRAINERS and "no trainer is registered" in none.message
    real = _rec("t1", slots=2, **_REAL, file_formats=("csv",))
    unable = explain_no_slot([real], "egnn", "freesolv", frozenset())
    assert unable.reason is WaitReason.NO_CAPABLE_TRAINER
    assert "egnn on freesolv" in unable.message and "t1: models gin, mlp" in unable.message
    sdf = explain_no_slot([real], "gin", "file:sdf", frozenset())
    assert sdf.reason is WaitReason.NO_CAPABLE_TRAINER and "csv files" in sdf.message
    resting = explain_no_slot([real], "gin", "freesolv", frozenset({"t1"}))
    assert resting.reason is WaitReason.NO_CAPABLE_TRAINER and "resting" in resting.message
    busy = explain_no_slot([real], "gin", "file:csv", frozenset())
    assert busy.reason is WaitReason.SLOTS_BUSY and "2 slots on 1 trainers" in busy.message


def test_reserve_or_wait_says_why_and_busy_is_told_apart_from_unable() -> None:
    pool, _clock = _pool()
    got = pool.reserve_or_wait("gin", "file:csv", study="s")
    assert isinstance(got, Waiting) and got.reason is WaitReason.NO_TRAINERS
    pool.register(_rec("t", slots=1, **_REAL, file_formats=("csv",)))
    first = pool.reserve_or_wait("gin", "file:csv", study="s")
    assert isinstance(first, Reservation)
    again = pool.reserve_or_wait("gin", "file:csv", study="s")
    assert isinstance(again, Waiting) and again.reason is WaitReason.SLOTS_BUSY
    other = pool.reserve_or_wait("cnn", "freesolv", study="x")
    assert isinstance(other, Waiting) and other.reason is WaitReason.NO_CAPABLE_TRAINER


def test_a_study_no_trainer_can_run_holds_back_no_other_study() -> None:
    now = [0.0]
    pool = TrainerPool(heartbeat_timeout_s=10.0, clock=lambda: now[0])
    pool.register(_rec("t", slots=2, **_REAL, file_formats=("csv",)))
    a1 = pool.reserve("gin", "freesolv", study="a")
    assert a1 is not None
    # b asks for a model nobody runs: it holds 0 slots and keeps asking.
    assert pool.reserve("egnn", "freesolv", study="b") is None
    assert pool.reserve("egnn", "freesolv", study="b") is None
    # a (holding 1) still gets the free slot: b could not use it.
    assert pool.reserve("gin", "freesolv", study="a") is not None


def test_fair_share_reports_its_reason() -> None:
    now = [0.0]
    pool = TrainerPool(heartbeat_timeout_s=10.0, clock=lambda: now[0])
    pool.register(_rec("t", slots=2))
    a1 = pool.reserve("gin", "freesolv", study="a")
    a2 = pool.reserve("gin", "freesolv", study="a")
    assert a1 is not None and a2 is not None
    b = pool.reserve_or_wait("gin", "freesolv", study="b")
    assert isinstance(b, Waiting) and b.reason is WaitReason.SLOTS_BUSY
    pool.release("t", a1.token)
    a = pool.reserve_or_wait("gin", "freesolv", study="a")
    assert isinstance(a, Waiting) and a.reason is WaitReason.FAIR_SHARE and "(b)" in a.message


def test_a_study_that_wants_more_slots_keeps_asking_after_it_gets_one() -> None:
    now = [0.0]
    pool = TrainerPool(heartbeat_timeout_s=10.0, clock=lambda: now[0])
    pool.register(_rec("t", slots=4))
    held = [pool.reserve("gin", "freesolv", study="long", demand=3 - i) for i in range(3)]
    short1 = pool.reserve("gin", "freesolv", study="short", demand=3)
    assert all(r is not None for r in held) and short1 is not None
    # short got a slot and wants two more; long frees one while short is still dispatching.
    first = held[0]
    assert first is not None
    pool.release("t", first.token)
    got = pool.reserve_or_wait("gin", "freesolv", study="long", demand=1)
    assert isinstance(got, Waiting) and got.reason is WaitReason.FAIR_SHARE
    assert pool.reserve("gin", "freesolv", study="short", demand=2) is not None
    # Had short said it wanted only the one slot, long would have had it back.
    pool2 = TrainerPool(heartbeat_timeout_s=10.0, clock=lambda: now[0])
    pool2.register(_rec("t", slots=4))
    held2 = [pool2.reserve("gin", "freesolv", study="long", demand=3 - i) for i in range(3)]
    assert pool2.reserve("gin", "freesolv", study="short", demand=1) is not None
    again = held2[0]
    assert again is not None
    pool2.release("t", again.token)
    assert pool2.reserve("gin", "freesolv", study="long") is not None
