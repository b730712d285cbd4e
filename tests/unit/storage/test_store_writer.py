"""The store's writer thread loses nothing: a write the database cannot take now is held (and
nothing after it acknowledged) until it can; a write it refuses for good ends its trial as
FAIL with the reason before anything after it is acknowledged; held writes that are never
released leave no trace. The faults are the real database's own errors, raised by SQLite
triggers on Optuna's tables."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest

from storage.owned_cache import OwnedStudyStorage
from storage.study_store import create_storage

# SQLite errors a trigger can raise: "integer overflow" is an OperationalError (the kind a
# locked or unreachable database gives: wait for it), "string or blob too big" a DataError
# (the database refuses the write itself: give it up).
_AWAY = "SELECT abs(-9223372036854775808)"
_REFUSE = "SELECT zeroblob(2000000000)"


@dataclass
class Store:
    path: Path
    storage: OwnedStudyStorage
    study: optuna.Study
    lost: list[tuple[int, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def sql(self, statement: str) -> None:
        """Run SQL on the database file directly (another connection, as an operator would)."""
        with sqlite3.connect(self.path) as con:
            con.execute(statement)

    def stored(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """The trial as the database holds it (read through a storage of its own)."""
        return optuna.storages.RDBStorage(self.url).get_trial(trial_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "s.db"
    lost: list[tuple[int, str]] = []
    storage = OwnedStudyStorage(
        create_storage(f"sqlite:///{path}", sync=False),
        on_write_lost=lambda trial_id, reason: lost.append((trial_id, reason)),
    )
    study = optuna.create_study(storage=storage, study_name="s")
    storage.own(study._study_id)
    yield Store(path, storage, study, lost)
    storage.close(1.0)


def _trigger(name: str, trial_id: int, step: int, body: str) -> str:
    return (
        f"CREATE TRIGGER {name} BEFORE INSERT ON trial_intermediate_values "
        f"WHEN NEW.trial_id = {trial_id} AND NEW.step = {step} BEGIN {body}; END"
    )


def test_a_write_the_database_cannot_take_now_is_held_and_nothing_after_it_acknowledged(
    store: Store,
) -> None:
    trial = store.study.ask()
    store.sql(_trigger("away", trial._trial_id, 2, _AWAY))
    acked: list[str] = []
    with store.storage.deferring():
        for step in (1, 2, 3):
            trial.report(float(step), step)
        store.storage.after_writes(lambda: acked.append("ack"))
    deadline = time.monotonic() + 10
    while store.storage.stalled_s() < 1.0:
        assert time.monotonic() < deadline, "the writer never met the fault"
        time.sleep(0.05)
    # Held in order: step 3 waits behind step 2, and nothing is acknowledged.
    assert acked == []
    assert store.stored(trial._trial_id).intermediate_values == {1: 1.0}
    assert store.study.get_trials()[0].intermediate_values == {1: 1.0, 2: 2.0, 3: 3.0}

    store.sql("DROP TRIGGER away")  # the database is back
    assert store.storage.drain(20)
    assert acked == ["ack"]
    stored = store.stored(trial._trial_id)
    assert stored.intermediate_values == {1: 1.0, 2: 2.0, 3: 3.0}
    assert stored.state == optuna.trial.TrialState.RUNNING
    assert store.lost == []
    assert store.storage.stalled_s() == 0.0


def test_a_write_the_database_refuses_fails_its_trial_before_anything_is_acknowledged(
    store: Store,
) -> None:
    bad, good = store.study.ask(), store.study.ask()
    store.sql(_trigger("refuse", bad._trial_id, 2, _REFUSE))
    seen_at_ack: list[optuna.trial.FrozenTrial] = []
    with store.storage.deferring():
        bad.report(1.0, 1)
        good.report(1.0, 1)
        bad.report(2.0, 2)  # refused
        good.report(2.0, 2)
        bad.report(3.0, 3)  # depends on the lost one: dropped with it
        bad.set_user_attr("note", "after the loss")
        store.study.tell(good, 0.5)
        store.storage.after_writes(lambda: seen_at_ack.append(store.stored(bad._trial_id)))
    assert store.storage.drain(20)

    # The acknowledgement ran after the failure was stored, not after a silent drop.
    assert len(seen_at_ack) == 1
    at_ack = seen_at_ack[0]
    assert at_ack.state == optuna.trial.TrialState.FAIL
    reason = at_ack.user_attrs["failure_reason"]
    assert at_ack.user_attrs["failure_class"] == "store"
    assert "the value of step 2" in reason and "trial 0" in reason
    assert "DataError" in reason and "too big" in reason
    assert store.lost == [(bad._trial_id, reason)]

    stored_bad = store.stored(bad._trial_id)
    assert stored_bad.intermediate_values == {1: 1.0}
    assert "note" not in stored_bad.user_attrs
    # The cache holds what the database holds, so nothing decides on values never stored.
    cached_bad = store.storage.get_trial(bad._trial_id)
    assert cached_bad.state == optuna.trial.TrialState.FAIL
    assert cached_bad.intermediate_values == {1: 1.0}
    # The other trial lost nothing.
    stored_good = store.stored(good._trial_id)
    assert stored_good.state == optuna.trial.TrialState.COMPLETE
    assert stored_good.intermediate_values == {1: 1.0, 2: 2.0}


def test_a_write_that_fails_outside_the_database_fails_its_trial_too(store: Store) -> None:
    trial = store.study.ask()
    acked: list[str] = []
    with store.storage.deferring():
        trial.report(1.0, 1)
        trial.set_user_attr("raw", object())  # no JSON form: the store cannot keep it
        store.storage.after_writes(lambda: acked.append("ack"))
    assert store.storage.drain(20)
    assert acked == ["ack"]
    stored = store.stored(trial._trial_id)
    assert stored.state == optuna.trial.TrialState.FAIL
    assert "user attribute 'raw'" in stored.user_attrs["failure_reason"]
    assert "TypeError" in stored.user_attrs["failure_reason"]
    assert stored.intermediate_values == {1: 1.0}
    assert [t for t, _ in store.lost] == [trial._trial_id]


def test_held_writes_not_released_are_dropped_and_undone(store: Store) -> None:
    trial = store.study.ask()
    trial.report(0.5, 1)
    trial.set_user_attr("kept", 1)
    acked: list[str] = []
    with store.storage.deferring():
        with pytest.raises(RuntimeError), store.storage.holding():
            trial.report(2.0, 2)
            # Overwrites a stored value: the old one comes back on undo.
            store.storage.set_trial_intermediate_value(trial._trial_id, 1, 9.0)
            store.storage.set_trial_system_attr(trial._trial_id, "molhpo:decision:2", {"seq": 1})
            trial.set_user_attr("kept", 2)
            store.storage.after_writes(lambda: acked.append("held ack"))
            raise RuntimeError("publishing failed")
        with store.storage.holding() as hold:
            trial.report(3.0, 3)
            hold.release()
        store.storage.after_writes(lambda: acked.append("ack"))
    assert store.storage.drain(20)
    cached = store.storage.get_trial(trial._trial_id)
    assert cached.intermediate_values == {1: 0.5, 3: 3.0}
    assert cached.user_attrs == {"kept": 1}
    assert "molhpo:decision:2" not in cached.system_attrs
    stored = store.stored(trial._trial_id)
    assert stored.intermediate_values == cached.intermediate_values
    assert stored.user_attrs == cached.user_attrs
    assert acked == ["ack"]


def test_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_write_tries"):
        OwnedStudyStorage(
            create_storage(f"sqlite:///{tmp_path / 's.db'}", sync=False), max_write_tries=0
        )
