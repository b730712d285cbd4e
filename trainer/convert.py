"""Protos in, domain objects out (and back) for the trainer."""

from __future__ import annotations

from molhpo.contract.enums import Direction, direction_from_proto
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import MAX_INVALID_SHARE, DatasetRequest
from molhpo.v1 import common_pb2
from trainer.training.loop import EpochResult, TrainConfig, TrainResult


def config_from_spec(
    spec: common_pb2.TrialSpec, dataset_roots: tuple[str, ...] = (), device: str | None = None
) -> TrainConfig:
    """The training configuration a TrialSpec describes (user files under ``dataset_roots``),
    to run on ``device``, the trainer's resolved device (a spec never chooses one)."""
    params: dict[str, object] = {}
    for name, v in spec.params.items():
        kind = v.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument(f"params.{name}: no value is set")
        params[name] = getattr(v, kind)
    d = spec.dataset
    direction = direction_from_proto(spec.objective.direction) or Direction.MINIMIZE
    return TrainConfig(
        dataset=spec.dataset.name,
        model=spec.model,
        params=params,
        max_epochs=spec.max_epochs,
        seed=spec.seed,
        split=spec.dataset.split or "random",
        split_seed=spec.dataset.split_seed,
        valid_fraction=spec.dataset.valid_fraction or 0.1,
        test_fraction=spec.dataset.test_fraction or 0.1,
        objective_metric=spec.objective.metric or "rmse",
        objective_direction=direction,
        max_molecules=d.max_molecules,
        data=DatasetRequest(
            name=d.name,
            path=d.path,
            format=d.format,
            smiles_column=d.smiles_column or "smiles",
            target_columns=tuple(d.target_columns),
            target=d.target,
            max_invalid_share=d.max_invalid_share or MAX_INVALID_SHARE,
            subset=d.max_molecules if d.name == "qm9" and not d.path else 0,
            subset_seed=d.split_seed,
        ),
        dataset_roots=dataset_roots,
        device=device,
    )


def epoch_to_proto(ep: EpochResult) -> common_pb2.EpochReport:
    """An epoch's result as an EpochReport."""
    return common_pb2.EpochReport(
        step=ep.step,
        train_loss=ep.train_loss,
        valid=common_pb2.Metrics(values=ep.valid_metrics),
        seconds=ep.seconds,
        samples=ep.samples,
    )


def result_to_proto(
    res: TrainResult, pruned: bool, checkpoint: str = "", with_predictions: bool = False
) -> common_pb2.TrialResult:
    """A finished training run as a TrialResult (COMPLETE, or PRUNED when stopped so)."""
    out = common_pb2.TrialResult(
        state=common_pb2.TRIAL_STATE_PRUNED if pruned else common_pb2.TRIAL_STATE_COMPLETE,
        epochs_trained=res.epochs_trained,
        best_step=res.best_step,
        valid=common_pb2.Metrics(values=res.best_valid_metrics),
        test=common_pb2.Metrics(values=res.test_metrics),
        seconds=res.seconds,
        n_parameters=res.n_parameters,
        checkpoint=checkpoint,
        resumed_from_step=res.resumed_from,
    )
    if with_predictions:
        out.test_predictions.values.extend(res.test_predictions)
        out.test_targets.values.extend(res.test_targets)
    return out
