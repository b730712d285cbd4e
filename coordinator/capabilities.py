"""What studies can use here: the model families, built-in data sets and data file formats the
registered trainers offer, and the samplers and pruners this coordinator can build.

The offer is a pure function of the trainer pool's records; `molhpo list` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.membership import TrainerRecord
from coordinator.optimizer._options import describe
from coordinator.optimizer.pruners import PRUNERS
from coordinator.optimizer.samplers import SAMPLERS
from molhpo.contract import catalogue
from molhpo.datasets.user import USER_FORMATS


@dataclass(frozen=True)
class ComponentDescription:
    """A sampler or pruner: its name, one line about it, and {option: "type = default"}."""

    name: str
    summary: str
    options: dict[str, str]


@dataclass(frozen=True)
class Offer:
    """What the registered trainers offer together (each sorted)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    file_formats: tuple[str, ...]


@dataclass(frozen=True)
class Capabilities:
    """What studies can use: the trainers (sorted by id), their offer, this coordinator's
    samplers and pruners."""

    trainers: tuple[TrainerRecord, ...]
    offer: Offer
    samplers: tuple[ComponentDescription, ...]
    pruners: tuple[ComponentDescription, ...]


def trainers_offer(records: Iterable[TrainerRecord]) -> Offer:
    """The union of what ``records`` offer. A trainer that names no model families (or no data
    sets) is given any (coordinator.membership.can_run), so it counts as offering the whole
    catalogue; one that names neither data sets nor file formats reads every user format."""
    models: set[str] = set()
    datasets: set[str] = set()
    formats: set[str] = set()
    for r in records:
        models |= set(r.models or catalogue.MODELS)
        datasets |= set(r.datasets or catalogue.DATASETS)
        formats |= set(r.file_formats or (() if r.datasets else USER_FORMATS))
    return Offer(tuple(sorted(models)), tuple(sorted(datasets)), tuple(sorted(formats)))


def capabilities(records: Iterable[TrainerRecord]) -> Capabilities:
    """What studies can use, given the trainer pool's records."""
    trainers = tuple(sorted(records, key=lambda r: r.trainer_id))
    return Capabilities(
        trainers=trainers,
        offer=trainers_offer(trainers),
        samplers=tuple(ComponentDescription(*row) for row in describe(SAMPLERS)),
        pruners=tuple(ComponentDescription(*row) for row in describe(PRUNERS)),
    )
