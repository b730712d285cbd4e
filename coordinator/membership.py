"""The trainer pool: who is there, how many slots each has free, who went silent.

Trainers register and send heartbeats; a trainer silent for longer than the heartbeat timeout
is forgotten, and the trials the coordinator had given it are handed back to their studies.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

FILE_PREFIX = "file:"
"""Work keys of user data files start with this and go on with the format: "file:csv"."""


def work_key(dataset_name: str, path: str = "", file_format: str = "") -> str:
    """What a trainer must be able to load for a study's data: a built-in data set's name, or
    "file:<format>" for a user file (the format given, else the file's suffix)."""
    if not path:
        return dataset_name
    return FILE_PREFIX + (file_format or PurePath(path).suffix.lower().lstrip("."))


@dataclass
class TrainerRecord:
    """What the coordinator knows about one trainer."""

    trainer_id: str
    address: str
    slots: int
    device: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    last_seen: float
    # Trial ids given to it (negative ids: slots reserved for a trial being asked).
    assigned: set[int] = field(default_factory=set)
    # Formats of user data files it reads ("csv", "sdf").
    file_formats: tuple[str, ...] = ()

    @property
    def free_slots(self) -> int:
        """Slots not given to any trial."""
        return max(self.slots - len(self.assigned), 0)


@dataclass(frozen=True)
class Reservation:
    """A slot held on one trainer while its trial is sampled and dispatched."""

    trainer_id: str
    address: str
    token: int


class WaitReason(enum.Enum):
    """Why a study that wants a slot got none (mirrors molhpo.v1.WaitReason)."""

    NONE = 1
    NO_TRAINERS = 2
    NO_CAPABLE_TRAINER = 3
    SLOTS_BUSY = 4
    FAIR_SHARE = 5


@dataclass(frozen=True)
class Waiting:
    """No slot for a study now: why, in a reason and in words."""

    reason: WaitReason
    message: str


# A study that found no free slot counts as waiting for this long.
_WAITING_MEMORY_S = 2.0


def can_run(r: TrainerRecord, model: str, work: str) -> bool:
    """Whether trainer ``r`` runs ``model`` on ``work`` (a built-in data set's name or a user
    file's "file:<format>"). Empty lists mean "anything"; a trainer that lists built-in data
    sets but no file formats reads no user files."""
    if r.models and model not in r.models:
        return False
    if work.startswith(FILE_PREFIX):
        if r.file_formats:
            return work.removeprefix(FILE_PREFIX) in r.file_formats
        return not r.datasets
    return not r.datasets or work in r.datasets


def describe_work(model: str, work: str) -> str:
    """``model`` on ``work`` in words: "gin on freesolv", "mlp on a csv file"."""
    if work.startswith(FILE_PREFIX):
        return f"{model} on a {work.removeprefix(FILE_PREFIX) or 'user'} file"
    return f"{model} on {work}"


def explain_no_slot(
    records: Iterable[TrainerRecord], model: str, work: str, rested: frozenset[str]
) -> Waiting:
    """Why no trainer of ``records`` has a slot for ``model`` on ``work`` (a pure function of
    the pool's state): none registered, none able to run it (saying what they can run), the
    able ones resting, or every slot of the able ones busy."""
    records = list(records)
    what = describe_work(model, work)
    if not records:
        return Waiting(
            WaitReason.NO_TRAINERS,
            f"no trainer is registered to run {what}; start one "
            "(`molhpo trainer --coordinator HOST:PORT`)",
        )
    able = [r for r in records if can_run(r, model, work)]
    if not able:
        offers = "; ".join(
            f"{r.trainer_id}: models {', '.join(r.models) or 'any'}, data "
            f"{', '.join([*r.datasets, *(f'{f} files' for f in r.file_formats)]) or 'any'}"
            for r in sorted(records, key=lambda r: r.trainer_id)[:4]
        )
        return Waiting(
            WaitReason.NO_CAPABLE_TRAINER,
            f"none of the {len(records)} registered trainers can run {what} ({offers}); "
            "start a trainer that can, or change the study's model or data",
        )
    awake = [r for r in able if r.trainer_id not in rested]
    if not awake:
        return Waiting(
            WaitReason.NO_CAPABLE_TRAINER,
            f"the {len(able)} trainers that can run {what} are resting after losing trials in "
            "a row; see their logs",
        )
    slots = sum(r.slots for r in awake)
    return Waiting(
        WaitReason.SLOTS_BUSY,
        f"every slot is busy: {slots} slots on {len(awake)} trainers that can run {what}",
    )


def is_expired(last_seen: float, now: float, timeout_s: float) -> bool:
    """Whether a trainer last heard from at ``last_seen`` is gone by ``now``."""
    return now - last_seen > timeout_s


def pick_trainer(
    records: Iterable[TrainerRecord], model: str, dataset: str, avoid: frozenset[str] = frozenset()
) -> TrainerRecord | None:
    """The trainer with the most free slots that can run the model on the data set (a built-in
    name, or "file:<format>" for a user file: see :func:`work_key`).

    Ties go to the trainer with fewer trials, then the smaller id, so load spreads evenly.
    """
    best: TrainerRecord | None = None
    for r in records:
        if r.free_slots <= 0 or r.trainer_id in avoid:
            continue
        if not can_run(r, model, dataset):
            continue
        if best is None or (r.free_slots, -len(r.assigned), best.trainer_id) > (
            best.free_slots,
            -len(best.assigned),
            r.trainer_id,
        ):
            best = r
    return best


class TrainerPool:
    """Registered trainers and their slots; thread-safe."""

    def __init__(
        self,
        heartbeat_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        lease_s: float = 15.0,
    ):
        self._timeout = heartbeat_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._trainers: dict[str, TrainerRecord] = {}
        self._tokens = itertools.count(1)
        self.changed = threading.Condition(self._lock)
        # Fair share between studies: slots each study holds, which study holds each slot, and
        # studies that asked for a slot recently and got none.
        self._held: dict[str, int] = {}
        # Leases: a dispatched trial's lease runs until this time unless its trainer's
        # heartbeat lists it again; trainers that lose trials repeatedly are rested.
        self.lease_s = lease_s
        self._lease_until: dict[int, tuple[str, float]] = {}
        self._losses: dict[str, int] = {}
        self._rested_until: dict[str, float] = {}
        # After a coordinator restart: trials whose trainer is not known yet (trial -> study,
        # deadline), and those a trainer's heartbeat has claimed since.
        self._orphans: dict[int, tuple[str, float]] = {}
        self._claimed: list[tuple[str, int]] = []
        self._slot_study: dict[int, str] = {}
        # Studies that asked for a slot that trainers able to run them had busy: when, and
        # the (model, work) they asked for, so fair share holds back only what they could use.
        self._waiting: dict[str, tuple[float, str, str]] = {}

    def register(self, record: TrainerRecord) -> None:
        """Add a trainer, or refresh one that registers again (keeping its assignments)."""
        with self._lock:
            old = self._trainers.get(record.trainer_id)
            if old is not None:
                record.assigned = old.assigned
            record.last_seen = self._clock()
            self._trainers[record.trainer_id] = record
            self.changed.notify_all()

    def heartbeat(self, trainer_id: str, running: Iterable[int] = ()) -> bool:
        """Note a trainer is alive and renew the leases of the trials it runs; False when it
        is unknown (it must register again)."""
        with self._lock:
            rec = self._trainers.get(trainer_id)
            if rec is None:
                return False
            now = self._clock()
            rec.last_seen = now
            for trial_id in running:
                orphan = self._orphans.pop(trial_id, None)
                if orphan is not None:
                    # A trial a previous coordinator gave this trainer: take it back on.
                    rec.assigned.add(trial_id)
                    self._slot_study[trial_id] = orphan[0]
                    self._held[orphan[0]] = self._held.get(orphan[0], 0) + 1
                    self._lease_until[trial_id] = (trainer_id, now + self.lease_s)
                    self._claimed.append((trainer_id, trial_id))
                    continue
                held = self._lease_until.get(trial_id)
                if held is not None and held[0] == trainer_id:
                    self._lease_until[trial_id] = (trainer_id, now + self.lease_s)
            return True

    def expect(self, trial_id: int, study: str) -> None:
        """A running trial of unknown trainer (after a restart): wait one lease for a
        trainer's heartbeat to claim it."""
        with self._lock:
            self._orphans[trial_id] = (study, self._clock() + self.lease_s)

    def take_claimed(self) -> list[tuple[str, int]]:
        """(trainer, trial) pairs claimed by heartbeats since the last call."""
        with self._lock:
            out, self._claimed = self._claimed, []
            return out

    def take_unclaimed(self) -> list[int]:
        """Expected trials no trainer claimed within a lease: they must run again."""
        now = self._clock()
        with self._lock:
            gone = [t for t, (_s, deadline) in self._orphans.items() if deadline < now]
            for t in gone:
                del self._orphans[t]
            return gone

    def expired_leases(self) -> list[tuple[str, int]]:
        """(trainer, trial) pairs whose lease ran out; each is reported once."""
        now = self._clock()
        with self._lock:
            gone = [(t, trial) for trial, (t, until) in self._lease_until.items() if until < now]
            for _trainer, trial_id in gone:
                del self._lease_until[trial_id]
            return gone

    def note_loss(self, trainer_id: str, limit: int = 3, rest_s: float = 300.0) -> bool:
        """Count a trial lost on a trainer; after ``limit`` in a row it gets no work for
        ``rest_s``. Returns whether it is now rested."""
        with self._lock:
            n = self._losses.get(trainer_id, 0) + 1
            self._losses[trainer_id] = n
            if n >= limit:
                self._rested_until[trainer_id] = self._clock() + rest_s
                self._losses[trainer_id] = 0
                return True
            return False

    def note_success(self, trainer_id: str) -> None:
        """A trial ended normally on this trainer: its losses in a row start again."""
        with self._lock:
            self._losses.pop(trainer_id, None)

    def reserve(
        self,
        model: str,
        dataset: str,
        avoid: frozenset[str] = frozenset(),
        study: str = "",
        demand: int = 1,
    ) -> Reservation | None:
        """Hold a free slot on the best trainer for this work, or None when none is free.

        Slots are shared fairly between studies: while another study waits for a slot it could
        use and holds fewer than ``study`` does, ``study`` gets none (max-min fairness).
        """
        got = self.reserve_or_wait(model, dataset, avoid, study, demand)
        return got if isinstance(got, Reservation) else None

    def reserve_or_wait(
        self,
        model: str,
        dataset: str,
        avoid: frozenset[str] = frozenset(),
        study: str = "",
        demand: int = 1,
    ) -> Reservation | Waiting:
        """As :meth:`reserve`, but saying why when there is no slot (:class:`Waiting`).

        ``demand`` is how many slots the study wants now, this one included: a study that gets
        a slot and wants more stays listed as asking, so slots freed while it dispatches are
        not taken by a study that holds more.

        Only a study that waits for busy slots of trainers able to run it counts for fair
        share; one that no trainer can run holds back nobody.
        """
        with self._lock:
            now = self._clock()
            self._waiting = {
                s: w for s, w in self._waiting.items() if now - w[0] < _WAITING_MEMORY_S
            }
            mine = self._held.get(study, 0)
            rested = frozenset(t for t, until in self._rested_until.items() if until > now)
            rec = pick_trainer(self._trainers.values(), model, dataset, avoid | rested)
            if rec is None:
                why = explain_no_slot(self._trainers.values(), model, dataset, rested)
                if study and why.reason is WaitReason.SLOTS_BUSY:
                    self._waiting[study] = (now, model, dataset)
                return why
            poorer = sorted(
                s
                for s, (_t, m, d) in self._waiting.items()
                if s != study and self._held.get(s, 0) < mine and can_run(rec, m, d)
            )
            if study and poorer:
                return Waiting(
                    WaitReason.FAIR_SHARE,
                    f"holds {mine} slots; free slots go first to studies holding fewer "
                    f"({', '.join(poorer[:3])})",
                )
            if demand > 1:
                self._waiting[study] = (now, model, dataset)
            else:
                self._waiting.pop(study, None)
            token = -next(self._tokens)
            rec.assigned.add(token)
            self._held[study] = mine + 1
            self._slot_study[token] = study
            return Reservation(rec.trainer_id, rec.address, token)

    def confirm(self, res: Reservation, trial_id: int) -> None:
        """The reserved slot now runs ``trial_id``."""
        with self._lock:
            rec = self._trainers.get(res.trainer_id)
            study = self._slot_study.pop(res.token, None)
            if study is not None:
                self._slot_study[trial_id] = study
            if rec is not None:
                rec.assigned.discard(res.token)
                rec.assigned.add(trial_id)
                self._lease_until[trial_id] = (res.trainer_id, self._clock() + self.lease_s)

    def release(self, trainer_id: str, slot: int) -> None:
        """Free a slot (a trial id, or a reservation token)."""
        with self._lock:
            self._forget_slot(slot)
            held = self._lease_until.get(slot)
            if held is not None and held[0] == trainer_id:
                del self._lease_until[slot]
            rec = self._trainers.get(trainer_id)
            if rec is not None:
                rec.assigned.discard(slot)
                self.changed.notify_all()

    def held(self, study: str) -> int:
        """Slots a study holds now."""
        with self._lock:
            return self._held.get(study, 0)

    def _forget_slot(self, slot: int) -> None:
        study = self._slot_study.pop(slot, None)
        if study is not None:
            left = self._held.get(study, 0) - 1
            if left > 0:
                self._held[study] = left
            else:
                self._held.pop(study, None)

    def expire(self) -> list[TrainerRecord]:
        """Forget trainers whose heartbeats stopped; returns them with their assignments."""
        now = self._clock()
        with self._lock:
            gone = [
                r for r in self._trainers.values() if is_expired(r.last_seen, now, self._timeout)
            ]
            for r in gone:
                del self._trainers[r.trainer_id]
                for slot in r.assigned:
                    self._forget_slot(slot)
                    self._lease_until.pop(slot, None)
            if gone:
                self.changed.notify_all()
            return gone

    def snapshot(self) -> list[TrainerRecord]:
        """A copy of every record."""
        with self._lock:
            return [
                TrainerRecord(
                    r.trainer_id,
                    r.address,
                    r.slots,
                    r.device,
                    r.models,
                    r.datasets,
                    r.last_seen,
                    set(r.assigned),
                    r.file_formats,
                )
                for r in self._trainers.values()
            ]

    def wait_for_change(self, timeout_s: float) -> None:
        """Block until a trainer joins or a slot is freed, at most ``timeout_s``."""
        with self._lock:
            self.changed.wait(timeout_s)
