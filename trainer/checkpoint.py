"""What a trial saves and reads back: its checkpoints and its resume state.

A trial keeps two kinds of files in the artifact store (``storage.artifacts``), in its
folder ``{root}/{study}/trial-{number:05d}/``:

- **Checkpoints** (``epoch-{step:05d}.pt``, the top k by objective value, written through a
  :class:`CheckpointSink` such as ``TopKCheckpoints``): everything needed to rebuild the model
  of a good epoch and predict with it, without the training data. Format
  :data:`CHECKPOINT_FORMAT`; the keys (:func:`checkpoint_payload`):

  - ``format``, ``model`` (family), ``params`` (resolved hyperparameters), ``in_features``,
    ``edge_features``, ``state_dict`` (weights, on the CPU), ``y_mean``, ``y_std`` (the
    target scaling): the :data:`REQUIRED_KEYS` a reader needs;
  - ``metric``, ``valid_metrics``, ``dataset``, ``split`` ([kind, seed, valid_fraction,
    test_fraction]), ``data_request`` (:func:`data_request_dict`), ``max_molecules``:
    provenance;
  - what the featuriser needs to turn new SMILES into the model's inputs
    (:func:`checkpoint_inputs`): ``featurizer``, ``featurizer_version``, and
    ``descriptor_names``/``descriptor_mean``/``descriptor_std`` (RDKit descriptors),
    ``smiles_alphabet``/``smiles_max_len`` (one-hot SMILES) or ``conformer_source``
    (3D conformers);
  - ``step`` and ``value``, added by the sink.

  Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`): only
  tensors and plain containers are unpickled, so a checkpoint on a shared volume cannot run
  code in a serving process.

- **The resume state** (``resume.pt``, replaced every few epochs through a
  :class:`ResumeStore` such as ``ResumeFile``): what a trial dispatched again after its trainer
  was lost continues from, so that it ends as an uninterrupted run would. Format
  :data:`RESUME_FORMAT`; the keys (:func:`resume_state`): ``format``, ``model``, ``epoch``
  (the last epoch done), ``model_state``, ``optimizer_state``, ``schedule``, ``order_rng``
  (the batch-order generator), ``dropout`` (:func:`dropout_states`), ``best_step``,
  ``best_value``, ``best_metrics``, ``best_state`` (the best epoch's weights).

Both the training loop (which writes) and ``trainer.predict`` (which reads checkpoints) use this
module; it imports neither.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from molhpo.contract.catalogue import get_model
from molhpo.contract.errors import InvalidArgument, NotFound
from storage.artifacts import ArtifactStore, ResumeFile, TopKCheckpoints
from trainer.featurize import (
    FEATURIZER_VERSION,
    ConformerFeatures,
    DescriptorFeatures,
    Features,
    SmilesFeatures,
)
from trainer.models.mlp import SeededDropout
from trainer.seeding import build_to_load

CHECKPOINT_FORMAT = 1
"""The ``format`` of the checkpoints training writes."""

CHECKPOINT_FORMATS: frozenset[int] = frozenset({CHECKPOINT_FORMAT})
"""Values of a checkpoint's ``format`` that can be read."""

REQUIRED_KEYS: tuple[str, ...] = (
    "model",
    "params",
    "in_features",
    "edge_features",
    "state_dict",
    "y_mean",
    "y_std",
)
"""The keys without which a checkpoint's model cannot be rebuilt."""

RESUME_FORMAT = 1
"""The ``format`` of the resume states training writes and reads back."""

log = logging.getLogger(__name__)


class CheckpointSink(Protocol):
    """Where a trial's best epochs go (e.g. storage.artifacts.TopKCheckpoints)."""

    def wants(self, value: float) -> bool:
        """Whether an epoch with this objective value would be kept."""

    def save(self, step: int, value: float, payload: dict[str, Any]) -> Any:
        """Keep a checkpoint."""


