"""What the registered trainers offer together (coordinator.capabilities.trainers_offer), with
can_run's rule that a trainer naming none is given any."""

from __future__ import annotations

from coordinator.capabilities import Offer, trainers_offer
from coordinator.membership import TrainerRecord, can_run, work_key
from molhpo.contract import catalogue
from molhpo.datasets.user import USER_FORMATS


def record(
    trainer_id: str,
    models: tuple[str, ...] = (),
    datasets: tuple[str, ...] = (),
    file_formats: tuple[str, ...] = (),
) -> TrainerRecord:
    return TrainerRecord(
        trainer_id, "127.0.0.1:1", 1, "cpu", models, datasets, 0.0, file_formats=file_formats
    )


def test_no_trainer_offers_nothing() -> None:
    assert trainers_offer([]) == Offer((), (), ())


def test_the_offer_is_the_sorted_union() -> None:
    offer = trainers_offer(
        [
            record("a", ("mlp", "gin"), ("freesolv",), ("sdf",)),
            record("b", ("gin", "cnn"), ("solubility",), ("csv",)),
        ]
    )
    assert offer == Offer(("cnn", "gin", "mlp"), ("freesolv", "solubility"), ("csv", "sdf"))


def test_a_trainer_naming_nothing_offers_what_can_run_gives_it() -> None:
    anything = record("any")
    offer = trainers_offer([anything])
    assert offer == Offer(
        tuple(sorted(catalogue.MODELS)), tuple(sorted(catalogue.DATASETS)), tuple(USER_FORMATS)
    )
    assert all(can_run(anything, m, d) for m in offer.models for d in offer.datasets)
    assert all(can_run(anything, "mlp", work_key("", f"x.{f}")) for f in offer.file_formats)


def test_a_trainer_naming_data_sets_but_no_formats_reads_no_files() -> None:
    builtin_only = record("b", ("mlp",), ("freesolv",))
    assert trainers_offer([builtin_only]).file_formats == ()
    assert not can_run(builtin_only, "mlp", work_key("", "x.csv"))