class ResumeStore(Protocol):
    """Where a trial keeps the state it resumes from after its trainer was lost."""

    every: int
    """Save after every this many epochs."""

    def load(self) -> dict[str, Any] | None:
        """The last saved state, or None."""

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state."""


def trial_stores(
    artifacts: ArtifactStore,
    study: str,
    trial_number: int,
    *,
    attempt: int,
    every: int,
    keep: int,
    direction: str,
) -> tuple[TopKCheckpoints, ResumeFile]:
    """The top-k checkpoints and the resume file of one attempt of a trial in ``artifacts``.

    ``every``: save the resume state every this many epochs (0: every 5); ``keep``: how many
    checkpoints to keep (at least 1), the best in ``direction``. A first attempt (``attempt``
    at most 1) clears any resume file already there instead of resuming from it.
    """
    resume = ResumeFile(artifacts, study, trial_number, every or 5)
    if attempt <= 1:
        resume.clear()  # a first attempt never resumes someone else's state
    sink = TopKCheckpoints(artifacts, study, trial_number, max(keep, 1), direction)
    return sink, resume


# ---------------------------------------------------------------------------------------------
# Checkpoints: writing


def descriptor_statistics(
    values: np.ndarray, train_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std [d] (float64) that ``standardize(values, train_rows)`` applies.

    Shapes: values [n, d], train_rows [n_train]. Same rules as ``standardize``: non-finite
    entries are missing, a column without finite training values gets mean 0, and a column
    constant (or undefined) on the training rows gets std 1.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        train = values[train_rows]
        train = np.where(np.isfinite(train), train, np.nan)
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0.0), std, 1.0)
    return mean.astype(np.float64), std.astype(np.float64)


def checkpoint_inputs(
    featurizer: str, features: Features, train_rows: np.ndarray, table: Any = None
) -> dict[str, Any]:
    """The checkpoint keys a prediction needs besides the model: how to featurise new SMILES.

    Small by design (vectors of descriptor statistics, an alphabet), never training data.
    Tensors and plain values only, so the checkpoint loads with
    ``torch.load(weights_only=True)``. ``table`` (the training table) tells whether 3D
    geometries came from the data set rather than from RDKit.
    """
    out: dict[str, Any] = {"featurizer": featurizer, "featurizer_version": FEATURIZER_VERSION}
    if isinstance(features, DescriptorFeatures):
        mean, std = descriptor_statistics(features.values, train_rows)
        out["descriptor_names"] = list(features.names)
        out["descriptor_mean"] = torch.from_numpy(mean)
        out["descriptor_std"] = torch.from_numpy(std)
    elif isinstance(features, SmilesFeatures):
        out["smiles_alphabet"] = list(features.alphabet)
        out["smiles_max_len"] = features.max_len
    elif isinstance(features, ConformerFeatures):
        shipped = getattr(table, "conformers", None) is not None
        out["conformer_source"] = "dataset" if shipped else "etkdg"
    return out


def data_request_dict(request: Any) -> dict[str, Any]:
    """A ``DatasetRequest`` as plain values for a checkpoint (provenance of the target)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(request).items()}


def checkpoint_payload(
    *,
    model_name: str,
    params: Mapping[str, object],
    in_features: int,
    edge_features: int,
    model: nn.Module,
    y_mean: float,
    y_std: float,
    metric: str,
    valid_metrics: Mapping[str, float],
    dataset: str,
    split: list[object],
    inputs: Mapping[str, Any],
    data_request: Mapping[str, Any],
    max_molecules: int,
) -> dict[str, Any]:
    """The checkpoint of ``model`` (its weights copied to the CPU) after an epoch that measured
    ``valid_metrics``; ``inputs`` are the :func:`checkpoint_inputs` of its features."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "params": dict(params),
        "in_features": in_features,
        "edge_features": edge_features,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "y_mean": y_mean,
        "y_std": y_std,
        "metric": metric,
        "valid_metrics": dict(valid_metrics),
        "dataset": dataset,
        "split": split,
        **inputs,
        "data_request": dict(data_request),
        "max_molecules": max_molecules,
    }


# ---------------------------------------------------------------------------------------------
# Checkpoints: reading


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload at ``path`` (tensors on the CPU), loaded without running pickled code."""
    if not path.is_file():
        raise NotFound(f"checkpoint {path} does not exist; pass the path of an epoch-*.pt file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise InvalidArgument(
            f"{path} cannot be read as a molhpo checkpoint ({exc}); pass a file written by "
            "the trainer's TopKCheckpoints"
        ) from exc
    if not isinstance(payload, dict):
        raise InvalidArgument(
            f"{path} holds a {type(payload).__name__}, not a checkpoint dict; pass a file "
            "written by the trainer's TopKCheckpoints"
        )
    return payload


def check_checkpoint(payload: Mapping[str, Any], where: str) -> None:
    """InvalidArgument when ``payload`` is of a format that cannot be read or lacks one of
    the :data:`REQUIRED_KEYS`; ``where`` names it in the message."""
    fmt = payload.get("format")
    if fmt not in CHECKPOINT_FORMATS:
        raise InvalidArgument(
            f"checkpoint {where} has format {fmt!r}; this trainer reads format "
            f"{', '.join(str(f) for f in sorted(CHECKPOINT_FORMATS))}; re-train or convert it"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise InvalidArgument(
            f"checkpoint {where} lacks {', '.join(missing)}; it was not written by "
            "trainer.training.loop.train"
        )


def featurizer_of(payload: Mapping[str, Any]) -> str:
    """The checkpoint's featuriser; older checkpoints without the key take the catalogue's."""
    name = payload.get("featurizer")
    if isinstance(name, str) and name:
        return name
    return get_model(str(payload["model"])).featurizer


def build_from_checkpoint(payload: Mapping[str, Any], where: str) -> nn.Module:
    """The checkpoint's model with its weights, in eval mode on the CPU (built aside from the
    trials' seeded generators: ``trainer.seeding.build_to_load``)."""
    model = build_to_load(
        str(payload["model"]),
        dict(payload["params"]),
        int(payload["in_features"]),
        int(payload["edge_features"]),
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InvalidArgument(
            f"checkpoint {where}: its weights do not fit model '{payload['model']}' with its "
            f"hyperparameters ({exc}); the file is damaged or from another molhpo version"
        ) from exc
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The resume state


class Stateful(Protocol):
    """Something whose state a resume state carries (an optimiser, a schedule)."""

    def state_dict(self) -> dict[str, Any]:
        """The state to save."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""


class UnusableResumeState(Exception):
    """The state a trial saved does not fit it (e.g. written by another molhpo version)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed trial goes on from: the last epoch it did and its best epoch so far."""

    epoch: int
    best_step: int
    best_value: float | None
    best_metrics: dict[str, float]
    best_state: dict[str, torch.Tensor]


def resume_state(
    *,
    model_name: str,
    epoch: int,
    model: nn.Module,
    optimizer: Stateful,
    schedule: Stateful,
    order_rng: np.random.Generator,
    best_step: int,
    best_value: float | None,
    best_metrics: dict[str, float],
    best_state: Mapping[str, torch.Tensor],
) -> dict[str, Any]:
    """The resume state of a trial after ``epoch`` (tensors copied to the CPU)."""
    return {
        "format": RESUME_FORMAT,
        "model": model_name,
        "epoch": epoch,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "order_rng": order_rng.bit_generator.state,
        "dropout": dropout_states(model),
        "best_step": best_step,
        "best_value": best_value,
        "best_metrics": best_metrics,
        "best_state": {k: v.cpu() for k, v in best_state.items()},
    }


def restore_resume_state(
    saved: Mapping[str, Any] | None,
    model_name: str,
    model: nn.Module,
    optimizer: Stateful,
    schedule: Stateful,
    order_rng: np.random.Generator,
    device: torch.device,
) -> ResumePoint | None:
    """Load a :func:`resume_state` into a trial's freshly built ``model``, ``optimizer``,
    ``schedule`` and ``order_rng`` (dropout generators on ``device``) and say where it goes on.

    None (nothing loaded) when there is no state, or one of another format or model family.
    Raises :class:`UnusableResumeState` when the state does not fit (part of it may have been
    loaded by then: build everything again before starting over).
    """
    if saved is None or saved.get("format") != RESUME_FORMAT or saved.get("model") != model_name:
        return None
    try:
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        schedule.load_state_dict(saved["schedule"])
        order_rng.bit_generator.state = saved["order_rng"]
        restore_dropout_states(model, saved["dropout"], device)
        return ResumePoint(
            epoch=int(saved["epoch"]),
            best_step=int(saved["best_step"]),
            best_value=saved["best_value"],
            best_metrics=dict(saved["best_metrics"]),
            best_state=dict(saved["best_state"]),
        )
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise UnusableResumeState(
            f"the resume state this {model_name} trial saved after epoch "
            f"{saved.get('epoch')} does not fit it ({exc})"
        ) from exc


def dropout_states(model: nn.Module) -> list[dict[str, Any] | None]:
    """The states of the private generators of ``model``'s seeded dropout layers, in module
    order: ``{"device": "cpu" or "cuda", "state": uint8 tensor}``, or None for a layer that
    has drawn no mask yet.

    A CPU generator's state is its Mersenne Twister (5056 bytes), a CUDA generator's its
    Philox seed and offset (16 bytes): a state goes back only into a generator of the same
    device type, hence the device beside it.
    """
    out: list[dict[str, Any] | None] = []
    for layer in _seeded_dropouts(model):
        gen = layer._generator
        out.append(None if gen is None else {"device": gen.device.type, "state": gen.get_state()})
    return out


def restore_dropout_states(model: nn.Module, states: list[Any], device: torch.device | str) -> None:
    """Give ``model``'s seeded dropout layers generators on ``device`` holding the states
    :func:`dropout_states` saved, so their next masks are those an uninterrupted run on that
    device draws.

    A bare tensor (resume files written before the device was saved) is a CPU state. A state
    saved on another device type cannot be carried over: that layer draws from a fresh
    generator seeded as at the start, the run goes on, and a warning says its masks now
    differ from an uninterrupted run's. Raises ValueError when the number of states does not
    match the model's dropout layers.
    """
    device = torch.device(device)
    layers = _seeded_dropouts(model)
    if len(states) != len(layers):
        raise ValueError(
            f"{len(states)} saved dropout states for {len(layers)} dropout layers; the resume "
            "state is not this model's"
        )
    for layer, saved in zip(layers, states, strict=True):
        layer._generator = None
        if saved is None:
            continue
        if isinstance(saved, torch.Tensor):
            kind, state = "cpu", saved
        else:
            kind, state = str(saved["device"]), saved["state"]
        if kind != device.type:
            log.warning(
                "dropout state saved on %s cannot be restored on %s; the layer starts from its "
                "seed again, so masks differ from an uninterrupted run's",
                kind,
                device,
            )
            continue
        gen = torch.Generator(device=device)
        gen.set_state(state)
        layer._generator = gen


def _seeded_dropouts(model: nn.Module) -> list[SeededDropout]:
    return [m for m in model.modules() if isinstance(m, SeededDropout)]
